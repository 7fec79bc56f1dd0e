r"""How the method does on a device family it has never seen, measured without peeking.

  python -m experiments.family_study --workdir=runs/family_study \
    [--config=experiments/configs/quick.py] [--families=phone,cpu] [--episodes=5] \
    [--probes=3,5,10,20]

For each training family F (GPUs at batch 1, 32, 256; CPUs; phones: `tables.FAMILIES`):
  1. the accuracy proxy is chosen by `proxy_choice.RULE` on the other families' training
     devices only;
  2. the synthetic-device prior is fitted on those devices only (`config.held_out_family`);
  3. the config (quick.py by default) is meta-trained into WORKDIR/F, resumably;
  4. every method is evaluated on F's training devices (PROTOCOL.md's cells: 3 datasets x
     q in {10, 25, 50}, at each K of --probes, config.num_probes by default): the
     controller, its untrained start, `lsq`, the proxy oracle and the oracle.
Nothing is chosen on F and no test accuracy enters steps 1-3. Each family's results are
written as they finish (WORKDIR/F/results.json) and reused by a rerun; the table per family
and per device and a plot end the run (WORKDIR/family_study.{json,png}; one table, and a
plot family_study_k<K>.png, for each further K), with the family score of each K: the
controller's mean over the held-out families, families weighted alike (what the rules of
BUILD_NOTES compare).
"""

from __future__ import annotations

import copy
import json
import os

from absl import flags
from ml_collections import config_flags
import numpy as np

from experiments import cli
from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import progress
from hwnas_jax.benchmark import tables
from hwnas_jax.metatrain import train
from hwnas_jax.search import plots
from hwnas_jax.search import protocol
from hwnas_jax.search import proxy_choice
from hwnas_jax.search import registry

FLAGS = flags.FLAGS
METHODS = ("controller", "untrained_controller", "lsq", "proxy_oracle", "oracle")
PERCENTILES = (10.0, 25.0, 50.0)
TRAINING_FAMILIES = tuple(f for f in tables.FAMILIES if f != "other")


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """Flags of the command; defined only when run as a program, so the module imports
  cleanly (tests define them on a FlagValues of their own)."""
  config_flags.DEFINE_config_file("config", "experiments/configs/quick.py",
                                  "Meta-training configuration of every held-out run.",
                                  flag_values=fv)
  flags.DEFINE_string("workdir", "runs/family_study", "One meta-training run per family.",
                      flag_values=fv)
  flags.DEFINE_string("data_dir", None, "Benchmark bundle (default: $HWNAS_DATA_DIR).",
                      flag_values=fv)
  flags.DEFINE_list("families", list(TRAINING_FAMILIES), "Families to hold out, one at a time.",
                    flag_values=fv)
  flags.DEFINE_list("methods", list(METHODS), "Methods and references evaluated.",
                    flag_values=fv)
  flags.DEFINE_integer("episodes", 5, "Episodes per cell (exact devices: the controller and "
                       "lsq are deterministic, so a few suffice).", flag_values=fv)
  flags.DEFINE_list("probes", [], "Probe budgets K to evaluate at (default: the config's "
                    "num_probes): a controller serves every K, so a study may score them all.",
                    flag_values=fv)
  flags.DEFINE_bool("fresh", False, "Start every family's run afresh.", flag_values=fv)
  flags.DEFINE_bool("isolated", False, "Run each method in a process of its own (the harness "
                    "no method can read; slower). The study's methods are the project's own, "
                    "so by default they run in process.", flag_values=fv)


def held_out_config(config, family: str, proxy: str):
  """`config` with `family` left out of the prior and the proxy chosen without it."""
  config = copy.deepcopy(config)
  config.held_out_family = family
  config.proxy = proxy
  return config


def study_family(benchmark: tables.Benchmark, config, workdir: str, methods: list[str],
                 episodes: int, data_dir: str | None, fresh: bool, isolated: bool,
                 probes: list[int] | None = None) -> dict:
  """One held-out family (`config.held_out_family`, its proxy chosen without it): fit and
  train without it, then evaluate on it at each K of `probes` (default: the config's)."""
  probes = list(probes or [int(config.num_probes)])
  family, proxy = config.held_out_family, config.proxy
  members = tables.family_members(benchmark.training_devices)
  path = os.path.join(workdir, "results.json")
  if not fresh and os.path.isfile(path):
    with open(path) as f:
      saved = json.load(f)
    if (saved.get("config") == config.to_dict() and saved.get("methods") == methods
        and saved.get("probes", [int(config.num_probes)]) == probes):
      print(f"{family}: results of an earlier run reused ({path})")
      return saved
  print(f"{family}: held out ({', '.join(members[family])}); proxy chosen on the other "
        f"families: {proxy}")
  train.train_and_evaluate(config, workdir, data_dir, fresh=fresh)
  target = benchmark.select_devices(members[family])
  made = {name: registry.make_methods(name, workdir, proxy) for name in methods}
  rows = []
  for num_probes in probes:
    rows += protocol.evaluate(
        target, made, target.devices, target.datasets,
        protocol.percentile_budgets(target, PERCENTILES),
        num_probes, episodes, seed=0, proxy=proxy, isolated=isolated,
        progress=lambda cells, k=num_probes: progress.bar(
            cells, desc=f"evaluate {family}, K = {k}", unit="cell"))["rows"]
  result = dict(family=family, devices=members[family], proxy=proxy, methods=methods,
                probes=probes, config=config.to_dict(), rows=rows)
  with open(path + ".tmp", "w") as f:
    json.dump(result, f, indent=1)
  os.replace(path + ".tmp", path)
  return result


def summary_rows(results: list[dict]) -> list[dict]:
  """One row per (K, family or device, method): mean accuracy and feasible rate over its
  cells."""
  rows = []
  for result in results:
    groups = {result["family"]: result["devices"], **{d: [d] for d in result["devices"]}}
    for num_probes in sorted({r["probes"] for r in result["rows"]}):
      for group, devices in groups.items():
        for method in result["methods"]:
          cells = [r for r in result["rows"] if r["method"] == method
                   and r["device"] in devices and r["probes"] == num_probes]
          rows.append(dict(
              probes=num_probes, family=result["family"], group=group, method=method,
              mean_accuracy=float(np.mean([c["mean_accuracy"] for c in cells])),
              feasible_rate=float(np.mean([c["feasible_rate"] for c in cells])),
              worst_cell_vs_oracle=float(min(
                  c["mean_accuracy"] / c["oracle_accuracy"] for c in cells))))
  return rows


def family_score(rows: list[dict], method: str = "controller") -> dict[int, float]:
  """Per K, `method`'s mean over the held-out families, families weighted alike: the score
  the rules of BUILD_NOTES compare."""
  return {k: float(np.mean([r["mean_accuracy"] for r in rows if r["probes"] == k
                            and r["method"] == method and r["group"] == r["family"]]))
          for k in sorted({r["probes"] for r in rows if r["method"] == method})}


def format_table(rows: list[dict], methods: list[str]) -> str:
  """One table per K (headed "K = k" when there are several)."""
  blocks = []
  width = max(len(m) for m in methods) + 2
  all_probes = sorted({r["probes"] for r in rows})
  for num_probes in all_probes:
    at_k = [r for r in rows if r["probes"] == num_probes]
    groups = list(dict.fromkeys((r["family"], r["group"]) for r in at_k))
    lines = [f"K = {num_probes}"] if len(all_probes) > 1 else []
    lines.append(f"{'held out':<10}{'device':<14}" + "".join(f"{m:>{width}}" for m in methods))
    for family, group in groups:
      cells = {r["method"]: r for r in at_k if r["group"] == group and r["family"] == family}
      label = "(all)" if group == family else group
      lines.append(f"{family:<10}{label:<14}" + "".join(
          f"{cells[m]['mean_accuracy']:>{width}.2f}" for m in methods))
    blocks.append("\n".join(lines))
  return "\n\n".join(blocks)


def main(argv, fv: flags.FlagValues = FLAGS):
  del argv
  config = cli.checked_config(fv.config)
  families = cli.names("--families", fv.families, TRAINING_FAMILIES)
  methods = registry.check_names(fv.methods)
  episodes = cli.whole("--episodes", fv.episodes)
  probes = [int(config.num_probes)]
  if fv.probes:
    values = cli.numbers("--probes", fv.probes, minimum=1, allow_minimum=True)
    probes = [cli.whole("--probes", value) for value in values]
  benchmark = tables.load_benchmark(fv.data_dir)
  members = tables.family_members(benchmark.training_devices)
  missing = [f for f in families if f not in members]
  if missing:
    raise ValueError(f"the bundle has no training device of family {', '.join(missing)}; "
                     f"it has {', '.join(members)}")
  scores = proxy_choice.family_scores(benchmark, aggregate.CANDIDATES,
                                     benchmark.training_devices, PERCENTILES)
  configs = {f: held_out_config(config, f, proxy_choice.pick(aggregate.CANDIDATES, scores, f))
             for f in families}
  for family in families:  # every workdir checked before any work
    cli.checked_workdir(os.path.join(fv.workdir, family), configs[family], fv.fresh)
  results = [study_family(benchmark, configs[f], os.path.join(fv.workdir, f), methods,
                          episodes, fv.data_dir, fv.fresh, fv.isolated, probes)
             for f in families]
  rows = summary_rows(results)
  print(format_table(rows, methods))
  if "controller" in methods:
    print("family score (controller, families alike): " + ", ".join(
        f"K = {k}: {v:.2f}" for k, v in family_score(rows).items()))
  path = os.path.join(fv.workdir, "family_study.json")
  with open(path, "w") as f:
    json.dump(dict(rows=rows, families=results), f, indent=1)
  plotted = []
  for position, num_probes in enumerate(probes):
    name = "family_study.png" if position == 0 else f"family_study_k{num_probes}.png"
    figure = plots.family_bars([r for r in rows if r["probes"] == num_probes], methods)
    figure.savefig(os.path.join(fv.workdir, name), dpi=120)
    plotted.append(name)
  print(f"wrote {path} and {', '.join(plotted)}")


if __name__ == "__main__":
  cli.run(main, define_flags)
