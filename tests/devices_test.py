"""Tests of hwnas_jax.devices: table devices, the K-probe limit and the validity rule."""

import numpy as np
import pytest

from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices.interface import Device
from hwnas_jax.devices.table import TableDevice
from hwnas_jax.search.interface import Probe, ProbeBudget, ProbeLimitExceeded

N = searchspace.NUM_ARCHS


@pytest.fixture
def table():
  latency = np.arange(1, N + 1, dtype=np.float64) / 1000.0  # architecture i takes (i+1) us
  latency[7] = np.nan  # a device that cannot run architecture 7
  return TableDevice("toy", latency)


def test_table_device_measures_its_table(table):
  assert isinstance(table, Device)
  assert table.measure(0) == 0.001
  assert table.measure(np.int64(41)) == pytest.approx(0.042)
  assert table.measure(7) == float("inf")  # NaN: cannot run, never a latency
  with pytest.raises(IndexError, match="outside"):
    table.measure(N)
  with pytest.raises(IndexError, match="outside"):
    table.measure(-1)  # never wraps around to the last architecture
  with pytest.raises(TypeError, match="must be an integer"):
    table.measure(2.5)  # never truncated to architecture 2


@pytest.mark.parametrize("num_probes", [1, 3, 10])
def test_probe_budget_allows_exactly_k_probes(table, num_probes):
  budget = ProbeBudget(table, num_probes)
  assert isinstance(budget.handle, Device) and budget.handle.name == "toy"
  for i in range(num_probes):
    assert budget.remaining == num_probes - i
    assert budget.handle.measure(100 + i) == table.measure(100 + i)
  assert budget.remaining == 0
  with pytest.raises(ProbeLimitExceeded,
                     match=f"probe {num_probes + 1} on 'toy' exceeds the budget of {num_probes}"):
    budget.handle.measure(5)
  assert len(budget.probes) == num_probes  # the refused probe is not recorded
  with pytest.raises(ProbeLimitExceeded):  # and it stays refused
    budget.handle.measure(6)


def test_probe_budget_records_every_probe_in_order(table):
  budget = ProbeBudget(table, 5)
  budget.handle.measure(3)
  budget.handle.measure(np.int32(7))
  budget.handle.measure(3)  # measuring again costs a probe too
  assert budget.probes == [Probe(3, 0.004), Probe(7, float("inf")), Probe(3, 0.004)]
  assert all(type(p.index) is int for p in budget.probes)
  assert budget.remaining == 2


def test_bad_index_does_not_consume_a_probe(table):
  budget = ProbeBudget(table, 1)
  with pytest.raises(IndexError):
    budget.handle.measure(N)
  assert budget.probes == [] and budget.remaining == 1
  budget.handle.measure(0)
  assert budget.remaining == 0


@pytest.mark.parametrize("num_probes", [0, -1, 2.5, True])
def test_probe_budget_rejects_bad_k(table, num_probes):
  # 2.5 used to be accepted, and `remaining` then never reached 0: no limit at all.
  with pytest.raises(ValueError, match=r"num_probes must be a whole number in \[1, 15625\]"):
    ProbeBudget(table, num_probes)


def test_probe_budget_accepts_whole_number_k(table):
  budget = ProbeBudget(table, np.float64(2.0))  # e.g. from a config file
  assert budget.num_probes == 2 and isinstance(budget.num_probes, int)
  budget.handle.measure(0)
  budget.handle.measure(1)
  with pytest.raises(ProbeLimitExceeded):
    budget.handle.measure(2)


def test_is_valid_rule(table):
  budget = ProbeBudget(table, 10)
  budget.handle.measure(10)  # 0.011 ms
  budget.handle.measure(20)  # 0.021 ms
  budget.handle.measure(7)   # cannot run: inf
  # Unmeasured: invalid, even though its table latency is within budget.
  assert not budget.is_valid(5, budget_ms=1.0)
  # Measured over budget: invalid; measured within (boundary included): valid.
  assert not budget.is_valid(20, budget_ms=0.015)
  assert budget.is_valid(10, budget_ms=0.015)
  assert budget.is_valid(10, budget_ms=0.011)
  assert budget.is_valid(np.int64(20), budget_ms=0.021)
  # A device that cannot run it is never within budget; no answer is never valid.
  assert not budget.is_valid(7, budget_ms=float("inf"))
  assert not budget.is_valid(None, budget_ms=1.0)
  assert not budget.is_valid(10, budget_ms=float("nan"))


def test_is_valid_reads_the_record_not_the_table(table):
  class Drifting:
    """A live device whose second measurement of the same architecture is slower."""
    name = "live"

    def __init__(self):
      self.calls = 0

    def measure(self, index):
      self.calls += 1
      return 1.0 if self.calls == 1 else 3.0

  budget = ProbeBudget(Drifting(), 2)
  budget.handle.measure(4)
  assert budget.is_valid(4, budget_ms=2.0)
  budget.handle.measure(4)
  assert [p.latency_ms for p in budget.probes] == [1.0, 3.0]
  assert budget.is_valid(4, budget_ms=2.0)  # one measurement within budget suffices
  assert not budget.is_valid(4, budget_ms=0.5)
