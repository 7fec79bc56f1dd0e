"""The evaluation protocol of PROTOCOL.md: tasks, episodes, scores and the results table.

A cell is (method, device, dataset, budget); each of its E episodes gets its own seed,
shared by every method so they face the same draws (the noisy device's too). A method sees
the device only through the handle of a `ProbeBudget`; its answer scores the test accuracy
if that record shows it measured within budget and its true latency is within budget,
else 0. The references (oracle, proxy oracle) read the table, which no method may.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import zlib
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import checks
from hwnas_jax.benchmark import tables
from hwnas_jax.benchmark.tables import Benchmark
from hwnas_jax.devices.noise import checked_noise_prior
from hwnas_jax.devices.table import NoisyTableDevice, TableDevice
from hwnas_jax.search import interface
from hwnas_jax.search import isolation
from hwnas_jax.search import resume

ROW_KEYS = ("method", "device", "dataset", "budget_percentile", "budget_ms", "probes",
            "episodes", "mean_accuracy", "feasible_rate", "oracle_accuracy",
            "proxy_oracle_accuracy", "mean_regret")
SUMMARY_KEYS = ("mean_accuracy", "feasible_rate", "mean_regret")
MAX_NOISE = 5.0  # probe noise sigma: the same bound as experiments.sweep's


# --- references: they read the whole latency table, which no method may do ------------

def oracle(latency_ms: np.ndarray, accuracy: np.ndarray, proxy: np.ndarray,
           budget_ms: float) -> int:
  """The most accurate architecture within budget (the physical limit)."""
  del proxy
  return _argmax_within(accuracy, latency_ms, budget_ms)


def proxy_oracle(latency_ms: np.ndarray, accuracy: np.ndarray, proxy: np.ndarray,
                 budget_ms: float) -> int | np.ndarray:
  """The best-proxy architecture within budget (the limit of ranking by this proxy); with
  proxies (C, N), one per row."""
  del accuracy
  return _argmax_within(proxy, latency_ms, budget_ms)


def _argmax_within(score: np.ndarray, latency_ms: np.ndarray,
                   budget_ms: float) -> int | np.ndarray:
  """The best-`score` architecture within budget, the first on ties; `score` (N,) gives an
  int, (C, N) one index per row (a study's C proxies at once)."""
  feasible = np.flatnonzero(latency_ms <= budget_ms)  # NaN (cannot run) is never feasible
  if not feasible.size:
    raise ValueError(f"no architecture has latency <= {budget_ms:.4g} ms "
                     f"(fastest: {np.nanmin(latency_ms):.4g} ms)")
  best = feasible[np.argmax(np.asarray(score)[..., feasible], axis=-1)]
  return int(best) if np.ndim(best) == 0 else best


REFERENCES = {"oracle": oracle, "proxy_oracle": proxy_oracle}


@dataclasses.dataclass(frozen=True)
class Budget:
  """A latency budget; `percentile` is None when it was given in ms."""
  budget_ms: float
  percentile: float | None = None

  def __post_init__(self):
    object.__setattr__(self, "budget_ms", interface.checked_budget_ms(self.budget_ms))
    if self.percentile is not None:
      object.__setattr__(self, "percentile", checked_percentile(self.percentile))


def checked_percentile(q) -> float:
  """A budget percentile q in (0, 100]: at q = 0 only the fastest architecture fits, and
  numpy refuses anything outside [0, 100]."""
  if (isinstance(q, (bool, np.bool_)) or not isinstance(q, numbers.Real)
      or not 0 < q <= 100):
    raise ValueError(f"a budget percentile must be a number in (0, 100], got {q!r}")
  return float(q)


def percentile_budget(latency_ms: np.ndarray, q: float) -> Budget:
  """The q-th percentile (numpy's linear default) of the device's latencies."""
  q = checked_percentile(q)
  return Budget(float(np.nanpercentile(latency_ms, q)), q)


def percentile_budgets(benchmark: Benchmark, percentiles: Sequence[float] = (10, 25, 50)
                       ) -> Callable[[str], list[Budget]]:
  """`budgets(device)` for `evaluate`: PROTOCOL.md's budgets, percentiles of each device."""
  return lambda device: [percentile_budget(benchmark.latency(device), q) for q in percentiles]


def check_budget(device: str, latency_ms: np.ndarray, budget: Budget) -> None:
  fastest = float(np.nanmin(latency_ms))
  if budget.budget_ms < fastest:
    raise ValueError(f"budget {budget.budget_ms:.4g} ms on {device!r} is below every "
                     f"architecture (the fastest takes {fastest:.4g} ms)")


# `noise_prior=KNOWN_NOISE`: each method is told the simulated noise sigma of the cell.
KNOWN_NOISE = "known"


def task_noise_prior(noise_prior, noise: float):
  """What a cell's task says of the noise: None (nothing: the headline protocol), the
  cell's own sigma for KNOWN_NOISE, else the given sigma or range, checked."""
  if isinstance(noise_prior, str) and noise_prior.strip() == KNOWN_NOISE:
    return (float(noise), float(noise))
  return checked_noise_prior(noise_prior)


def check_settings(num_probes, num_episodes, seed, noise) -> None:
  """K and E whole numbers >= 1, the seed a whole number >= 0, the noise sigma finite and
  >= 0; checked before any cell runs (E = 0 would write NaN scores)."""
  interface.checked_num_probes(num_probes)
  if (isinstance(num_episodes, (bool, np.bool_)) or not isinstance(num_episodes, numbers.Integral)
      or num_episodes < 1):
    raise ValueError(f"episodes must be a whole number >= 1, got {num_episodes!r}")
  if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or seed < 0:
    raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
  if (isinstance(noise, (bool, np.bool_)) or not isinstance(noise, numbers.Real)
      or not math.isfinite(noise) or not 0 <= noise < MAX_NOISE):
    raise ValueError(f"noise sigma must be a number in [0, {MAX_NOISE:g}), got {noise!r} (at "
                     f"sigma {MAX_NOISE:g} a probe is off by a factor of e^{MAX_NOISE:g} = "
                     f"{math.exp(MAX_NOISE):.0f} at one standard deviation: no method can "
                     "tell architectures apart)")


def grid_cells(benchmark: Benchmark, methods: Mapping, devices: Sequence[str],
               datasets: Sequence[str], budgets: Callable[[str], Sequence[Budget]],
               proxy: str) -> list[tuple]:
  """The cells (method, device, dataset, budget) of a grid, everything that can fail checked
  for every cell at once, before any cell runs: each method, device, dataset and budget
  known and named once, the proxy computable on every dataset, and no budget below every
  architecture of its device (all such cells named in one error)."""
  for what, names in (("methods", methods), ("devices", devices), ("datasets", datasets)):
    checks.names(what, names)
  for device in devices:
    benchmark.latency(device)  # KeyError naming the known devices
  for dataset in datasets:
    benchmark.accuracy(dataset)  # KeyError naming the known datasets
    aggregate.parse(proxy, benchmark.proxy_terms(dataset))
  below, per_device = [], {}
  for device in devices:
    given = per_device[device] = list(budgets(device))
    if not given or len(set(given)) < len(given):
      shown = ", ".join(f"{b.budget_ms:.4g} ms" + ("" if b.percentile is None else
                                                    f" (q={b.percentile:g})") for b in given)
      raise ValueError(f"device {device!r} needs one or more budgets, each given once; got "
                       f"{shown or 'none'}")
    for budget in per_device[device]:
      try:
        check_budget(device, benchmark.latency(device), budget)
      except ValueError as error:
        below.append(str(error))
  if below:
    raise ValueError(f"{len(below)} budget(s) below every architecture, nothing evaluated: "
                     + "; ".join(below))
  return [(name, device, dataset, budget) for device in devices for dataset in datasets
          for budget in per_device[device] for name in methods]


def episode_rng(seed: int, device: str, dataset: str, budget: Budget, episode: int,
                stream: str = "method") -> np.random.Generator:
  """Independent of the method, so all methods face the same episode draws.

  `stream` separates the method's own randomness ("method") from the noisy device's draws
  ("noise"): whatever a method draws, the device's noise stream stays the same.
  """
  cell = [zlib.crc32(device.encode()), zlib.crc32(dataset.encode()),
          zlib.crc32(repr(budget).encode())]
  extra = [] if stream == "method" else [zlib.crc32(stream.encode())]
  return np.random.default_rng([seed, *cell, episode, *extra])


def run_episode(method: interface.Method, task: interface.Task, device: TableDevice,
                accuracy: np.ndarray, rng: np.random.Generator,
                runner: isolation.Runner | None = None,
                name: str = "method") -> tuple[float, bool]:
  """One episode: (score, valid). The probe limit is the harness's, not the method's.

  Valid: the answer was measured within budget during the episode (the probe record) and
  its true latency, the table's, is within budget too (a lucky draw on a noisy device does
  not count), both judged against the harness's own task. A method that went past K
  probes, even one that caught the error, is an error. `runner` runs the method (in its
  own process when isolated); without one it runs in-process.
  """
  if getattr(method, "reads_table_range", False):
    task = dataclasses.replace(task, latency_range_ms=(float(np.nanmin(device.latency_ms)),
                                                       float(np.nanmax(device.latency_ms))))
  budget_ms, num_probes = task.budget_ms, task.num_probes  # the harness's, whatever happens
  budgeted = interface.ProbeBudget(device, num_probes)
  answer = (runner or isolation.Runner(isolated=False)).run(method, task, budgeted, rng, name)
  if budgeted.exceeded:
    raise interface.ProbeLimitExceeded(
        f"the method asked for more than {num_probes} probes on {device.name!r} "
        "(and went on after being refused)")
  return answer_score(budgeted, device, accuracy, interface.checked_answer(answer), budget_ms)


def answer_score(budgeted: interface.ProbeBudget, device: TableDevice, accuracy: np.ndarray,
                 answer: int | None, budget_ms: float) -> tuple[float, bool]:
  """(score, valid) of an episode's answer: `run_episode`'s rule, also for an answer given
  after the episode to its probe record."""
  valid = (budgeted.is_valid(answer, budget_ms)
           and device.true_latency_ms(answer) <= budget_ms)
  return (float(accuracy[answer]) if valid else 0.0), valid


def evaluate_cell(method_name: str, methods: Sequence[interface.Method] | None,
                  benchmark: Benchmark, device: str, dataset: str, budget: Budget,
                  num_probes: int, num_episodes: int, seed: int, noise: float = 0.0,
                  proxy: str = aggregate.DEFAULT_PROXY, isolated: bool = True,
                  episode_progress: Callable[[Iterable], Iterable] = iter,
                  noise_prior=None) -> dict:
  """One row of the results table; `noise_prior` what its task says of the noise
  (`task_noise_prior`).

  `methods` holds one method per trained seed (one for a hand-written baseline); None
  means a reference of REFERENCES. With several seeds the row's numbers are means over
  seeds, and `seed_mean_accuracy` lists each seed's. `isolated`: each method runs in a
  process of its own (`isolation.Runner`); False runs them in-process (trusted code only).
  """
  check_settings(num_probes, num_episodes, seed, noise)
  latency_ms = benchmark.latency(device)
  accuracy, proxy_name, proxy = benchmark.accuracy(dataset), proxy, benchmark.proxy(dataset, proxy)
  check_budget(device, latency_ms, budget)
  oracle_accuracy = float(accuracy[oracle(latency_ms, accuracy, proxy, budget.budget_ms)])
  proxy_oracle_accuracy = float(
      accuracy[proxy_oracle(latency_ms, accuracy, proxy, budget.budget_ms)])
  if methods is None:
    reference = REFERENCES[method_name](latency_ms, accuracy, proxy, budget.budget_ms)
    scores, valid = np.full((1, num_episodes), accuracy[reference]), np.ones((1, num_episodes))
  else:
    task = interface.Task(dataset, budget.budget_ms, num_probes, proxy,
                          noise_prior=task_noise_prior(noise_prior, noise))
    table = tables.frozen(latency_ms)  # the harness's copy, which no method can write
    results = []
    runner = isolation.Runner(isolated)
    for position, method in enumerate(methods):
      for e in episode_progress(range(num_episodes)):
        target = NoisyTableDevice(device, table, sigma=noise,
                                  rng=episode_rng(seed, device, dataset, budget, e, "noise"))
        results.append(run_episode(method, task, target, accuracy,
                                   episode_rng(seed, device, dataset, budget, e), runner,
                                   f"{method_name}[{position}]"))
    scores, valid = (np.array(x, np.float64).reshape(len(methods), num_episodes)
                     for x in zip(*results))
  seed_means = scores.mean(axis=1)
  mean_accuracy = float(seed_means.mean())
  return {
      "method": method_name, "device": device, "dataset": dataset,
      "budget_percentile": budget.percentile, "budget_ms": budget.budget_ms,
      "probes": num_probes, "episodes": num_episodes, "noise": float(noise),
      "noise_prior": task_noise_prior(noise_prior, noise), "proxy": proxy_name,
      "seeds": len(seed_means),
      "mean_accuracy": mean_accuracy, "std_accuracy": float(np.std(scores)),
      "seed_mean_accuracy": seed_means.tolist(),
      "feasible_rate": float(np.mean(valid)),
      "seed_feasible_rate": valid.mean(axis=1).tolist(),
      "oracle_accuracy": oracle_accuracy, "proxy_oracle_accuracy": proxy_oracle_accuracy,
      "mean_regret": oracle_accuracy - mean_accuracy,
  }


def summarize(rows: Iterable[Mapping]) -> dict:
  """Per method, the means of mean_accuracy, feasible_rate and mean_regret over its cells;
  with several seeds also their standard deviation over seeds (`*_seed_std`)."""
  by_method: dict[str, list[Mapping]] = {}
  for row in rows:
    by_method.setdefault(row["method"], []).append(row)
  summary = {}
  for name, cells in by_method.items():
    entry = {key: float(np.mean([r[key] for r in cells])) for key in SUMMARY_KEYS}
    seeds = cells[0]["seeds"]
    entry.update(cells=len(cells), seeds=seeds)
    if seeds > 1:
      accuracy = np.mean([r["seed_mean_accuracy"] for r in cells], axis=0)  # per seed
      feasible = np.mean([r["seed_feasible_rate"] for r in cells], axis=0)
      oracle_mean = np.mean([r["oracle_accuracy"] for r in cells])
      entry.update(mean_accuracy_seed_std=float(np.std(accuracy)),
                   feasible_rate_seed_std=float(np.std(feasible)),
                   mean_regret_seed_std=float(np.std(oracle_mean - accuracy)),
                   seed_mean_accuracy=accuracy.tolist())
    summary[name] = entry
  return summary


def _pm(value: float, std: float | None, spec: str) -> str:
  return format(value, spec) + ("" if std is None else " +- " + format(std, spec))


def _width(values, minimum: int) -> int:
  """A left-aligned column's width: `minimum`, or the longest value and a gap of two."""
  return max([minimum, *(len(str(v)) + 2 for v in values)])


def format_table(rows: Sequence[Mapping], summary: Mapping) -> str:
  """Rows grouped by device/dataset/budget, then the per-method summary (mean +- std over
  seeds where a method has several); the name columns as wide as their longest name."""
  m = _width([*(r["method"] for r in rows), *summary], 17)
  d = _width([r["device"] for r in rows], 15)
  t = _width([r["dataset"] for r in rows], 16)
  header = (f"{'method':<{m}}{'device':<{d}}{'dataset':<{t}}{'q':>5}{'B (ms)':>9}"
            f"{'acc':>8}{'feas':>6}{'oracle':>8}{'p-orac':>8}{'regret':>8}")
  lines = [header, "-" * len(header)]
  for r in rows:
    q = "-" if r["budget_percentile"] is None else f"{r['budget_percentile']:g}"
    lines.append(f"{r['method']:<{m}}{r['device']:<{d}}{r['dataset']:<{t}}{q:>5}"
                 f"{r['budget_ms']:>9.3f}{r['mean_accuracy']:>8.2f}{r['feasible_rate']:>6.2f}"
                 f"{r['oracle_accuracy']:>8.2f}{r['proxy_oracle_accuracy']:>8.2f}"
                 f"{r['mean_regret']:>8.2f}")
  header = (f"{'method':<{m}}{'cells':>6}{'seeds':>6}{'mean acc':>17}{'feasible':>17}"
            f"{'regret':>8}")
  lines += ["", header, "-" * len(header)]
  for name, s in summary.items():
    lines.append(f"{name:<{m}}{s['cells']:>6}{s['seeds']:>6}"
                 f"{_pm(s['mean_accuracy'], s.get('mean_accuracy_seed_std'), '.2f'):>17}"
                 f"{_pm(s['feasible_rate'], s.get('feasible_rate_seed_std'), '.3f'):>17}"
                 f"{s['mean_regret']:>8.2f}")
  return "\n".join(lines)


def evaluate(benchmark: Benchmark, methods: Mapping[str, Sequence[interface.Method] | None],
             devices: Sequence[str], datasets: Sequence[str],
             budgets: Callable[[str], Sequence[Budget]], num_probes: int, num_episodes: int,
             seed: int, progress: Callable[[Iterable], Iterable] = iter,
             noise: float = 0.0, proxy: str = aggregate.DEFAULT_PROXY,
             isolated: bool = True, cell_log: resume.CellLog | None = None,
             episode_progress: Callable[[Iterable], Iterable] = iter,
             noise_prior=None) -> dict:
  """Every cell of the grid; `budgets(device)` gives that device's budgets. `methods` maps
  a name to its methods (one per seed; `registry.make_methods`) or None for a reference.
  Every input is checked (`check_settings`, `grid_cells`) before the first cell runs.
  `isolated`: each method runs in a process of its own, one for the whole grid
  (`isolation.Runner`), one for the whole grid; False runs them in-process (trusted code
  only). `cell_log` (`resume.CellLog`) gives the cells that finished before, and records
  each cell as it finishes; `episode_progress` wraps each method's episodes of a cell.
  `noise_prior`: what every task says of the noise (`task_noise_prior`; None: nothing)."""
  check_settings(num_probes, num_episodes, seed, noise)
  task_noise_prior(noise_prior, noise)  # a malformed prior is refused before any cell
  for name, seeds in methods.items():
    if seeds is not None and (isinstance(seeds, str) or not hasattr(seeds, "__len__")
                              or not seeds or not all(map(callable, seeds))):
      raise ValueError(f"method {name!r}: expected a list of methods (one per seed; "
                       f"registry.make_methods) or None for a reference, got {seeds!r}")
    if seeds is None and name not in REFERENCES:
      raise ValueError(f"{name!r} is not a reference ({', '.join(REFERENCES)}): give its "
                       "methods")
  cells = grid_cells(benchmark, methods, devices, datasets, budgets, proxy)
  # A method that cannot run isolated is refused before any cell; the processes started
  # here serve every cell.
  isolation.Runner(isolated).start(methods)
  rows = []
  for name, device, dataset, budget in progress(cells):
    key = resume.cell_key(name, device, dataset, budget)
    if cell_log is not None and key in cell_log.finished:
      rows.append(cell_log.finished[key])
      continue
    rows.append(evaluate_cell(name, methods[name], benchmark, device, dataset, budget,
                              num_probes, num_episodes, seed, noise, proxy, isolated,
                              episode_progress, noise_prior))
    if cell_log is not None:
      cell_log.append(key, rows[-1])
  return {"rows": rows, "summary": summarize(rows)}
