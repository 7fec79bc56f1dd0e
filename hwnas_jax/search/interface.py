"""The method interface: what a search method is told, what it may touch, and the answer rule.

A method is `method(task, target, rng) -> index | None`. It may look at the task's proxy of
any architecture for free and spends latency probes through `target.measure`. `target` is
a `ProbeHandle`: the target's name and `measure`, nothing else, so no method can reach the
latency table behind it. The harness keeps the `ProbeBudget` that hands it out; the budget
counts and records every probe, refuses the K+1-th, and decides validity from its record,
never from what a method claims. `None` means "no architecture found" and scores 0.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable

import numpy as np

from hwnas_jax.benchmark import searchspace
from hwnas_jax.benchmark import tables
from hwnas_jax.devices import noise
from hwnas_jax.devices.interface import Device, DeviceError


@dataclasses.dataclass(frozen=True)
class Task:
  """What a method is told: the budget in ms (never its percentile), K, and the proxy.

  `latency_range_ms`, the target table's fastest and slowest latency, is given only to a
  method that declares `reads_table_range` (the paper-faithful controller, as the authors'
  code read it); every other method gets None. `noise_prior`, the device's probe noise
  when it is known (a (lowest, highest) sigma, `noise.checked_noise_prior`), lets a method
  trust a single probe on an exact device; None, the headline protocol, tells nothing.
  """
  dataset: str
  budget_ms: float
  num_probes: int
  proxy: np.ndarray  # (15625,) accuracy proxy, free of charge
  latency_range_ms: tuple[float, float] | None = None
  noise_prior: tuple[float, float] | None = None

  def __post_init__(self):
    """Checked once here, where every harness and method meets it: a NaN budget or a proxy
    of the wrong shape would otherwise run and give answers that mean nothing."""
    object.__setattr__(self, "budget_ms", checked_budget_ms(self.budget_ms))
    object.__setattr__(self, "num_probes", checked_num_probes(self.num_probes))
    object.__setattr__(self, "noise_prior", noise.checked_noise_prior(self.noise_prior))
    try:
      proxy = np.asarray(self.proxy, dtype=np.float64)
    except (TypeError, ValueError) as error:
      raise ValueError(f"task proxy is not numeric: {error}") from None
    if proxy.shape != (searchspace.NUM_ARCHS,):
      raise ValueError(f"task proxy must hold one value per architecture, shape "
                       f"({searchspace.NUM_ARCHS},), got shape {proxy.shape}")
    bad = ~np.isfinite(proxy)
    if bad.any():
      raise ValueError(f"task proxy has {int(bad.sum())} non-finite values, first at index "
                       f"{int(np.argmax(bad))}")
    object.__setattr__(self, "proxy", tables.frozen(proxy))  # one task serves many episodes


class ProbeHandle:
  """The target as a method sees it: its `name` and `measure(index) -> ms`, nothing more."""
  __slots__ = ("name", "measure")

  def __init__(self, name: str, measure: Callable[[int], float]):
    object.__setattr__(self, "name", name)
    object.__setattr__(self, "measure", measure)

  def __setattr__(self, key, value):
    raise AttributeError("a probe handle is read-only")

  def __repr__(self) -> str:
    return f"ProbeHandle({self.name!r})"


Method = Callable[[Task, ProbeHandle, np.random.Generator], "int | None"]


class ProbeLimitExceeded(RuntimeError):
  """A method asked for more latency probes than its budget K."""


@dataclasses.dataclass(frozen=True)
class Probe:
  index: int
  latency_ms: float


def checked_num_probes(num_probes) -> int:
  """K as an int; ValueError unless a whole number in [1, the size of the space] (with
  K = 2.5 nothing would stop; past the space a method's cost grows for nothing)."""
  if (isinstance(num_probes, bool) or not isinstance(num_probes, numbers.Real)
      or not float(num_probes).is_integer() or not 1 <= num_probes <= searchspace.NUM_ARCHS):
    raise ValueError(f"num_probes must be a whole number in [1, {searchspace.NUM_ARCHS}] (the "
                     f"size of the space), got {num_probes!r}")
  return int(num_probes)


def checked_budget_ms(budget_ms, what: str = "budget_ms") -> float:
  """A latency budget as float ms: a finite number > 0 (NaN compares false with every
  latency, inf makes every answer valid: neither is a budget)."""
  if (isinstance(budget_ms, (bool, np.bool_)) or not isinstance(budget_ms, numbers.Real)
      or not math.isfinite(budget_ms) or budget_ms <= 0):
    raise ValueError(f"{what} must be a finite number of ms > 0, got {budget_ms!r}")
  return float(budget_ms)


def checked_answer(answer) -> int | None:
  """A method's answer: None or an architecture index; anything else is the method's bug,
  said as such rather than scored."""
  if answer is None:
    return None
  try:
    return searchspace.check_index(answer)
  except (TypeError, IndexError) as error:
    raise ValueError(f"the method returned {answer!r}, not an architecture index in "
                     f"[0, {searchspace.NUM_ARCHS}) or None ({error})") from None


def checked_latency(device_name: str, index: int, value) -> float:
  """A device's answer as float ms: positive, or inf (cannot run); anything else is a
  `DeviceError`, never a latency that could make an answer valid."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.ndarray)):
    raise DeviceError(f"device {device_name!r} returned {value!r} for architecture {index}, "
                      "not a latency in ms")
  try:
    latency_ms = float(value)
  except (TypeError, ValueError):
    raise DeviceError(f"device {device_name!r} returned {value!r} for architecture {index}, "
                      "not a latency in ms") from None
  if math.isnan(latency_ms) or latency_ms <= 0:
    raise DeviceError(f"device {device_name!r} returned {latency_ms!r} ms for architecture "
                      f"{index}: a latency is positive (inf: cannot run)")
  return latency_ms


class ProbeBudget:
  """The harness's side of a target: at most `num_probes` measurements, each one recorded.

  Methods get `handle`, never this object. A method that asks for probe K+1 gets
  `ProbeLimitExceeded` and the budget remembers it (`exceeded`): catching the error does
  not make the episode count.
  """

  def __init__(self, device: Device, num_probes: int):
    if not isinstance(device, Device):
      raise TypeError(f"{device!r} is not a device: it needs a `name` and `measure(index)`")
    self.num_probes = checked_num_probes(num_probes)
    self.name = device.name
    self.probes: list[Probe] = []
    self.exceeded = False
    measure = device.measure  # the device itself stays out of reach of the handle's holder
    name = device.name

    def budgeted_measure(index) -> float:
      if len(self.probes) >= self.num_probes:
        self.exceeded = True
        raise ProbeLimitExceeded(
            f"probe {len(self.probes) + 1} on {name!r} exceeds the budget of "
            f"{self.num_probes} latency probes")
      index = searchspace.check_index(index)
      latency_ms = checked_latency(name, index, measure(index))
      self.probes.append(Probe(index, latency_ms))
      return latency_ms

    self.handle = ProbeHandle(name, budgeted_measure)

  @property
  def remaining(self) -> int:
    return self.num_probes - len(self.probes)

  def is_valid(self, index: int | None, budget_ms: float) -> bool:
    """The protocol's validity rule: the answer was measured, within the budget.

    A measurement of inf (the device cannot run it) is never within budget, not even
    an infinite one.
    """
    return index is not None and any(
        p.index == index and np.isfinite(p.latency_ms) and p.latency_ms <= budget_ms
        for p in self.probes)


def best_valid(probed: dict[int, float], proxy: np.ndarray, budget_ms: float) -> int | None:
  """The answer rule shared by every method: best proxy among the measured-feasible."""
  valid = [i for i, latency_ms in probed.items() if latency_ms <= budget_ms]
  return max(valid, key=lambda i: proxy[i]) if valid else None
