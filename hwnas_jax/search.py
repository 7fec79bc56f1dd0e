"""Search methods behind one interface, and the references they are scored against.

A method is `method(task, device, rng) -> index | None`: it may look at the task's proxy
of any architecture for free, and spends latency probes through `device.measure`. The
answer it returns is only worth something if the harness saw it measured within budget
(`ProbeBudget.is_valid`); `None` means "no architecture found" and scores 0.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from hwnas_jax import searchspace
from hwnas_jax.devices import Device


@dataclasses.dataclass(frozen=True)
class Task:
  """What a method is told: the budget in ms (never its percentile), K, and the proxy."""
  dataset: str
  budget_ms: float
  num_probes: int
  proxy: np.ndarray  # (15625,) accuracy proxy, free of charge


Method = Callable[[Task, Device, np.random.Generator], "int | None"]


def best_valid(probed: dict[int, float], proxy: np.ndarray, budget_ms: float) -> int | None:
  """The answer rule shared by every method: best proxy among the measured-feasible."""
  valid = [i for i, latency_ms in probed.items() if latency_ms <= budget_ms]
  return max(valid, key=lambda i: proxy[i]) if valid else None


def random_search(task: Task, device: Device, rng: np.random.Generator) -> int | None:
  """K distinct random architectures; answer = best proxy among those within budget."""
  candidates = rng.choice(searchspace.NUM_ARCHS, size=task.num_probes, replace=False)
  probed = {int(i): device.measure(int(i)) for i in candidates}
  return best_valid(probed, task.proxy, task.budget_ms)


def _mutate(ops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  child = ops.copy()
  edge = rng.integers(searchspace.NUM_EDGES)
  child[edge] = (child[edge] + rng.integers(1, searchspace.NUM_OPS)) % searchspace.NUM_OPS
  return child


def regularized_evolution(task: Task, device: Device, rng: np.random.Generator,
                          population_size: int = 4, tournament_size: int = 2) -> int | None:
  """REA (Real et al. 2019) spending one probe per child; fitness = proxy within budget.

  Constraint domination (Deb 2000): a feasible member beats an infeasible one, and of two
  infeasible members the faster wins, so the search walks back under the budget.
  """
  ops = searchspace.arch_ops()
  probed: dict[int, float] = {}

  def fitness(i):
    feasible = probed[i] <= task.budget_ms
    return (feasible, task.proxy[i] if feasible else -probed[i])

  population = []
  for i in rng.choice(searchspace.NUM_ARCHS, size=min(population_size, task.num_probes),
                      replace=False):
    probed[int(i)] = device.measure(int(i))
    population.append(int(i))
  while len(probed) < task.num_probes:
    contenders = rng.choice(len(population), size=min(tournament_size, len(population)),
                            replace=False)
    parent = max((population[c] for c in contenders), key=fitness)
    child = searchspace.ops_to_index(_mutate(ops[parent], rng))
    while child in probed:
      child = searchspace.ops_to_index(_mutate(ops[child], rng))
    probed[child] = device.measure(child)
    population = population[1:] + [child]
  return best_valid(probed, task.proxy, task.budget_ms)


def _uniform_cells(op_names: Sequence[str]) -> list[int]:
  return [searchspace.ops_to_index([searchspace.OPS.index(name)] * searchspace.NUM_EDGES)
          for name in op_names]


def least_squares(task: Task, device: Device, rng: np.random.Generator,
                  margin: float = 0.0,
                  first_probes: Sequence[str] = ("nor_conv_3x3", "nor_conv_1x1", "skip_connect"),
                  ) -> int | None:
  """In-context least squares: latency ~ linear in the operation counts.

  Probe a few uniform cells, then repeatedly fit the probes so far and probe the
  best-proxy unprobed architecture whose predicted latency times (1 + margin) fits the
  budget (the fastest predicted one if none does). The margin default was chosen on the
  13 training devices (0.0: 64.4 % there vs 63.5 % at 0.05), never on validation devices.
  """
  del rng  # deterministic
  features = searchspace.op_counts().astype(np.float64)
  probed = {}
  for i in _uniform_cells(first_probes)[:task.num_probes]:
    probed[i] = device.measure(i)
  while len(probed) < task.num_probes:
    index = np.array([i for i, v in probed.items() if np.isfinite(v)], dtype=np.int64)
    weights, *_ = np.linalg.lstsq(features[index],
                                  np.array([probed[i] for i in index]), rcond=None)
    predicted_ms = features @ weights
    open_ = np.ones(searchspace.NUM_ARCHS, bool)
    open_[list(probed)] = False
    fits = open_ & (predicted_ms * (1 + margin) <= task.budget_ms)
    if fits.any():
      choice = int(np.flatnonzero(fits)[np.argmax(task.proxy[fits])])
    else:
      choice = int(np.flatnonzero(open_)[np.argmin(predicted_ms[open_])])
    probed[choice] = device.measure(choice)
  return best_valid(probed, task.proxy, task.budget_ms)


METHODS: dict[str, Method] = {
    "random": random_search,
    "rea": regularized_evolution,
    "lsq": least_squares,
}


# --- references: they read the whole latency table, which no method may do ------------

def oracle(latency_ms: np.ndarray, accuracy: np.ndarray, proxy: np.ndarray,
           budget_ms: float) -> int:
  """The most accurate architecture within budget (the physical limit)."""
  del proxy
  return _argmax_within(accuracy, latency_ms, budget_ms)


def proxy_oracle(latency_ms: np.ndarray, accuracy: np.ndarray, proxy: np.ndarray,
                 budget_ms: float) -> int:
  """The best-proxy architecture within budget (the limit of ranking by this proxy)."""
  del accuracy
  return _argmax_within(proxy, latency_ms, budget_ms)


def _argmax_within(score: np.ndarray, latency_ms: np.ndarray, budget_ms: float) -> int:
  feasible = np.flatnonzero(latency_ms <= budget_ms)  # NaN (cannot run) is never feasible
  if not feasible.size:
    raise ValueError(f"no architecture has latency <= {budget_ms:.4g} ms "
                     f"(fastest: {np.nanmin(latency_ms):.4g} ms)")
  return int(feasible[np.argmax(score[feasible])])


REFERENCES = {"oracle": oracle, "proxy_oracle": proxy_oracle}


def make_method(name: str, checkpoint: str | None = None) -> Method | None:
  """A method by name; None for a reference (scored from the table by the harness)."""
  if name in REFERENCES:
    return None
  if name in METHODS:
    return METHODS[name]
  if name in ("controller", "paper_controller"):
    if not checkpoint:
      raise ValueError(f"method {name!r} needs --checkpoint (the --workdir of a meta_train run)")
    from hwnas_jax import deploy  # pylint: disable=import-outside-toplevel
    return deploy.load_method(checkpoint, name)
  known = sorted([*METHODS, *REFERENCES, "controller", "paper_controller"])
  raise ValueError(f"unknown method {name!r}; known: {', '.join(known)}")
