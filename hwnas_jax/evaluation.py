"""The evaluation protocol of PROTOCOL.md: tasks, episodes, scores and the results table.

A cell is (method, device, dataset, budget); each of its E episodes gets its own seed,
shared by every method so they face the same draws. A method sees the device only through
a `ProbeBudget`; its answer scores the test accuracy if that record shows it measured
within budget, else 0.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from hwnas_jax import search
from hwnas_jax.bench import Benchmark
from hwnas_jax.devices import ProbeBudget, TableDevice

ROW_KEYS = ("method", "device", "dataset", "budget_percentile", "budget_ms", "probes",
            "episodes", "mean_accuracy", "feasible_rate", "oracle_accuracy",
            "proxy_oracle_accuracy", "mean_regret")
SUMMARY_KEYS = ("mean_accuracy", "feasible_rate", "mean_regret")


@dataclasses.dataclass(frozen=True)
class Budget:
  """A latency budget; `percentile` is None when it was given in ms."""
  budget_ms: float
  percentile: float | None = None


def percentile_budget(latency_ms: np.ndarray, q: float) -> Budget:
  """The q-th percentile (numpy's linear default) of the device's latencies."""
  return Budget(float(np.nanpercentile(latency_ms, q)), float(q))


def check_budget(device: str, latency_ms: np.ndarray, budget: Budget) -> None:
  fastest = float(np.nanmin(latency_ms))
  if budget.budget_ms < fastest:
    raise ValueError(f"budget {budget.budget_ms:.4g} ms on {device!r} is below every "
                     f"architecture (the fastest takes {fastest:.4g} ms)")


def episode_rng(seed: int, device: str, dataset: str, budget: Budget,
                episode: int) -> np.random.Generator:
  """Independent of the method, so all methods face the same episode draws."""
  cell = [zlib.crc32(device.encode()), zlib.crc32(dataset.encode()),
          zlib.crc32(repr(budget).encode())]
  return np.random.default_rng([seed, *cell, episode])


def run_episode(method: search.Method, task: search.Task, device: TableDevice | object,
                accuracy: np.ndarray, rng: np.random.Generator) -> tuple[float, bool]:
  """One episode: (score, valid). The probe limit is the harness's, not the method's."""
  budgeted = ProbeBudget(device, task.num_probes)
  answer = method(task, budgeted, rng)
  valid = budgeted.is_valid(answer, task.budget_ms)
  return (float(accuracy[answer]) if valid else 0.0), valid


def evaluate_cell(method_name: str, method: search.Method | None, benchmark: Benchmark,
                  device: str, dataset: str, budget: Budget, num_probes: int,
                  num_episodes: int, seed: int) -> dict:
  """One row of the results table. `method` None means a reference of search.REFERENCES."""
  latency_ms = benchmark.latency(device)
  accuracy, proxy = benchmark.accuracy(dataset), benchmark.proxy(dataset)
  check_budget(device, latency_ms, budget)
  oracle_accuracy = float(accuracy[search.oracle(latency_ms, accuracy, proxy, budget.budget_ms)])
  proxy_oracle_accuracy = float(
      accuracy[search.proxy_oracle(latency_ms, accuracy, proxy, budget.budget_ms)])
  if method is None:
    reference = search.REFERENCES[method_name](latency_ms, accuracy, proxy, budget.budget_ms)
    scores, valid = np.full(num_episodes, accuracy[reference]), np.ones(num_episodes, bool)
  else:
    task = search.Task(dataset, budget.budget_ms, num_probes, proxy)
    table = TableDevice(device, latency_ms)
    results = [run_episode(method, task, table, accuracy,
                           episode_rng(seed, device, dataset, budget, e))
               for e in range(num_episodes)]
    scores, valid = map(np.array, zip(*results))
  mean_accuracy = float(np.mean(scores))
  return {
      "method": method_name, "device": device, "dataset": dataset,
      "budget_percentile": budget.percentile, "budget_ms": budget.budget_ms,
      "probes": num_probes, "episodes": num_episodes,
      "mean_accuracy": mean_accuracy, "std_accuracy": float(np.std(scores)),
      "feasible_rate": float(np.mean(valid)),
      "oracle_accuracy": oracle_accuracy, "proxy_oracle_accuracy": proxy_oracle_accuracy,
      "mean_regret": oracle_accuracy - mean_accuracy,
  }


def summarize(rows: Iterable[Mapping]) -> dict:
  """Per method, the means of mean_accuracy, feasible_rate and mean_regret over its cells."""
  by_method: dict[str, list[Mapping]] = {}
  for row in rows:
    by_method.setdefault(row["method"], []).append(row)
  return {name: {**{key: float(np.mean([r[key] for r in cells])) for key in SUMMARY_KEYS},
                 "cells": len(cells)}
          for name, cells in by_method.items()}


def format_table(rows: Sequence[Mapping], summary: Mapping) -> str:
  """Rows grouped by device/dataset/budget, then the per-method summary."""
  header = (f"{'method':<17}{'device':<15}{'dataset':<16}{'q':>5}{'B (ms)':>9}"
            f"{'acc':>8}{'feas':>6}{'oracle':>8}{'p-orac':>8}{'regret':>8}")
  lines = [header, "-" * len(header)]
  for r in rows:
    q = "-" if r["budget_percentile"] is None else f"{r['budget_percentile']:g}"
    lines.append(f"{r['method']:<17}{r['device']:<15}{r['dataset']:<16}{q:>5}"
                 f"{r['budget_ms']:>9.3f}{r['mean_accuracy']:>8.2f}{r['feasible_rate']:>6.2f}"
                 f"{r['oracle_accuracy']:>8.2f}{r['proxy_oracle_accuracy']:>8.2f}"
                 f"{r['mean_regret']:>8.2f}")
  lines += ["", f"{'method':<17}{'cells':>6}{'mean acc':>10}{'feasible':>10}{'regret':>8}",
            "-" * 51]
  for name, s in summary.items():
    lines.append(f"{name:<17}{s['cells']:>6}{s['mean_accuracy']:>10.2f}"
                 f"{s['feasible_rate']:>10.3f}{s['mean_regret']:>8.2f}")
  return "\n".join(lines)


def evaluate(benchmark: Benchmark, methods: Mapping[str, search.Method | None],
             devices: Sequence[str], datasets: Sequence[str],
             budgets: Callable[[str], Sequence[Budget]], num_probes: int, num_episodes: int,
             seed: int, progress: Callable[[Iterable], Iterable] = iter) -> dict:
  """Every cell of the grid; `budgets(device)` gives that device's budgets."""
  cells = [(name, device, dataset, budget) for device in devices for dataset in datasets
           for budget in budgets(device) for name in methods]
  rows = [evaluate_cell(name, methods[name], benchmark, device, dataset, budget, num_probes,
                        num_episodes, seed)
          for name, device, dataset, budget in progress(cells)]
  return {"rows": rows, "summary": summarize(rows)}
