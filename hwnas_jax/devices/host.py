"""The machine the code runs on as a target device: a true latency probe, with real noise.

`HostDevice.measure(index)` builds the NAS-Bench-201 network of that architecture
(`network.TinyNetwork`, specialised to its six operations), compiles it with XLA for the
local backend (CPU here, GPU where present), warms it up and returns the median of
repeated timed forward passes. Compilation is excluded from the latency and recorded
beside it, with the spread of the repeats, so the noise of every probe is known.

No latency is ever cached: measuring an architecture again times it again. What is kept
(for the last `keep_compiled` architectures) is the compiled executable and its
parameters, so a re-measurement reuses them and pays no compilation; its record says so.
Weights are drawn with numpy for the shapes each architecture reads (`timing_params`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from typing import Any

import jax
import numpy as np

from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices import time_onnx


@dataclasses.dataclass(frozen=True)
class Measurement:
  """One measurement on the host: the latency and how much to trust it."""
  index: int
  arch: str
  latency_ms: float  # median of the timed repeats
  iqr_ms: float  # interquartile range of the repeats
  std_ms: float
  min_ms: float
  max_ms: float
  repeats: int
  build_s: float  # parameter init + tracing (0 when the executable was reused)
  compile_s: float  # XLA compilation (0 when the executable was reused)
  wall_s: float  # the whole call: build, compile, warm-up and repeats
  reused_executable: bool
  tag: str  # "probe" (counted by the harness) or "check" (a re-measurement outside it)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


STATISTICS = ("median", "min")  # what a measurement reports of its timed passes


def summarize_times(times_s: np.ndarray) -> dict[str, float]:
  """Median, IQR, std, min and max of repeat timings, in ms."""
  ms = np.asarray(times_s, dtype=np.float64) * 1e3
  q25, q50, q75 = np.percentile(ms, [25, 50, 75])
  return {"latency_ms": float(q50), "iqr_ms": float(q75 - q25), "std_ms": float(np.std(ms)),
          "min_ms": float(ms.min()), "max_ms": float(ms.max())}


def time_calls(fn, args, repeats: int, warmup: int) -> np.ndarray:
  """Seconds per call of `fn(*args)`, each waited for; the garbage collector is paused."""
  return time_onnx.time_calls_ms(lambda: jax.block_until_ready(fn(*args)), warmup,
                                 repeats) / 1e3


class HostDevice:
  """The local backend as a Device: `measure(index)` times the compiled network in ms."""

  def __init__(self, name: str = "host", dataset: str = "cifar10", batch_size: int = 1,
               image_size: int | None = None, channels: int = 16, num_cells: int = 5,
               repeats: int = 20, warmup: int = 3, seed: int = 0, keep_compiled: int = 16,
               statistic: str = "median"):
    if dataset not in searchspace.NUM_CLASSES:
      raise ValueError(f"unknown dataset {dataset!r}; known: {list(searchspace.NUM_CLASSES)}")
    if repeats < 1 or warmup < 0 or batch_size < 1:
      raise ValueError(f"need repeats >= 1, warmup >= 0, batch_size >= 1; got {repeats}, "
                       f"{warmup}, {batch_size}")
    if statistic not in STATISTICS:
      raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    self.name = name
    self.statistic = statistic
    self.dataset = dataset
    self.batch_size = batch_size
    self.image_size = image_size or searchspace.IMAGE_SIZE[dataset]
    self.channels = channels
    self.num_cells = num_cells
    self.repeats = repeats
    self.warmup = warmup
    self.seed = seed
    self.keep_compiled = keep_compiled
    self.records: list[Measurement] = []
    self.timings: list[list[float]] = []  # every timing (ms) of each record, for the store
    self._executables: collections.OrderedDict[int, tuple] = collections.OrderedDict()
    # Random inputs: latency does not depend on pixel values, only on shapes.
    images = np.random.default_rng(seed).standard_normal(
        (batch_size, self.image_size, self.image_size, 3)).astype(np.float32)
    self._images = jax.device_put(images)

  def settings(self) -> dict[str, Any]:
    """What determines a measurement: the network, the input and the machine."""
    device = jax.devices()[0]
    return {"name": self.name, "dataset": self.dataset, "batch_size": self.batch_size,
            "image_size": self.image_size, "channels": self.channels,
            "num_cells": self.num_cells, "repeats": self.repeats, "warmup": self.warmup,
            "seed": self.seed, "statistic": self.statistic, "backend": jax.default_backend(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "device_kind": device.device_kind, "cpu_count": os.cpu_count(),
            "jax": jax.__version__}

  def measure(self, index: int, tag: str = "probe") -> float:
    """Latency (ms) of one forward pass of architecture `index`, compile excluded: the
    median of the timed passes, or with `statistic="min"` the fastest (load only slows a
    pass down, so under load the minimum is the steadier figure)."""
    index = searchspace.check_index(index)
    start = time.perf_counter()
    forward, variables, build_s, compile_s, reused = self._executable(index)
    times = time_calls(forward, (variables, self._images), self.repeats, self.warmup)
    stats = summarize_times(times)
    if self.statistic == "min":
      stats["latency_ms"] = stats["min_ms"]
    self.timings.append([float(t) * 1e3 for t in times])
    self.records.append(Measurement(
        index=index, arch=searchspace.index_to_string(index), repeats=self.repeats,
        build_s=build_s, compile_s=compile_s, wall_s=time.perf_counter() - start,
        reused_executable=reused, tag=tag, **stats))
    return stats["latency_ms"]

  def _executable(self, index: int):
    """(compiled forward, variables, build_s, compile_s, reused) for one architecture."""
    if index in self._executables:
      self._executables.move_to_end(index)
      forward, variables = self._executables[index]
      return forward, variables, 0.0, 0.0, True
    ops = tuple(int(op) for op in searchspace.arch_ops()[index])
    model = self._model()
    start = time.perf_counter()
    variables = {"params": timing_params(model, self._images, ops, self.seed)}
    lowered = jax.jit(lambda v, x: model.apply(v, x, ops)).lower(variables, self._images)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    forward = lowered.compile()
    compile_s = time.perf_counter() - start
    if self.keep_compiled > 0:
      self._executables[index] = (forward, variables)
      while len(self._executables) > self.keep_compiled:
        self._executables.popitem(last=False)
    return forward, variables, build_s, compile_s, False

  def _model(self):
    from hwnas_jax.benchmark import network  # pylint: disable=import-outside-toplevel
    return network.TinyNetwork(num_classes=searchspace.NUM_CLASSES[self.dataset],
                               channels=self.channels, num_cells=self.num_cells,
                               use_batchnorm=True)


def timing_params(model, images: jax.Array, ops: tuple[int, ...], seed: int) -> dict:
  """Weights of the right shapes for one architecture, drawn with numpy.

  A latency depends on the shapes, not on the values, and the network's own eager
  initialisation takes 20 to 45 s on a shared 2-core CPU, longer than the probe itself.
  Kernels are uniform in +-1/sqrt(fan_in) (PyTorch's scale), batch-norm scales 1, biases 0.
  """
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(seed), images, ops))["params"]
  rng = np.random.default_rng(seed)

  def draw(path, shape):
    if len(shape.shape) >= 2:
      bound = 1.0 / np.sqrt(np.prod(shape.shape[:-1]))
      value = rng.uniform(-bound, bound, shape.shape)
    elif path[-1].key == "scale":
      value = np.ones(shape.shape)
    else:
      value = np.zeros(shape.shape)
    return jax.device_put(value.astype(shape.dtype))

  return jax.tree_util.tree_map_with_path(draw, shapes)
