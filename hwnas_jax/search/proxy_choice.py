"""How the default accuracy proxy is chosen: proxy-oracle accuracy per cell, and the rule.

A proxy is judged by its proxy oracle under each budget (the test accuracy of the best-proxy
architecture within budget), not by rank correlation over the space: what counts is the
best among the fast architectures. The rule weighs device families equally, so that eleven
GPUs do not outvote two phones, and refuses any candidate worse than `paper` on a family.
`experiments.proxy_study` applies it to the training devices, `experiments.family_study`
to the training devices of every family but the one held out.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import tables
from hwnas_jax.search import protocol

RULE = (
    "Candidates are the combinations computable on a fresh clone (the bundle's proxies and "
    "the architecture string). The default is the candidate with the highest family-balanced "
    "proxy-oracle accuracy on the training devices (the mean over the training families, "
    "GPUs at batch 1, 32 and 256, CPUs and phones, of each family's mean over its cells: "
    "3 datasets x q in {10, 25, 50}) among those that are not worse than `paper` on any "
    "training family, ties broken by fewer terms. Lab proxies are studied and reported, and "
    "selectable by name, but cannot be the default, since the main job must run on a fresh "
    "clone.")
_TOLERANCE = 1e-9


def proxy_oracle_accuracy(benchmark: tables.Benchmark, names: Sequence[str],
                          devices: Sequence[str], datasets: Sequence[str],
                          percentiles: Sequence[float],
                          scores: Mapping[str, Sequence[np.ndarray]] | None = None) -> np.ndarray:
  """(candidates, devices, datasets, budgets) test accuracy of each cell's proxy oracle;
  `scores`: each dataset's `benchmark.named_proxies(dataset, names)`, if already computed."""
  result = np.empty((len(names), len(devices), len(datasets), len(percentiles)))
  for s, dataset in enumerate(datasets):
    accuracy = benchmark.accuracy(dataset)
    scores_of = scores[dataset] if scores else benchmark.named_proxies(dataset, names)
    scores_of = np.stack(scores_of)
    for d, device in enumerate(devices):
      latency = benchmark.latency(device)
      for b, q in enumerate(percentiles):
        budget_ms = protocol.percentile_budget(latency, q).budget_ms
        result[:, d, s, b] = accuracy[protocol.proxy_oracle(latency, accuracy, scores_of,
                                                            budget_ms)]
  return result


def oracle_accuracy(benchmark: tables.Benchmark, devices: Sequence[str], datasets: Sequence[str],
                    percentiles: Sequence[float]) -> np.ndarray:
  """(devices, datasets, budgets) best test accuracy within budget: the ceiling."""
  result = np.empty((len(devices), len(datasets), len(percentiles)))
  for d, device in enumerate(devices):
    latency = benchmark.latency(device)
    for s, dataset in enumerate(datasets):
      accuracy = benchmark.accuracy(dataset)
      for b, q in enumerate(percentiles):
        budget_ms = protocol.percentile_budget(latency, q).budget_ms
        result[d, s, b] = accuracy[protocol.oracle(latency, accuracy, None, budget_ms)]
  return result


def group_means(accuracy: np.ndarray, devices: Sequence[str],
                groups: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
  """Per group of devices, the mean over its cells (devices x datasets x budgets), per candidate."""
  return {group: accuracy[:, [devices.index(d) for d in members]].mean(axis=(1, 2, 3))
          for group, members in groups.items()}


def balanced(by_family: Mapping[str, np.ndarray]) -> np.ndarray:
  """The mean over families of each family's mean: every family counts once."""
  return np.mean(np.stack(list(by_family.values())), axis=0)


def choose(names: Sequence[str], overall: np.ndarray, by_family: Mapping[str, np.ndarray],
           eligible: Sequence[bool], baseline: str = aggregate.PAPER) -> str:
  """Best `overall` among eligible candidates not worse than `baseline` on any family of
  `by_family`, ties broken by fewer terms, then by the order of `names`."""
  base = names.index(baseline)
  keep = [c for c, name in enumerate(names) if eligible[c] and all(
      scores[c] >= scores[base] - _TOLERANCE for scores in by_family.values())]
  size = [len(aggregate.parse(name, None)[1]) for name in names]
  best = max(keep, key=lambda c: (round(float(overall[c]) / _TOLERANCE), -size[c], -c))
  return names[best]


def fresh_clone(names: Sequence[str]) -> list[bool]:
  """Which candidates a fresh clone computes (the bundle's terms and the architecture's)."""
  return [set(aggregate.parse(n, None)[1]) <= set(aggregate.FRESH_TERMS) for n in names]


def family_scores(benchmark: tables.Benchmark, names: Sequence[str], devices: Sequence[str],
                  percentiles: Sequence[float] = (10, 25, 50)) -> dict[str, np.ndarray]:
  """{family: (candidates,) mean proxy-oracle accuracy over its cells among `devices`}."""
  acc = proxy_oracle_accuracy(benchmark, names, list(devices), list(benchmark.datasets),
                              percentiles)
  return group_means(acc, list(devices), tables.family_members(devices))


def pick(names: Sequence[str], by_family: Mapping[str, np.ndarray], without: str = "") -> str:
  """The rule's pick reading the families of `by_family` only, `without` one left out."""
  kept = {f: v for f, v in by_family.items() if f != without}
  return choose(names, balanced(kept), kept, fresh_clone(names))
