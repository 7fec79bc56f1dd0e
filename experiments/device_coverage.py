"""Coverage of the synthetic-device family and its prior, measured on the real devices.

  python -m experiments.device_coverage [--data_dir=DIR] [--output=coverage.md|.json]

1. Fit: for every device of the latency file, the best-fitting member of the family
   (its structural part, without the random per-architecture deviations) against the
   table: Spearman and R^2, beside an additive per-op-count linear model's R^2.
2. Spread: model-free statistics of each latency table (overhead share, per-op cost shares,
   max/min ratio, additive R^2, Spearman with the training devices) for prior samples
   (mixture, and each component alone), the training and the validation devices.
3. Typicality: how plausible each real device is as a draw: the share of prior samples
   lying farther from their nearest neighbour among the samples than the device lies from
   its nearest sample (small = outside the cloud).
4. Leave one device family out, training devices only: the prior refitted without a family
   (`tables.FAMILIES`: GPUs at batch 1 / 32 / 256, CPUs, phones) and that family's typicality under the fitted
   component alone and under the mixture. This, not the validation devices, justifies the
   broad component; validation numbers are reported, never used to choose anything.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

from absl import app
from absl import flags
import jax
import numpy as np
import scipy.stats

from experiments import cli
from hwnas_jax.benchmark import tables
from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices import synthetic

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """Flags of the command; defined only when run as a program, so the module imports
  cleanly (tests define them on a FlagValues of their own)."""
  flags.DEFINE_string("data_dir", os.environ.get(tables.DATA_DIR_ENV, ""),
                      "benchmark bundle folder (default: $HWNAS_DATA_DIR)", flag_values=fv)
  flags.DEFINE_string("latency_file", None, "another latency .npz to use", flag_values=fv)
  flags.DEFINE_string("output", None, "write the report here (.json: JSON, else markdown)",
                      flag_values=fv)
  flags.DEFINE_integer("num_samples", 512, "prior samples per component (>= 2)",
                       flag_values=fv)
  flags.DEFINE_integer("seed", 0, "sampling seed", flag_values=fv)


# Scale-free statistics of a latency table (mean_ms is reported beside them, not compared).
STAT_NAMES = ("overhead_share",) + tuple(f"share_{op}" for op in searchspace.OPS) + (
    "range_ratio", "additive_r2")


# --- model-free statistics of latency latency_tables -------------------------------------------

def _count_design() -> np.ndarray:
  counts = searchspace.op_counts().astype(np.float64)
  return np.c_[np.ones(len(counts)), counts[:, 1:]]  # `none` is the reference


def table_stats(latency_tables: np.ndarray) -> dict[str, np.ndarray]:
  """Statistics of (n, 15625) latency tables from an additive per-op-count fit of each."""
  latency_tables = np.atleast_2d(np.asarray(latency_tables, np.float64))
  design = _count_design()
  coef = np.linalg.lstsq(design, latency_tables.T, rcond=None)[0].T        # (n, 5)
  fitted = coef @ design.T
  per_op = np.c_[np.zeros(len(coef)), coef[:, 1:]]
  cheapest = per_op.min(1, keepdims=True)
  overhead = coef[:, 0] + searchspace.NUM_EDGES * cheapest[:, 0]    # the cheapest cell's latency
  excess = per_op - cheapest
  shares = excess / np.maximum(excess.sum(1, keepdims=True), 1e-12)
  mean = latency_tables.mean(1)
  stats = {"mean_ms": mean, "overhead_share": overhead / mean}
  for i, op in enumerate(searchspace.OPS):
    stats[f"share_{op}"] = shares[:, i]
  stats["range_ratio"] = latency_tables.max(1) / latency_tables.min(1)
  stats["additive_r2"] = 1 - ((latency_tables - fitted)**2).mean(1) / latency_tables.var(1)
  return stats


def _standard_ranks(latency_tables: np.ndarray) -> np.ndarray:
  """Rows ranked (ties averaged), centred and scaled so a dot product / n is Spearman's rho."""
  ranks = scipy.stats.rankdata(np.atleast_2d(latency_tables), axis=1)
  ranks -= ranks.mean(1, keepdims=True)
  return ranks / ranks.std(1, keepdims=True)


def spearman_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  ra, rb = _standard_ranks(a), _standard_ranks(b)
  return ra @ rb.T / ra.shape[1]


def r2(truth: np.ndarray, prediction: np.ndarray) -> float:
  return float(1 - np.mean((truth - prediction)**2) / np.var(truth))


# --- typicality -----------------------------------------------------------------------------

def _stat_matrix(stats: Mapping[str, np.ndarray]) -> np.ndarray:
  columns = []
  for name in STAT_NAMES:
    values = np.asarray(stats[name], np.float64)
    columns.append(np.log(values) if name == "range_ratio" else values)
  return np.stack(columns, 1)


def typicality(points: np.ndarray, samples: np.ndarray, scale: np.ndarray) -> np.ndarray:
  """Share of samples whose nearest other sample is farther than each point's nearest sample."""
  points, samples = points / scale, samples / scale
  d_points = np.sqrt(((points[:, None] - samples[None])**2).sum(-1)).min(1)
  d_samples = np.sqrt(((samples[:, None] - samples[None])**2).sum(-1))
  np.fill_diagonal(d_samples, np.inf)
  d_samples = d_samples.min(1)
  return (d_samples[None, :] >= d_points[:, None]).mean(1)


# --- the report -----------------------------------------------------------------------------

def sample_tables(prior: synthetic.Prior, num: int, seed: int, component: str) -> np.ndarray:
  devices = synthetic.sample_devices(jax.random.key(seed), prior, num, component=component)
  return np.asarray(jax.vmap(synthetic.latency_table)(devices), np.float64)


def coverage_report(latency: Mapping[str, np.ndarray], num_samples: int = 512,
                    seed: int = 0) -> dict:
  """Everything the report prints, as plain numbers."""
  names = list(latency)
  train = [n for n in names if n not in tables.VALIDATION_DEVICES]
  valid = [n for n in names if n in tables.VALIDATION_DEVICES]
  design = _count_design()

  # 1. best-fitting member per device, and the additive baseline.
  fits = {}
  for name in names:
    y = np.asarray(latency[name], np.float64)
    device = synthetic.fit_device(y)
    structural = np.asarray(synthetic.latency_table(synthetic.without_jitter(device)), np.float64)
    additive = design @ np.linalg.lstsq(design, y, rcond=None)[0]
    fits[name] = {
        "split": "validation" if name in tables.VALIDATION_DEVICES else "training",
        "family_r2": r2(y, structural),
        "family_spearman": float(scipy.stats.spearmanr(y, structural)[0]),
        "additive_r2": r2(y, additive),
        "additive_spearman": float(scipy.stats.spearmanr(y, additive)[0]),
        "overhead_ms": float(device.overhead),
        "curvature": float(device.curvature),
        "dead_discount": float(device.dead_discount),
        "arch_jitter": float(device.arch_jitter),
    }

  # 2. spread: statistics of real and sampled tables.
  prior = synthetic.fit_prior({n: latency[n] for n in train})
  real_tables = np.stack([np.asarray(latency[n], np.float64) for n in names])
  real_stats = table_stats(real_tables)
  groups = {}
  sampled = {}
  for component in ("mixture", "fitted", "broad"):
    latency_tables = sample_tables(prior, num_samples, seed, component)
    sampled[component] = latency_tables
    groups[f"prior_{component}"] = table_stats(latency_tables)
  index = {n: i for i, n in enumerate(names)}
  for label, members in (("training", train), ("validation", valid)):
    groups[label] = {k: v[[index[n] for n in members]] for k, v in real_stats.items()}

  train_ranks = real_tables[[index[n] for n in train]]
  rho = {}
  if train:
    rho["training"] = _offdiag(spearman_matrix(train_ranks, train_ranks))
    if valid:
      rho["validation"] = spearman_matrix(real_tables[[index[n] for n in valid]], train_ranks).ravel()
    for component, latency_tables in sampled.items():
      rho[f"prior_{component}"] = spearman_matrix(latency_tables[:128], train_ranks).ravel()
  spread = {}
  for label, stats in groups.items():
    spread[label] = {name: _quantiles(stats[name]) for name in ("mean_ms",) + STAT_NAMES}
    if label in rho:
      spread[label]["spearman_vs_training"] = _quantiles(rho[label])

  # 3. typicality of every real device.
  scale = _stat_matrix(groups["prior_mixture"]).std(0)
  points = _stat_matrix(real_stats)
  typical = {}
  for component in ("mixture", "fitted", "broad"):
    values = typicality(points, _stat_matrix(groups[f"prior_{component}"]), scale)
    for name, value in zip(names, values):
      typical.setdefault(name, {})[component] = float(value)

  # 4. leave one training family out.
  lofo = {}
  for family, held in tables.family_members(train).items():
    rest = [n for n in train if tables.device_family(n) != family]
    if not rest:
      continue
    fold_prior = synthetic.fit_prior({n: latency[n] for n in rest})
    held_points = points[[index[n] for n in held]]
    row = {"held_out": held}
    for component in ("fitted", "mixture"):
      latency_tables = sample_tables(fold_prior, num_samples, seed + 1, component)
      row[component] = [float(v) for v in typicality(held_points, _stat_matrix(table_stats(latency_tables)), scale)]
    lofo[family] = row

  return {"devices": fits, "spread": spread, "typicality": typical, "leave_family_out": lofo,
          "prior": {k: np.asarray(v).tolist() for k, v in prior.items()},
          "shape_names": list(synthetic.SHAPE_NAMES), "num_samples": num_samples}


def _offdiag(matrix: np.ndarray) -> np.ndarray:
  return matrix[~np.eye(len(matrix), dtype=bool)]


def _quantiles(values: np.ndarray) -> dict[str, float]:
  values = np.asarray(values, np.float64)
  if values.size == 0:
    return {}
  q = np.quantile(values, [0.0, 0.05, 0.5, 0.95, 1.0])
  return dict(zip(("min", "q05", "median", "q95", "max"), (float(v) for v in q)))


# --- markdown ---------------------------------------------------------------------------------

def to_markdown(report: dict) -> str:
  lines = ["## Best-fitting member per device", "",
           "| device | split | family R^2 | family Spearman | additive R^2 | additive Spearman | "
           "overhead ms | curvature | dead discount | arch jitter | typicality mixture / fitted / broad |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for name, f in report["devices"].items():
    t = report["typicality"][name]
    lines.append(
        f"| {name} | {f['split']} | {f['family_r2']:.4f} | {f['family_spearman']:.4f} | "
        f"{f['additive_r2']:.4f} | {f['additive_spearman']:.4f} | {f['overhead_ms']:.2f} | "
        f"{f['curvature']:+.3f} | {f['dead_discount']:.3f} | {f['arch_jitter']:.3f} | "
        f"{t['mixture']:.2f} / {t['fitted']:.2f} / {t['broad']:.2f} |")
  lines += ["", "Typicality: share of prior samples farther from their nearest sample than the device "
            "is from its nearest sample, in the space of the statistics below (log range ratio); "
            "small = outside the prior's cloud.", ""]

  lines += ["## Spread: prior samples vs real devices (min / 5% / median / 95% / max)", ""]
  labels = list(report["spread"])
  stats = ["mean_ms"] + list(STAT_NAMES) + ["spearman_vs_training"]
  lines.append("| statistic | " + " | ".join(labels) + " |")
  lines.append("| --- |" + " --- |" * len(labels))
  for stat in stats:
    cells = []
    for label in labels:
      q = report["spread"][label].get(stat)
      cells.append("" if not q else
                   f"{q['min']:.3g} / {q['q05']:.3g} / {q['median']:.3g} / {q['q95']:.3g} / {q['max']:.3g}")
    lines.append(f"| {stat} | " + " | ".join(cells) + " |")
  lines += ["", "Spearman vs training: each device (sample) against each training device "
            "(training: distinct pairs; samples: the first 128).", ""]

  lines += ["## Leave one training family out (typicality of the held-out devices)", "",
            "| held-out family | devices | fitted component only | mixture |", "| --- | --- | --- | --- |"]
  for family, row in report["leave_family_out"].items():
    lines.append(f"| {family} | {', '.join(row['held_out'])} | "
                 f"{', '.join(f'{v:.2f}' for v in row['fitted'])} | "
                 f"{', '.join(f'{v:.2f}' for v in row['mixture'])} |")
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str], fv: flags.FlagValues = FLAGS) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  output = cli.checked_output(fv.output)
  # Typicality compares each sample with its nearest other sample: two at least.
  num_samples, seed = cli.whole("--num_samples", fv.num_samples, 2), cli.whole("--seed", fv.seed, 0)
  benchmark = tables.load_benchmark(fv.data_dir or None, latency_file=fv.latency_file)
  report = coverage_report(benchmark.latency_ms, num_samples, seed)
  text = to_markdown(report)
  print(text)
  if output:
    with open(output, "w") as f:
      if output.endswith(".json"):
        json.dump(report, f, indent=1)
      else:
        f.write(text)


if __name__ == "__main__":
  cli.run(main, define_flags)
