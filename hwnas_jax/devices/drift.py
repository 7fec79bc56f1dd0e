"""Latencies that hold under slow load changes: every probe timed against a reference network.

On a shared machine the load drifts: a probe taken while it is quiet and a check a minute
later can differ by 50 % for the same architecture, and no repeat inside the search sees it.
`ReferenceTimedDevice` times a fixed reference architecture right before and right after
each candidate and reports

    latency_ms = candidate / mean(reference before, reference after) * reference_ms,

with `reference_ms` the reference's median over `calibration` timings when the device is
first used. A load that scales every network alike and changes slowly against one probe
cancels (a linear change exactly, by the sandwich); what is left is the latency at the
calibration's load. Every probe also gets an interval: its timings' inter-quartile range
divided by the higher and the lower reference timing, so the drift between the two
reference timings widens it. The cost: two more measurements per probe.

`DriftingDevice` is the simulation the design is tested on: a latency table whose speed
follows a load that changes with every measurement.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices.host import Measurement

# The reference: a mid-cost architecture of every operation kind,
# |nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|.
DEFAULT_REFERENCE = searchspace.ops_to_index((3, 2, 1, 4, 2, 0))


class ReferenceTimedDevice:
  """`device` with each probe sandwiched between two timings of `reference`."""

  def __init__(self, device, reference: int = DEFAULT_REFERENCE, calibration: int = 3):
    if calibration < 1:
      raise ValueError(f"need at least one calibration timing, got {calibration}")
    self.device = device
    self.name = device.name
    self.reference = searchspace.check_index(reference)
    self.calibration = calibration
    self.reference_ms: float | None = None
    self.records: list[Measurement] = []
    self.intervals_ms: list[tuple[float, float]] = []  # one per record
    self.raw_ms: list[float] = []  # each candidate's own latency, before normalising

  def settings(self) -> dict[str, Any]:
    inner = self.device.settings() if hasattr(self.device, "settings") else {}
    return {**inner, "timing": "reference", "reference": self.reference,
            "calibration": self.calibration}

  @property
  def runtime(self) -> str:
    return getattr(self.device, "runtime", "") or self.settings().get("backend", "")

  def _measure(self, index: int, tag: str) -> float:
    return float(self.device.measure(index, tag=tag))

  def calibrate(self) -> float:
    """The reference's latency now: the unit every probe is expressed in."""
    if self.reference_ms is None:
      self.reference_ms = float(np.median([self._measure(self.reference, "reference")
                                           for _ in range(self.calibration)]))
    return self.reference_ms

  def measure(self, index: int, tag: str = "probe") -> float:
    index = searchspace.check_index(index)
    reference_ms = self.calibrate()
    # A check's references are its own ("check_reference"): a resumed search reads back
    # probes and their references, never the timings around a check.
    reference_tag = "reference" if tag == "probe" else f"{tag}_reference"
    before = self._measure(self.reference, reference_tag)
    candidate = self._measure(index, tag)
    after = self._measure(self.reference, reference_tag)
    latency_ms = candidate / (0.5 * (before + after)) * reference_ms
    inner = getattr(self.device, "records", None)
    record = inner[-2] if inner and len(inner) >= 2 else None
    spread = (0.0, 0.0) if record is None or math.isnan(record.iqr_ms) else (
        record.iqr_ms / 2, record.iqr_ms / 2)
    low = (candidate - spread[0]) / max(before, after) * reference_ms
    high = (candidate + spread[1]) / min(before, after) * reference_ms
    scale = latency_ms / candidate
    fields = ({} if record is None else dataclasses.asdict(record)) | {
        "index": index, "arch": searchspace.index_to_string(index), "latency_ms": latency_ms,
        "tag": tag}
    for key in ("iqr_ms", "std_ms", "min_ms", "max_ms"):
      fields[key] = fields.get(key, math.nan) * scale
    defaults = dict(repeats=1, build_s=0.0, compile_s=0.0, wall_s=0.0, reused_executable=False)
    self.records.append(Measurement(**(defaults | fields)))
    self.intervals_ms.append((low, high))
    self.raw_ms.append(candidate)
    return latency_ms


class DriftingDevice:
  """A table device whose speed follows `load(n)`, n the number of measurements so far:
  each measurement returns table[index] * load(n) (times log-normal noise of `sigma`)."""

  def __init__(self, latency_ms: np.ndarray, load: Callable[[int], float], sigma: float = 0.0,
               seed: int = 0, name: str = "drifting"):
    self.name = name
    self.latency_ms = np.asarray(latency_ms, np.float64)
    self.load = load
    self.sigma = sigma
    self.calls = 0
    self._rng = np.random.default_rng(seed)

  def measure(self, index: int, tag: str = "probe") -> float:
    del tag
    value = self.latency_ms[searchspace.check_index(index)] * self.load(self.calls)
    self.calls += 1
    return float(value * math.exp(self.sigma * self._rng.standard_normal()))
