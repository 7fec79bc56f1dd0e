"""Devices: anything that can measure the latency (ms) of an architecture.

A search method only ever sees a device through `measure(index)`. The harness wraps the
target in `ProbeBudget`, which counts and records every probe and refuses the K+1-th;
validity is decided from that record, never from what a method claims.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import numpy as np

from hwnas_jax import searchspace


@runtime_checkable
class Device(Protocol):
  name: str

  def measure(self, index: int) -> float:
    """Latency in ms of architecture `index` (NATS-Bench order); inf if it cannot run."""


class ProbeLimitExceeded(RuntimeError):
  """A method asked for more latency probes than its budget K."""


@dataclasses.dataclass
class TableDevice:
  """A device whose measurements come from a latency table (one benchmark device)."""
  name: str
  latency_ms: np.ndarray

  def measure(self, index: int) -> float:
    value = float(self.latency_ms[searchspace.check_index(index)])
    return float("inf") if np.isnan(value) else value  # NaN: the device cannot run it


@dataclasses.dataclass(frozen=True)
class Probe:
  index: int
  latency_ms: float


class ProbeBudget:
  """Wraps a device: at most `num_probes` calls of `measure`, each one recorded."""

  def __init__(self, device: Device, num_probes: int):
    # A whole number: with K = 2.5, `remaining` would never reach 0 and never stop a method.
    if isinstance(num_probes, bool) or not float(num_probes).is_integer() or num_probes < 1:
      raise ValueError(f"num_probes must be a whole number >= 1, got {num_probes!r}")
    self.device = device
    self.name = device.name
    self.num_probes = int(num_probes)
    self.probes: list[Probe] = []

  @property
  def remaining(self) -> int:
    return self.num_probes - len(self.probes)

  def measure(self, index: int) -> float:
    if self.remaining <= 0:
      raise ProbeLimitExceeded(
          f"probe {len(self.probes) + 1} on {self.name!r} exceeds the budget of "
          f"{self.num_probes} latency probes")
    index = searchspace.check_index(index)
    latency_ms = float(self.device.measure(index))
    self.probes.append(Probe(index, latency_ms))
    return latency_ms

  def is_valid(self, index: int | None, budget_ms: float) -> bool:
    """The protocol's validity rule: the answer was measured, within the budget.

    A measurement of inf (the device cannot run it) is never within budget, not even
    an infinite one.
    """
    return index is not None and any(
        p.index == index and np.isfinite(p.latency_ms) and p.latency_ms <= budget_ms
        for p in self.probes)
