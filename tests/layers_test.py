"""The package reads as its architecture: four layers whose imports only point down, no cycles.

  benchmark (search space, tables, network, proxies)
    <- devices (the device interface, tables, host, synthetic, noise)
      <- metatrain (environment, controllers, PPO, sharding, training, checkpoints)
        <- search (the method interface at its bottom, the registry at its top)

Entry points (`experiments/`) sit above everything and nothing in the package imports them.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hwnas_jax"
LAYERS = ("benchmark", "devices", "metatrain", "search")


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
  """Every module of the project that `path` imports (at any depth in the file)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found.add(node.module)
      found.update(f"{node.module}.{alias.name}" for alias in node.names)
  return {name for name in found if name.split(".")[0] in ("hwnas_jax", "experiments")}


def _graph() -> dict[str, set[str]]:
  modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
  return {name: {m for m in _imports(path) if m in modules and m != name}
          for name, path in modules.items()}


def _layer(module: str) -> int:
  parts = module.split(".")
  return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else -1


def test_every_module_lives_in_a_layer():
  loose = [m for m in _graph() if _layer(m) < 0 and m != "hwnas_jax"]
  assert not loose, f"modules outside the four layers: {loose}"


def test_imports_point_down():
  upward = [f"{m} -> {t}" for m, targets in _graph().items() for t in targets
            if _layer(t) > _layer(m)]
  assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycles():
  graph = _graph()
  state: dict[str, int] = {}
  cycles = []

  def visit(node, path):
    state[node] = 1
    for target in sorted(graph[node]):
      if state.get(target) == 1:
        cycles.append(" -> ".join(path[path.index(target):] + [target]))
      elif target not in state:
        visit(target, path + [target])
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])
  assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_package_never_imports_an_entry_point():
  offenders = [f"{p.relative_to(ROOT)} -> {m}" for p in PACKAGE.rglob("*.py")
               for m in _imports(p) if m.startswith("experiments")]
  assert not offenders, offenders


@pytest.mark.parametrize("bottom,top", [("hwnas_jax.search.interface", "hwnas_jax.search.registry")])
def test_the_method_interface_is_the_bottom_of_search(bottom, top):
  graph = _graph()
  search_imports = {t for t in graph[bottom] if t.startswith("hwnas_jax.search")}
  assert not search_imports, f"{bottom} imports {search_imports}"
  below_top = [m for m, targets in graph.items() if top in targets
               and m not in ("hwnas_jax.search.session",)]
  assert not below_top, f"{below_top} import the registry, which must stay on top"
