"""Devices that time the exported ONNX model: onnxruntime here, or any command on any target.

  * `OnnxRuntimeDevice`: this machine through onnxruntime (threads, warm-up, repeats), with
    `time_onnx.time_model`, the same code the shipped timing script runs elsewhere.
  * `CommandDevice`: a shell command with `{model}` in it, replaced by the exported model's
    path; it prints the latency in ms, or one JSON line with `median_ms` (and optionally
    `iqr_ms`, `times_ms`). A timeout, a non-zero exit or anything else printed is a
    `DeviceError` that says which, never a latency.

Both export each architecture once (`ExportedModels`, a folder of .onnx files keyed by the
network settings) and keep a `Measurement` per call in `records`, as `HostDevice` does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shlex
import subprocess
import tempfile
import time
from typing import Any

import numpy as np

from hwnas_jax.benchmark import onnx_export
from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices import time_onnx
from hwnas_jax.devices.host import Measurement, summarize_times
from hwnas_jax.devices.interface import DeviceError

MODEL_PLACEHOLDER = "{model}"
# What a probe returns of its timings: the median, or the fastest run (on a loaded machine
# the other jobs only ever add time, so the minimum moves least from probe to probe).
STATISTICS = ("median", "min")


class ExportedModels:
  """architecture index -> path of its ONNX file in `folder` (exported on first use)."""

  def __init__(self, spec: onnx_export.NetworkSpec, seed: int = 0, folder: str | None = None):
    self.spec, self.seed = spec, seed
    key = hashlib.sha1(json.dumps([dataclasses.asdict(spec), seed]).encode()).hexdigest()[:10]
    self.folder = folder or os.path.join(tempfile.gettempdir(), f"hwnas-jax-onnx-{key}")
    os.makedirs(self.folder, exist_ok=True)

  def path(self, index: int) -> tuple[str, float]:
    """(the model's path, seconds spent exporting it now: 0 when it was there)."""
    path = os.path.join(self.folder, f"arch_{index}.onnx")
    if os.path.isfile(path):
      return path, 0.0
    start = time.perf_counter()
    partial = f"{path}.{os.getpid()}.part"  # never a half-written model under its name
    onnx_export.export(index, partial, self.spec, self.seed)
    os.replace(partial, path)
    return path, time.perf_counter() - start


def spread_stats(times_ms, median_ms: float, iqr_ms: float | None = None) -> dict[str, float]:
  """The Measurement's spread fields from every timing (NaN where none was given)."""
  times = np.asarray(times_ms if times_ms is not None else [], np.float64)
  if times.size:
    stats = summarize_times(times / 1e3)
    return {**stats, "latency_ms": median_ms,
            "iqr_ms": stats["iqr_ms"] if iqr_ms is None else iqr_ms}
  nan = math.nan
  return {"latency_ms": median_ms, "iqr_ms": nan if iqr_ms is None else iqr_ms,
          "std_ms": nan, "min_ms": median_ms, "max_ms": median_ms}


class _ExportingDevice:
  """What both devices share: the export, the settings and the records."""
  runtime = ""

  def __init__(self, name: str, spec: onnx_export.NetworkSpec, seed: int, model_dir: str | None,
               statistic: str = "median"):
    if statistic not in STATISTICS:
      raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    self.name, self.spec, self.seed, self.statistic = name, spec, seed, statistic
    self.models = ExportedModels(spec, seed, model_dir)
    self.records: list[Measurement] = []
    self.timings: list[list[float]] = []  # every timing of each record, in ms

  def settings(self) -> dict[str, Any]:
    return {"name": self.name, "runtime": self.runtime, **dataclasses.asdict(self.spec),
            "seed": self.seed, "statistic": self.statistic, "cpu_count": os.cpu_count()}

  def measure(self, index: int, tag: str = "probe") -> float:
    """Latency (ms) of architecture `index`, the median or the minimum of its timings
    (`statistic`), export and model loading excluded."""
    index = searchspace.check_index(index)
    start = time.perf_counter()
    path, export_s = self.models.path(index)
    result = self._time(path, index)
    times = result.get("times_ms")
    stats = spread_stats(times, result["median_ms"], result.get("iqr_ms"))
    if self.statistic == "min":
      stats["latency_ms"] = stats["min_ms"]
    self.records.append(Measurement(
        index=index, arch=searchspace.index_to_string(index),
        repeats=len(times) if times else int(result.get("repeats", 1)),
        build_s=export_s, compile_s=float(result.get("load_s", 0.0)),
        wall_s=time.perf_counter() - start, reused_executable=export_s == 0.0, tag=tag, **stats))
    self.timings.append(list(times or [result["median_ms"]]))
    return stats["latency_ms"]

  def _time(self, path: str, index: int) -> dict:
    raise NotImplementedError


class OnnxRuntimeDevice(_ExportingDevice):
  """This machine through onnxruntime's CPU provider."""
  runtime = "onnxruntime"

  def __init__(self, name: str = "onnxruntime", spec: onnx_export.NetworkSpec | None = None,
               threads: int = 1, warmup: int = 3, repeats: int = 20, seed: int = 0,
               model_dir: str | None = None, statistic: str = "median"):
    if threads < 1 or warmup < 0 or repeats < 1:
      raise ValueError(f"need threads >= 1, warmup >= 0, repeats >= 1; got {threads}, "
                       f"{warmup}, {repeats}")
    super().__init__(name, spec or onnx_export.NetworkSpec(), seed, model_dir, statistic)
    self.threads, self.warmup, self.repeats = threads, warmup, repeats

  def settings(self) -> dict[str, Any]:
    import onnxruntime  # pylint: disable=import-outside-toplevel
    return {**super().settings(), "threads": self.threads, "warmup": self.warmup,
            "repeats": self.repeats, "onnxruntime": onnxruntime.__version__}

  def _time(self, path: str, index: int) -> dict:
    return time_onnx.time_model(path, self.threads, self.warmup, self.repeats, self.seed)


def parse_timing_output(stdout: str) -> dict:
  """The last non-empty line a timing command printed, as {"median_ms", ...}.

  A number (optionally followed by `ms`) is the latency; a JSON object must hold a positive
  `median_ms`. Anything else is a `DeviceError` quoting what was printed.
  """
  lines = [line.strip() for line in stdout.splitlines() if line.strip()]
  if not lines:
    raise DeviceError("the timing command printed nothing; it must print the latency in ms "
                      "or one JSON line with median_ms")
  last = lines[-1]
  if last.startswith("{"):
    try:
      result = json.loads(last)
      median_ms = float(result["median_ms"])
    except (ValueError, KeyError, TypeError):
      raise DeviceError(f"the timing command printed {last[:200]!r}: not a JSON object with a "
                        "numeric median_ms") from None
    times = result.get("times_ms")
    if times is not None and (not isinstance(times, list)
                              or not all(isinstance(t, (int, float)) for t in times)):
      raise DeviceError(f"the timing command's times_ms is not a list of numbers: {times!r:.200}")
  else:
    try:
      median_ms = float(last.removesuffix("ms").strip())
    except ValueError:
      raise DeviceError(f"the timing command printed {last[:200]!r}: not a latency in ms nor "
                        "a JSON line with median_ms") from None
    result = {}
  if not math.isfinite(median_ms) or median_ms <= 0:
    raise DeviceError(f"the timing command printed a latency of {median_ms!r} ms: a latency "
                      "is a finite number > 0")
  return {**result, "median_ms": median_ms}


class CommandDevice(_ExportingDevice):
  """Any target reached by a shell command: `template` with {model} for the model's path."""
  runtime = "command"

  def __init__(self, template: str, name: str = "command",
               spec: onnx_export.NetworkSpec | None = None, timeout_s: float = 300.0,
               seed: int = 0, model_dir: str | None = None, statistic: str = "median"):
    if MODEL_PLACEHOLDER not in template:
      raise ValueError(f"the command {template!r} has no {MODEL_PLACEHOLDER} for the model's "
                       "path")
    if not timeout_s > 0:
      raise ValueError(f"the command's timeout must be > 0 s, got {timeout_s!r}")
    super().__init__(name, spec or onnx_export.NetworkSpec(), seed, model_dir, statistic)
    self.template, self.timeout_s = template, float(timeout_s)

  def settings(self) -> dict[str, Any]:
    return {**super().settings(), "command": self.template, "timeout_s": self.timeout_s}

  def _time(self, path: str, index: int) -> dict:
    command = self.template.replace(MODEL_PLACEHOLDER, shlex.quote(path))
    start = time.perf_counter()
    try:
      done = subprocess.run(command, shell=True, capture_output=True, text=True,
                            timeout=self.timeout_s, check=False)
    except subprocess.TimeoutExpired:
      raise DeviceError(f"the timing command for architecture {index} ran past its timeout "
                        f"of {self.timeout_s:g} s: {command}") from None
    if done.returncode != 0:
      tail = (done.stderr or done.stdout).strip()[-300:]
      raise DeviceError(f"the timing command for architecture {index} exited with "
                        f"{done.returncode}: {command}" + (f"; it said: {tail}" if tail else ""))
    try:
      result = parse_timing_output(done.stdout)
    except DeviceError as error:
      raise DeviceError(f"architecture {index}: {error} (command: {command})") from None
    return {"load_s": time.perf_counter() - start, **result}
