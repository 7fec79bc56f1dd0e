"""Tests of hwnas_jax.host: the local machine as a latency device.

Timings on a shared CPU are noisy, so the checks compare with generous factors: they
catch a broken measurement (zero, compile time leaking in, no work done), not jitter.
"""

import numpy as np
import pytest

from hwnas_jax.devices import host
from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices.interface import Device
from hwnas_jax.search.interface import ProbeBudget, ProbeLimitExceeded

TINY = dict(channels=4, num_cells=1, image_size=8, repeats=15, warmup=3)
MIXED = searchspace.ops_to_index((3, 1, 2, 4, 3, 1))


def uniform(op_name):
  return searchspace.ops_to_index([searchspace.OPS.index(op_name)] * searchspace.NUM_EDGES)


@pytest.fixture(scope="module")
def tiny():
  return host.HostDevice(**TINY)


def test_summarize_times_median_and_spread():
  stats = host.summarize_times(np.array([1, 2, 3, 4, 5]) * 1e-3)
  assert stats == pytest.approx({"latency_ms": 3.0, "iqr_ms": 2.0, "std_ms": np.sqrt(2.0),
                                 "min_ms": 1.0, "max_ms": 5.0})


def test_is_a_device_with_settings(tiny):
  assert isinstance(tiny, Device)
  settings = tiny.settings()
  assert settings["image_size"] == 8 and settings["channels"] == 4
  assert settings["backend"] == "cpu" or settings["backend"] in ("gpu", "tpu")


def test_rejects_unknown_dataset_and_bad_repeats():
  with pytest.raises(ValueError, match="unknown dataset"):
    host.HostDevice(dataset="mnist", **TINY)
  with pytest.raises(ValueError, match="repeats"):
    host.HostDevice(**{**TINY, "repeats": 0})


def test_latency_positive_repeatable_and_recorded(tiny):
  first = tiny.measure(MIXED)
  second = tiny.measure(MIXED, tag="check")
  probe, check = tiny.records[-2:]
  assert first > 0 and second > 0
  assert (probe.latency_ms, check.latency_ms) == (first, second)
  # The first measurement compiles (excluded from the latency); the re-measurement reuses the
  # executable but times it again.
  assert not probe.reused_executable and probe.compile_s > 0
  assert first < 1e3 * probe.compile_s
  assert check.reused_executable and check.compile_s == 0 and check.tag == "check"
  for r in (probe, check):
    assert r.index == MIXED and r.repeats == TINY["repeats"]
    assert r.min_ms <= r.latency_ms <= r.max_ms and r.iqr_ms >= 0 and r.std_ms >= 0
  assert max(first, second) / min(first, second) < 5  # within the noise of a shared CPU


def test_probe_budget_enforces_k_on_the_host(tiny):
  budgeted = ProbeBudget(tiny, 2)
  before = len(tiny.records)
  budgeted.handle.measure(uniform("skip_connect"))
  budgeted.handle.measure(MIXED)
  with pytest.raises(ProbeLimitExceeded):
    budgeted.handle.measure(uniform("none"))
  assert [p.index for p in budgeted.probes] == [r.index for r in tiny.records[before:]]


def test_larger_network_is_slower_than_skip_and_none():
  device = host.HostDevice(channels=16, num_cells=2, image_size=16, repeats=10, warmup=2)
  conv = device.measure(uniform("nor_conv_3x3"))
  skip = device.measure(uniform("skip_connect"))
  none = device.measure(uniform("none"))
  assert conv > 2 * skip and conv > 2 * none, (conv, skip, none)


def test_late_checks_wait_until_each_answer_is_due():
  """experiments.host_study checks each answer once more `after_s` after its search: not
  earlier (the load has not had time to change), and every one by the end."""
  from experiments import host_study  # pylint: disable=import-outside-toplevel

  class Clock:
    now = 100.0

    def __call__(self):
      return self.now

    def sleep(self, seconds):
      self.now += seconds

  class Device:
    def __init__(self):
      self.measured = []

    def measure(self, index, tag=None):
      self.measured.append((index, tag))
      return 2.0 if index == 7 else 4.0

  clock, device = Clock(), Device()
  rows = [{"index": 7}, {"index": 9}, {"index": None}]
  pending = [(40.0, device, rows[0]), (90.0, device, rows[1]), (95.0, device, rows[2])]
  pending = host_study.run_late_checks(pending, 60.0, 3.0, clock=clock, sleep=clock.sleep)
  assert device.measured == [(7, "check")] and len(pending) == 2
  assert rows[0]["late_within_budget"] and rows[0]["late_age_s"] == 60.0
  host_study.run_late_checks(pending, 60.0, 3.0, wait=True, clock=clock, sleep=clock.sleep)
  assert device.measured == [(7, "check"), (9, "check")]
  assert clock.now == 155.0 and rows[1]["late_age_s"] == 60.0
  assert not rows[1]["late_within_budget"] and rows[2]["late_ms"] is None
