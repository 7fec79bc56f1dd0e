"""Hand-written search methods: random search, regularized evolution, in-context least squares.

Each is a `interface.Method`: it reads the task's proxy for free and spends its K latency
probes through the handle's `measure`; its answer follows the shared answer rule.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.stats

from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices import noise
from hwnas_jax.search import interface


def random_search(task: interface.Task, device: interface.ProbeHandle, rng: np.random.Generator) -> int | None:
  """K distinct random architectures (the whole space if K is larger); answer = best proxy
  among those within budget."""
  candidates = rng.choice(searchspace.NUM_ARCHS, size=min(task.num_probes, searchspace.NUM_ARCHS),
                          replace=False)
  probed = {int(i): device.measure(int(i)) for i in candidates}
  return interface.best_valid(probed, task.proxy, task.budget_ms)


def _mutate(index: int, rng: np.random.Generator) -> int:
  """One edge's operation changed to another, both drawn uniformly."""
  edge = rng.integers(searchspace.NUM_EDGES)
  return int(searchspace.mutation_table()[index, edge, rng.integers(1, searchspace.NUM_OPS) - 1])


def regularized_evolution(task: interface.Task, device: interface.ProbeHandle, rng: np.random.Generator,
                          population_size: int = 4, tournament_size: int = 2,
                          max_retries: int = 1000) -> int | None:
  """REA (Real et al. 2019) spending one probe per child; fitness = proxy within budget.

  Constraint domination (Deb 2000): a feasible member beats an infeasible one, and of two
  infeasible members the faster wins, so the search walks back under the budget. Children
  are never probed twice: a child already probed mutates again, and after `max_retries`
  such mutations an unprobed architecture is drawn at random; the search stops when K
  probes are spent or the whole space is probed (K > 15,625 returns, not loops).
  """
  probed: dict[int, float] = {}

  def fitness(i):
    feasible = probed[i] <= task.budget_ms
    return (feasible, task.proxy[i] if feasible else -probed[i])

  population = []
  for i in rng.choice(searchspace.NUM_ARCHS, size=min(population_size, task.num_probes),
                      replace=False):
    probed[int(i)] = device.measure(int(i))
    population.append(int(i))
  while len(probed) < min(task.num_probes, searchspace.NUM_ARCHS):
    contenders = rng.choice(len(population), size=min(tournament_size, len(population)),
                            replace=False)
    parent = max((population[c] for c in contenders), key=fitness)
    child = _mutate(parent, rng)
    for _ in range(max_retries):
      if child not in probed:
        break
      child = _mutate(child, rng)
    else:
      if child in probed:
        unprobed = np.setdiff1d(np.arange(searchspace.NUM_ARCHS), list(probed))
        child = int(rng.choice(unprobed))
    probed[child] = device.measure(child)
    population = population[1:] + [child]
  return interface.best_valid(probed, task.proxy, task.budget_ms)


def _uniform_cells(op_names: Sequence[str]) -> list[int]:
  return [searchspace.ops_to_index([searchspace.OPS.index(name)] * searchspace.NUM_EDGES)
          for name in op_names]


# Predicted latencies are floored at this share of the budget (a fraction of a millisecond on
# any device): a floor in ms would be a unit, and latencies may come in any unit.
_MIN_PREDICTED = 1e-6


def _fit_latency(features: np.ndarray, probed: np.ndarray, log_ms: np.ndarray,
                 misfit_floor: float, misfit_prior: float):
  """Least squares of latency (ms) on op counts over the probed architectures' geometric-mean
  latencies: (weights, log-scale misfit from the residuals, or `misfit_prior` with none)."""
  finite = log_ms < np.log(1e29)  # a probe that could not run says nothing of how slow
  x, y = features[probed[finite]], np.exp(log_ms[finite])
  weights, *_ = np.linalg.lstsq(x, y, rcond=None)
  dof = len(y) - np.linalg.matrix_rank(x)
  if dof <= 0:
    return weights, misfit_prior
  residual = np.log(np.maximum(x @ weights, _MIN_PREDICTED * y.min()) / y)
  return weights, max(float(np.sqrt(np.sum(residual**2) / dof)), misfit_floor)


LSQ_FIRST_PROBES = ("nor_conv_3x3", "nor_conv_1x1", "skip_connect")


def least_squares_step(task: interface.Task, indices: Sequence[int], latencies: Sequence[float],
                       max_probes_per_arch: int = noise.MAX_PROBES_PER_ARCH,
                       min_confidence: float = noise.MIN_CONFIDENCE,
                       misfit_floor: float = 0.03, misfit_prior: float = 0.1,
                       first_probes: Sequence[str] = LSQ_FIRST_PROBES) -> int:
  """`least_squares`'s next probe after the probes so far (indices and latencies in ms).

  A pure function of the record, so a caller can drive lsq step by step or hand it the
  probes another method has left.
  """
  uniform = [i for i in _uniform_cells(first_probes) if i not in indices]
  if uniform and len(indices) < len(first_probes):
    return uniform[0]
  # The confirmed answer (else the most confident probe), not the fallback's likely one: a
  # likely answer is what lsq re-measures to confirm, so its probes never depend on
  # `noise.FALLBACK_CONFIDENCE`, only its final answer does.
  best, stats = noise.answer(list(indices), list(latencies), task.budget_ms, task.proxy,
                             min_confidence, task.noise_prior,
                             fallback_confidence=min_confidence)
  unconfirmed = [
      indices[k] for k in range(len(indices))
      if stats.first[k] and stats.any_within[k] and stats.confidence[k] < min_confidence
      and stats.count[k] < max_probes_per_arch
      and (best is None or task.proxy[indices[k]] > task.proxy[best])]
  if unconfirmed:
    return max(unconfirmed, key=lambda i: task.proxy[i])
  features = searchspace.op_counts().astype(np.float64)
  probed = np.unique(np.array(indices, np.int64))
  log_ms = np.array([np.mean(np.log(np.minimum(
      [v for i, v in zip(indices, latencies) if i == j], 1e30))) for j in probed])
  weights, misfit = _fit_latency(features, probed, log_ms, misfit_floor, misfit_prior)
  predicted_ms = np.maximum(features @ weights, _MIN_PREDICTED * task.budget_ms)
  sigma = float(stats.sigma_upper)
  z_confirm = float(scipy.stats.norm.ppf(min_confidence))
  limit = np.log(task.budget_ms) - z_confirm * sigma / np.sqrt(2.0)
  p_confirm = scipy.stats.norm.cdf((limit - np.log(predicted_ms))
                                   / np.sqrt(misfit**2 + sigma**2 / 2.0))
  floor = task.proxy.min() if best is None else task.proxy[best]
  value = np.maximum(task.proxy - floor, 1e-9 * (1 + task.proxy - task.proxy.min())) * p_confirm
  value[probed] = -np.inf
  return int(np.argmax(value))


def least_squares(task: interface.Task, device: interface.ProbeHandle, rng: np.random.Generator,
                  **settings) -> int | None:
  """In-context least squares that knows probes are noisy.

  Latency is fitted as linear in the operation counts (one row per probed architecture,
  its geometric-mean probe). After a few uniform cells, each step either confirms or
  explores (`least_squares_step`):
  * confirm: re-measure the best-proxy architecture measured within budget that is better
    than the confirmed answer but not yet confirmed itself (at most `max_probes_per_arch`
    probes each); a repeat also tells the noise level (`noise.probe_stats`);
  * explore: probe the unprobed architecture with the largest expected gain, its proxy gain
    over the confirmed answer times the probability that its true latency is low enough to
    be confirmed by two probes (the fit's misfit, from its residuals, and the noise).
  The answer is `noise.answer`'s: the best confirmed architecture, else the best likely one
  (`noise.FALLBACK_CONFIDENCE`), else the most confident.
  On an exact device one or two repeats show that there is no noise and the margins vanish;
  told the noise (`task.noise_prior`), it needs no repeat to know it.
  Defaults chosen on the 13 training devices of version 0.2.0 only (see BUILD_NOTES), never on
  validation.
  """
  del rng  # deterministic
  indices: list[int] = []
  latencies: list[float] = []
  while len(indices) < task.num_probes:
    index = least_squares_step(task, indices, latencies, **settings)
    indices.append(index)
    latencies.append(device.measure(index))
  return noise.answer(indices, latencies, task.budget_ms, task.proxy,
                      settings.get("min_confidence", noise.MIN_CONFIDENCE), task.noise_prior)[0]


BASELINES: dict[str, interface.Method] = {
    "random": random_search,
    "rea": regularized_evolution,
    "lsq": least_squares,
}
