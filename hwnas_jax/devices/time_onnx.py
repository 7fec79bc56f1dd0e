"""Time an ONNX model with onnxruntime and print one JSON line: the timing script of a target.

  python3 time_onnx.py model.onnx --threads=1 --warmup=3 --repeats=20
  {"median_ms": 2.41, "iqr_ms": 0.05, "times_ms": [...], "threads": 1, ...}

Needs only Python 3, numpy and onnxruntime, and imports nothing of hwnas_jax, so this one
file can be copied to any machine that runs the model (a Raspberry Pi or a Jetson over
`ssh`) and named in `--device=command:'ssh pi python3 time_onnx.py {model}'` (after the
model is copied there). `OnnxRuntimeDevice` times this machine with the same function.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time

import numpy as np


def random_inputs(session, seed: int = 0) -> dict:
  """Normal random inputs of every input's shape (a symbolic dimension is taken as 1):
  a latency depends on the shapes, not on the pixel values."""
  rng = np.random.default_rng(seed)
  return {i.name: rng.standard_normal([d if isinstance(d, int) and d > 0 else 1
                                       for d in i.shape]).astype(np.float32)
          for i in session.get_inputs()}


def make_session(model_path: str, threads: int = 1):
  """An onnxruntime CPU session with `threads` intra-op threads and one inter-op thread."""
  import onnxruntime  # pylint: disable=import-outside-toplevel
  options = onnxruntime.SessionOptions()
  options.intra_op_num_threads = threads
  options.inter_op_num_threads = 1
  options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
  options.log_severity_level = 3
  return onnxruntime.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])


def time_calls_ms(call, warmup: int, repeats: int) -> np.ndarray:
  """Milliseconds of each of `repeats` calls of `call()` after `warmup` untimed ones, with
  the garbage collector paused (a collection inside a timed call is not the model's)."""
  for _ in range(warmup):
    call()
  times_ms = np.empty(repeats)
  was_enabled = gc.isenabled()
  gc.disable()
  try:
    for r in range(repeats):
      start = time.perf_counter()
      call()
      times_ms[r] = (time.perf_counter() - start) * 1e3
  finally:
    if was_enabled:
      gc.enable()
  return times_ms


def time_session(session, inputs: dict, warmup: int, repeats: int) -> np.ndarray:
  """Milliseconds of each timed run of an onnxruntime session on `inputs`."""
  return time_calls_ms(lambda: session.run(None, inputs), warmup, repeats)


def time_model(model_path: str, threads: int = 1, warmup: int = 3, repeats: int = 20,
               seed: int = 0) -> dict:
  """The median and inter-quartile range (ms) of `repeats` timed runs, every timing, and the
  seconds spent loading the model."""
  if threads < 1 or warmup < 0 or repeats < 1:
    raise ValueError(f"need threads >= 1, warmup >= 0, repeats >= 1; got {threads}, {warmup}, "
                     f"{repeats}")
  start = time.perf_counter()
  session = make_session(model_path, threads)
  load_s = time.perf_counter() - start
  times_ms = time_session(session, random_inputs(session, seed), warmup, repeats)
  q25, q50, q75 = np.percentile(times_ms, [25, 50, 75])
  return {"median_ms": float(q50), "iqr_ms": float(q75 - q25),
          "times_ms": [round(float(t), 6) for t in times_ms], "load_s": load_s,
          "threads": threads, "warmup": warmup, "repeats": repeats}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("model", help="the .onnx file")
  parser.add_argument("--threads", type=int, default=1, help="intra-op threads")
  parser.add_argument("--warmup", type=int, default=3, help="untimed runs first")
  parser.add_argument("--repeats", type=int, default=20, help="timed runs")
  args = parser.parse_args(argv)
  try:
    result = time_model(args.model, args.threads, args.warmup, args.repeats)
  except Exception as error:  # pylint: disable=broad-except  # one line, a non-zero exit
    print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
    return 1
  print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
