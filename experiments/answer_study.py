r"""The answer when no probe is confirmed: the fallback of `noise.answer_slot`, chosen on the
training devices only.

  python -m experiments.answer_study --checkpoint=runs/range --output=runs/answer_study.json \
    [--probes=3,5,10] [--noise=0,0.05,0.2] [--episodes=4] \
    [--fallbacks=0.5,0.6,0.7,0.8,0.9,0.95] [--devices=...]
  python -m experiments.answer_study --inputs=a.json,b.json --output=runs/answer_study.json

The second form combines runs over disjoint sets of training devices (one a core).

With few probes there is no room for a repeat, so on a device whose noise is unknown no
answer reaches `noise.MIN_CONFIDENCE`, and the rule falls back. A fallback threshold c
answers the best-proxy architecture measured within budget whose confidence reaches c, else
the most confident one; c = MIN_CONFIDENCE is always the most confident one (the rule
before this study).

Every episode (each controller seed of --checkpoint, and lsq; the training devices, 3
datasets x q in {10, 25, 50}, each K and sigma; one episode at sigma 0, --episodes above) is
played once, and its probe record answered under every threshold. The controller's probes
never read the fallback (its features count confirmed answers only), and neither do lsq's
(`least_squares_step` confirms against the confirmed answer), so every row is what its
method would score under each rule. Validity is the protocol's: measured within budget and within budget in the table.

The rule, fixed before the run: the threshold with the best mean accuracy over every
(method, K, sigma) cell, among those whose feasible rate in every such cell is at most 0.02
below the rule before the study (c = MIN_CONFIDENCE); ties to the higher threshold.
Invalid answers score 0, so the mean prices risk; the constraint keeps a threshold from
buying accuracy with answers over budget.
"""

from __future__ import annotations

import json

from absl import flags
import numpy as np

from experiments import cli
from hwnas_jax.benchmark import progress
from hwnas_jax.benchmark import tables
from hwnas_jax.devices import noise
from hwnas_jax.devices.table import NoisyTableDevice
from hwnas_jax.search import baselines
from hwnas_jax.search import interface
from hwnas_jax.search import protocol
from hwnas_jax.search import registry

FLAGS = flags.FLAGS
PERCENTILES = (10.0, 25.0, 50.0)
MAX_FEASIBLE_DROP = 0.02


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  flags.DEFINE_string("checkpoint", None, "meta_train --workdir of the controller (every seed).",
                      flag_values=fv)
  flags.DEFINE_string("data_dir", None, "Benchmark bundle (default: $HWNAS_DATA_DIR).",
                      flag_values=fv)
  flags.DEFINE_list("probes", ["3", "5", "10"], "Probe budgets K.", flag_values=fv)
  flags.DEFINE_list("noise", ["0", "0.05", "0.2"], "Probe noise sigmas.", flag_values=fv)
  flags.DEFINE_integer("episodes", 4, "Episodes per cell at sigma > 0 (one at sigma 0).",
                       flag_values=fv)
  flags.DEFINE_list("fallbacks", ["0.5", "0.6", "0.7", "0.8", "0.9", str(noise.MIN_CONFIDENCE)],
                    "Fallback confidence thresholds compared.", flag_values=fv)
  flags.DEFINE_list("devices", None, "Training devices (default: all of them; validation "
                    "devices are refused).", flag_values=fv)
  flags.DEFINE_list("inputs", [], "Results of earlier runs over disjoint devices to combine "
                    "instead of running.", flag_values=fv)
  flags.DEFINE_string("output", "runs/answer_study.json", "Where to write the results.",
                      flag_values=fv)


def replay(method: interface.Method, task: interface.Task, target: NoisyTableDevice,
           accuracy: np.ndarray, rng: np.random.Generator, fallbacks) -> list[tuple[float, bool]]:
  """(score, valid) of one episode's probe record under each fallback threshold."""
  budgeted = interface.ProbeBudget(target, task.num_probes)
  answered = method(task, budgeted.handle, rng)
  indices = [p.index for p in budgeted.probes]
  latencies = [p.latency_ms for p in budgeted.probes]
  results = []
  for fallback in fallbacks:
    answer = noise.answer(indices, latencies, task.budget_ms, task.proxy,
                          noise_prior=task.noise_prior, fallback_confidence=fallback)[0]
    if fallback == noise.FALLBACK_CONFIDENCE and answer != answered:
      raise AssertionError(f"replaying the rule in force gave {answer}, the method {answered}")
    results.append(protocol.answer_score(budgeted, target, accuracy, answer, task.budget_ms))
  return results


def study(benchmark: tables.Benchmark, devices, methods: dict[str, list], probes, sigmas,
          episodes: int, fallbacks) -> list[dict]:
  """One row per (method, K, sigma, fallback): mean accuracy and feasible rate over the
  devices' cells and episodes (and seeds)."""
  budgets = protocol.percentile_budgets(benchmark, PERCENTILES)
  cells = [(device, dataset, budget) for device in devices
           for dataset in benchmark.datasets for budget in budgets(device)]
  sums: dict[tuple, list] = {}
  grid = [(k, s) for k in probes for s in sigmas]
  for device, dataset, budget in progress.bar(cells, desc="answer study", unit="cell"):
    table = tables.frozen(benchmark.latency(device))
    accuracy, proxy = benchmark.accuracy(dataset), benchmark.proxy(dataset)
    for num_probes, sigma in grid:
      task = interface.Task(dataset, budget.budget_ms, num_probes, proxy)
      for name, seeds in methods.items():
        for method in seeds:
          for e in range(1 if sigma == 0 else episodes):
            target = NoisyTableDevice(device, table, sigma=sigma, rng=protocol.episode_rng(
                0, device, dataset, budget, e, "noise"))
            results = replay(method, task, target, accuracy,
                             protocol.episode_rng(0, device, dataset, budget, e), fallbacks)
            for fallback, (score, valid) in zip(fallbacks, results):
              sums.setdefault((name, num_probes, sigma, fallback), []).append((score, valid))
  return [dict(method=name, probes=k, noise=s, fallback=c,
               mean_accuracy=float(np.mean([x[0] for x in v])),
               feasible_rate=float(np.mean([x[1] for x in v])), episodes=len(v))
          for (name, k, s, c), v in sums.items()]


def combine(runs: list[list[dict]]) -> list[dict]:
  """The rows of runs over disjoint devices as one run's: means weighted by episodes.
  ValueError unless every run has the same (method, K, sigma, threshold) rows."""
  keys = [sorted((r["method"], r["probes"], r["noise"], r["fallback"]) for r in rows)
          for rows in runs]
  if any(k != keys[0] for k in keys[1:]):
    raise ValueError("--inputs differ in their methods, K, sigmas or thresholds; combine "
                     "only runs of one grid over disjoint devices")
  merged: dict[tuple, list[dict]] = {}
  for rows in runs:
    for r in rows:
      merged.setdefault((r["method"], r["probes"], r["noise"], r["fallback"]), []).append(r)
  return [dict(method=m, probes=k, noise=s, fallback=c, episodes=sum(r["episodes"] for r in v),
               **{key: float(np.average([r[key] for r in v], weights=[r["episodes"] for r in v]))
                  for key in ("mean_accuracy", "feasible_rate")})
          for (m, k, s, c), v in merged.items()]


def choose(rows: list[dict], fallbacks) -> tuple[float, dict[float, dict]]:
  """The module docstring's rule: (the threshold, per threshold its mean and whether it
  meets the feasibility constraint)."""
  in_force = {(r["method"], r["probes"], r["noise"]): r["feasible_rate"] for r in rows
              if r["fallback"] == noise.MIN_CONFIDENCE}
  verdict = {}
  for c in fallbacks:
    mine = [r for r in rows if r["fallback"] == c]
    verdict[c] = dict(
        mean_accuracy=float(np.mean([r["mean_accuracy"] for r in mine])),
        meets=all(r["feasible_rate"] >= in_force[(r["method"], r["probes"], r["noise"])]
                  - MAX_FEASIBLE_DROP for r in mine))
  allowed = [c for c in fallbacks if verdict[c]["meets"]]
  # Ties go to the more cautious threshold: no change without a gain.
  return max(allowed, key=lambda c: (verdict[c]["mean_accuracy"], c)), verdict


def format_table(rows: list[dict], fallbacks) -> str:
  keys = list(dict.fromkeys((r["method"], r["probes"], r["noise"]) for r in rows))
  by = {(r["method"], r["probes"], r["noise"], r["fallback"]): r for r in rows}
  lines = [f"{'method':<12}{'K':>4}{'sigma':>7}" + "".join(f"{'c=' + format(c, 'g'):>16}"
                                                            for c in fallbacks)]
  for method, k, s in keys:
    lines.append(f"{method:<12}{k:>4}{s:>7g}" + "".join(
        f"{by[(method, k, s, c)]['mean_accuracy']:>9.2f} ({by[(method, k, s, c)]['feasible_rate']:.3f})"
        for c in fallbacks))
  return "\n".join(lines)


def checked_fallbacks(fallbacks) -> list[float]:
  """The thresholds compared; the rule before the study must be one (`choose` holds the
  others to its feasible rates)."""
  if noise.MIN_CONFIDENCE not in fallbacks:
    raise ValueError(f"--fallbacks must include the rule before the study, "
                     f"{noise.MIN_CONFIDENCE:g}")
  return list(fallbacks)


def main(argv, fv: flags.FlagValues = FLAGS):
  del argv
  probes = [interface.checked_num_probes(k) for k in cli.numbers("--probes", fv.probes)]
  sigmas = cli.numbers("--noise", fv.noise, allow_minimum=True)
  fallbacks = checked_fallbacks(cli.numbers("--fallbacks", fv.fallbacks, minimum=0.0,
                                            maximum=1.0))
  episodes = cli.whole("--episodes", fv.episodes)
  output = cli.checked_output(fv.output)
  if fv.inputs:
    runs, devices = [], []
    for path in fv.inputs:
      with open(path) as f:
        saved = json.load(f)
      runs.append(saved["rows"])
      devices += saved["devices"]
    cli.names("the devices of --inputs", devices, None)  # disjoint: none counted twice
    rows = combine(runs)
    fallbacks = checked_fallbacks(sorted({r["fallback"] for r in rows}))
  else:
    benchmark = tables.load_benchmark(fv.data_dir)
    held_out = [d for d in fv.devices or () if d not in benchmark.training_devices
                and d in benchmark.devices]
    if held_out:
      raise ValueError(f"--devices: {', '.join(held_out)} not a training device; the study "
                       "chooses on the training devices only, never on validation ones")
    devices = cli.names("--devices", fv.devices or benchmark.training_devices,
                        benchmark.training_devices)
    methods = {"lsq": [baselines.BASELINES["lsq"]]}
    if fv.checkpoint:
      methods = {"controller": registry.make_methods("controller", fv.checkpoint), **methods}
    rows = study(benchmark, devices, methods, probes, sigmas, episodes, fallbacks)
  chosen, verdict = choose(rows, fallbacks)
  print(format_table(rows, fallbacks))
  for c in fallbacks:
    print(f"c={c:g}: mean {verdict[c]['mean_accuracy']:.2f}, "
          f"{'meets' if verdict[c]['meets'] else 'fails'} the feasibility constraint")
  print(f"chosen: FALLBACK_CONFIDENCE = {chosen:g}")
  cli.write_atomic(output, json.dumps(dict(rows=rows, verdict={str(c): v for c, v in
                                                                verdict.items()},
                                           chosen=chosen, devices=list(devices),
                                           fallback_in_force=noise.FALLBACK_CONFIDENCE,
                                           checkpoint=fv.checkpoint, inputs=fv.inputs),
                                      indent=1))
  print(f"wrote {output}")


if __name__ == "__main__":
  cli.run(main, define_flags)
