r"""The ONNX export against the Flax network: equal outputs on random architectures, and cost.

  python -m benchmarks.bench_onnx_export --num_archs=20 --seed=0 --batch_size=8

For each dataset, `--num_archs` random architectures (seed `--seed`) of the full network
(C=16, N=5) are exported with batch statistics (`batch_norm="batch"`, what the Flax network
computes) from the same weights, run by onnxruntime and by the Flax network (one compiled
program for every architecture, the `lax.switch` form) on the same random images, and
compared: the largest |difference| over the logits, relative to the largest |logit| (1 for
an all-zero output). Also the seconds per export and the median onnxruntime latency of the
inference-mode export at batch 1. Prints the load average.
"""

from __future__ import annotations

import os
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np

from hwnas_jax.benchmark import network
from hwnas_jax.benchmark import onnx_export
from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices import time_onnx

flags.DEFINE_integer("num_archs", 20, "Random architectures per dataset.")
flags.DEFINE_integer("seed", 0, "Seed of the architectures, weights and images.")
flags.DEFINE_integer("batch_size", 8, "Images per forward pass in the comparison.")
flags.DEFINE_float("tolerance", 1e-4, "Largest allowed relative difference.")
FLAGS = flags.FLAGS


def compare_dataset(dataset: str, indices: np.ndarray, folder: str) -> list[dict]:
  spec = onnx_export.NetworkSpec(dataset=dataset, batch_size=FLAGS.batch_size,
                                 batch_norm="batch")
  net = spec.flax_network()
  params = onnx_export.all_params(spec, FLAGS.seed)
  images = np.random.default_rng(FLAGS.seed).standard_normal(
      (FLAGS.batch_size, spec.image_size, spec.image_size, 3)).astype(np.float32)
  forward = jax.jit(lambda ops: net.apply({"params": params}, images, ops))
  rows = []
  for index in indices:
    path = os.path.join(folder, f"{dataset}_{index}.onnx")
    start = time.perf_counter()
    onnx_export.export(int(index), path, spec, FLAGS.seed)
    export_s = time.perf_counter() - start
    session = time_onnx.make_session(path)
    onnx_logits = session.run(None, {onnx_export.INPUT: np.transpose(images, (0, 3, 1, 2))})[0]
    flax_logits = np.asarray(forward(np.asarray(searchspace.arch_ops()[index], np.int32)))
    scale = max(1.0, float(np.abs(flax_logits).max()))
    inference = onnx_export.NetworkSpec(dataset=dataset)
    onnx_export.export(int(index), path, inference, FLAGS.seed)
    latency = time_onnx.time_model(path, repeats=10, warmup=2)["median_ms"]
    rows.append({"index": int(index), "relative_difference":
                 float(np.abs(onnx_logits - flax_logits).max()) / scale,
                 "export_s": export_s, "onnxruntime_ms": latency})
  return rows


def main(argv):
  del argv
  indices = np.random.default_rng(FLAGS.seed).choice(searchspace.NUM_ARCHS, FLAGS.num_archs,
                                                     replace=False)
  print(f"load average at start {os.getloadavg()}")
  failed = 0
  with tempfile.TemporaryDirectory() as folder:
    for dataset in searchspace.DATASETS:
      rows = compare_dataset(dataset, indices, folder)
      worst = max(r["relative_difference"] for r in rows)
      bad = [r["index"] for r in rows if r["relative_difference"] > FLAGS.tolerance]
      failed += len(bad)
      print(f"{dataset}: {len(rows) - len(bad)} of {len(rows)} equal within "
            f"{FLAGS.tolerance:g} (worst relative difference {worst:.2e}); export "
            f"{np.median([r['export_s'] for r in rows]):.3f} s median; onnxruntime batch 1 "
            f"{np.median([r['onnxruntime_ms'] for r in rows]):.2f} ms median"
            + (f"; over tolerance: {bad}" if bad else ""))
  print(f"load average at end {os.getloadavg()}")
  if failed:
    raise SystemExit(1)


if __name__ == "__main__":
  app.run(main)
