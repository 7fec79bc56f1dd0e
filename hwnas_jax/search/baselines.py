"""Hand-written search methods: random search, regularized evolution, in-context least squares.

Each is a `interface.Method`: it reads the task's proxy for free and spends its K latency
probes through the handle's `measure`; its answer follows the shared answer rule.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hwnas_jax.benchmark import searchspace
from hwnas_jax.search import interface


def random_search(task: interface.Task, device: interface.ProbeHandle, rng: np.random.Generator) -> int | None:
  """K distinct random architectures; answer = best proxy among those within budget."""
  candidates = rng.choice(searchspace.NUM_ARCHS, size=task.num_probes, replace=False)
  probed = {int(i): device.measure(int(i)) for i in candidates}
  return interface.best_valid(probed, task.proxy, task.budget_ms)


def _mutate(ops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  child = ops.copy()
  edge = rng.integers(searchspace.NUM_EDGES)
  child[edge] = (child[edge] + rng.integers(1, searchspace.NUM_OPS)) % searchspace.NUM_OPS
  return child


def regularized_evolution(task: interface.Task, device: interface.ProbeHandle, rng: np.random.Generator,
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
  return interface.best_valid(probed, task.proxy, task.budget_ms)


def _uniform_cells(op_names: Sequence[str]) -> list[int]:
  return [searchspace.ops_to_index([searchspace.OPS.index(name)] * searchspace.NUM_EDGES)
          for name in op_names]


def least_squares(task: interface.Task, device: interface.ProbeHandle, rng: np.random.Generator,
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
  return interface.best_valid(probed, task.proxy, task.budget_ms)


BASELINES: dict[str, interface.Method] = {
    "random": random_search,
    "rea": regularized_evolution,
    "lsq": least_squares,
}
