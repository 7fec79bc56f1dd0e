"""A device is anything that can measure the latency (ms) of an architecture.

Tables, noisy tables, the local host and synthetic devices all fit this one protocol;
the search layer wraps whichever it is given in a probe budget.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Device(Protocol):
  name: str

  def measure(self, index: int) -> float:
    """Latency in ms of architecture `index` (NATS-Bench order); inf if it cannot run."""


class DeviceError(RuntimeError):
  """A device answered something that is not a latency (negative, NaN, not a number)."""
