r"""Check the lab's proxies against the bundle's values and against test accuracy.

  python -m experiments.check_proxies --num_archs=300 --seed=0 [--data_dir=...] \
    [--proxies=naswot,logsynflow,meco,az_expressivity,az_progressivity,az_trainability]

Draws `--num_archs` architectures at random (numpy `default_rng(seed)`, no replacement),
scores them on each dataset with the bundle's images (`score_proxies.score_archs`,
resumable: the per-dataset tables live in `--work_dir`), and reports
  * Spearman's rho between computed and bundle values, naswot and logsynflow (target >= 0.99);
  * whether skip equals the bundle's for every architecture;
  * Spearman's rho with test accuracy, computed next to bundle, for each proxy and the
    paper's combination (mean of min-max normalised naswot, logsynflow, skip);
  * for the other proxies, Spearman's rho and Kendall's tau with test accuracy, and AZ-NAS's
    combination (`lab.az_nas_rank`, with FLOPs) where its three components are computed.
Writes the numbers as JSON to `--report` when given.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from absl import flags
import numpy as np
from scipy import stats

from experiments import cli
from experiments import score_proxies
from hwnas_jax.benchmark import lab
from hwnas_jax.benchmark import tables
from hwnas_jax.benchmark import searchspace

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Flags of the command; defined only when run as a program, so the module imports cleanly."""
  flags.DEFINE_string("data_dir", None, "Benchmark bundle (default: $HWNAS_DATA_DIR).")
  flags.DEFINE_integer("num_archs", 300, "Architectures drawn at random.")
  flags.DEFINE_integer("seed", 0, "Seed of the draw (numpy default_rng); also the inits' seed.")
  flags.DEFINE_list("datasets", list(searchspace.DATASETS), "Datasets to check.")
  flags.DEFINE_string("work_dir", os.path.join(tempfile.gettempdir(), "hwnas_check_proxies"),
                      "Where the per-dataset score tables (and their partial files) go.")
  flags.DEFINE_string("report", None, "JSON file for the numbers.")
  flags.DEFINE_list("proxies", list(lab.DEFAULT_PROXIES), f"Proxies, of {list(lab.PROXIES)}.")
  flags.DEFINE_integer("az_batch", lab.AZ_BATCH, "Gaussian images of the AZ-NAS proxies.")


def sample_archs(num_archs: int, seed: int) -> np.ndarray:
  if (isinstance(num_archs, bool) or not isinstance(num_archs, (int, np.integer))
      or not 2 <= num_archs <= searchspace.NUM_ARCHS):
    raise ValueError(f"--num_archs must be a whole number in [2, {searchspace.NUM_ARCHS}] (a "
                     f"rank correlation needs two), got {num_archs!r}")
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(searchspace.NUM_ARCHS, size=num_archs, replace=False))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
  return float(stats.spearmanr(a, b).statistic)


def kendall(a: np.ndarray, b: np.ndarray) -> float:
  return float(stats.kendalltau(a, b).statistic)


def compare(computed: dict[str, np.ndarray], published: dict[str, np.ndarray],
            accuracy: np.ndarray) -> dict[str, float]:
  """Agreement of one dataset's computed proxies with the published ones, and with accuracy."""
  idx = computed["index"]
  pub = {name: np.asarray(published[name])[idx] for name in tables.PROXY_NAMES}
  acc = np.asarray(accuracy)[idx]
  out = {f"rho_{name}_vs_bundle": spearman(computed[name], pub[name])
         for name in ("naswot", "logsynflow") if name in computed}
  out["skip_equal"] = int(np.sum(np.isclose(computed["skip"], pub["skip"], rtol=0, atol=1e-12)))
  out["num_archs"] = int(len(idx))
  for name in tables.PROXY_NAMES:
    if name in computed:
      out[f"rho_acc_{name}_computed"] = spearman(computed[name], acc)
    out[f"rho_acc_{name}_bundle"] = spearman(pub[name], acc)
  if all(name in computed for name in tables.PROXY_NAMES):
    out["rho_acc_combined_computed"] = spearman(tables.combined_proxy(computed), acc)
  out["rho_acc_combined_bundle"] = spearman(tables.combined_proxy(pub), acc)
  others = [n for n in lab.PROXIES if n in computed and n not in tables.PROXY_NAMES]
  if {"az_expressivity", "az_progressivity", "az_trainability"} <= set(others):
    computed = dict(computed, az_nas=lab.az_nas_rank(computed, computed["flops"]))
    others.append("az_nas")
  for name in others:
    out[f"rho_acc_{name}"] = spearman(computed[name], acc)
    out[f"tau_acc_{name}"] = kendall(computed[name], acc)
  return out


def main(argv):
  del argv
  directory = tables.data_dir(FLAGS.data_dir)
  unknown = [d for d in FLAGS.datasets if d not in searchspace.DATASETS]
  if unknown:
    raise ValueError(f"unknown datasets {unknown}; known: {list(searchspace.DATASETS)}")
  indices = sample_archs(FLAGS.num_archs, FLAGS.seed)
  accuracy = tables.load_test_accuracy(os.path.join(directory, "test_accuracy.npz"))
  report = {"seed": FLAGS.seed, "num_archs": FLAGS.num_archs, "datasets": {}}
  for dataset in FLAGS.datasets:
    start = time.perf_counter()
    images = score_proxies.load_images(os.path.join(directory, f"images_{dataset}.npz"))
    names = score_proxies.parse_proxies(FLAGS.proxies)
    tag = "-".join(names) + (f"_az{FLAGS.az_batch}" if any("az" in n for n in names) else "")
    output = os.path.join(FLAGS.work_dir,
                          f"check_{dataset}_n{FLAGS.num_archs}_s{FLAGS.seed}_{tag}.npz")
    if os.path.isfile(output):
      with np.load(output) as data:
        computed = {key: data[key] for key in data.files}
    else:
      computed = score_proxies.score_archs(dataset, images, indices, output, seed=FLAGS.seed,
                                           proxy_names=names, az_batch=FLAGS.az_batch)
    published = tables.load_proxy_file(os.path.join(directory, f"proxies_{dataset}.npz"))
    result = compare(computed, published, accuracy[dataset])
    result["seconds"] = time.perf_counter() - start
    report["datasets"][dataset] = result
    print(f"{dataset}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in result.items()), flush=True)
  if FLAGS.report:
    with open(FLAGS.report, "w") as f:
      json.dump(report, f, indent=2)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
