"""Devices backed by a latency table: the benchmark's real devices, exact or noisy.

A table holds each architecture's true median latency. `TableDevice` returns it as it is;
`NoisyTableDevice` returns it times log-normal noise drawn afresh at every call from its
own generator (PROTOCOL.md, "Noisy devices"), so every method of a cell, given a generator
seeded alike, faces the same stream of draws. Both expose `true_latency_ms` for the harness's
validity check, which no method ever sees.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hwnas_jax.benchmark import searchspace


@dataclasses.dataclass
class TableDevice:
  """A device whose measurements come from a latency table (one benchmark device)."""
  name: str
  latency_ms: np.ndarray

  def true_latency_ms(self, index: int) -> float:
    value = float(self.latency_ms[searchspace.check_index(index)])
    return float("inf") if np.isnan(value) else value  # NaN: the device cannot run it

  def measure(self, index: int) -> float:
    return self.true_latency_ms(index)


@dataclasses.dataclass
class NoisyTableDevice(TableDevice):
  """`table[index] * exp(sigma * eps)`, eps ~ N(0, 1) from `rng`, fresh at every call."""
  sigma: float = 0.0
  rng: np.random.Generator = dataclasses.field(default_factory=np.random.default_rng)

  def __post_init__(self):
    if not (np.isfinite(self.sigma) and self.sigma >= 0):
      raise ValueError(f"noise sigma must be finite and >= 0, got {self.sigma!r}")

  def measure(self, index: int) -> float:
    latency_ms = self.true_latency_ms(index)
    return latency_ms * float(np.exp(self.sigma * self.rng.standard_normal()))
