"""The protocol of PROTOCOL.md where it lives: validity, scores, per-cell seeding, noisy devices.

Small hand-made benchmarks (no bundle needed), so every rule is checked on numbers one can
work out by hand.
"""

import numpy as np
import pytest

from hwnas_jax.benchmark import searchspace
from hwnas_jax.benchmark.tables import Benchmark
from hwnas_jax.devices.interface import DeviceError
from hwnas_jax.devices.table import NoisyTableDevice, TableDevice
from hwnas_jax.search import interface
from hwnas_jax.search import protocol

N = searchspace.NUM_ARCHS


def _benchmark(latency=None):
  rng = np.random.default_rng(0)
  latency = np.linspace(1.0, 2.0, N) if latency is None else latency
  proxies = {"naswot": rng.normal(size=N), "logsynflow": rng.normal(size=N),
             "skip": rng.uniform(size=N)}
  return Benchmark(latency_ms={"toy": latency}, test_accuracy={"cifar10": np.arange(N) / N * 100},
                   proxies={"cifar10": proxies})


def _probe(indices):
  """A method that probes `indices` in order and answers the last one."""

  def method(task, target, rng):
    del task, rng
    for i in indices:
      target.measure(i)
    return indices[-1]

  return method


def test_answer_must_be_measured_within_budget():
  latency = np.full(N, 5.0)
  latency[[3, 4]] = [1.0, 9.0]
  device = TableDevice("toy", latency)
  accuracy = np.arange(N, dtype=float)
  task = interface.Task("cifar10", 2.0, 3, np.zeros(N))
  rng = np.random.default_rng(0)
  assert protocol.run_episode(_probe([3]), task, device, accuracy, rng) == (3.0, True)
  assert protocol.run_episode(_probe([4]), task, device, accuracy, rng) == (0.0, False)  # over
  unmeasured = lambda task, target, rng: 3  # never measured: worth nothing
  assert protocol.run_episode(unmeasured, task, device, accuracy, rng) == (0.0, False)
  nothing = lambda task, target, rng: None
  assert protocol.run_episode(nothing, task, device, accuracy, rng) == (0.0, False)


def test_lucky_probe_of_an_over_budget_architecture_is_invalid():
  """On a noisy device a probe can land under the budget while the true latency is over."""
  latency = np.full(N, 1.10)  # every architecture 10 % over a budget of 1 ms
  lucky = next(seed for seed in range(1000)
               if NoisyTableDevice("toy", latency, 0.2, np.random.default_rng(seed)).measure(0) <= 1.0)
  device = NoisyTableDevice("toy", latency, 0.2, np.random.default_rng(lucky))
  task = interface.Task("cifar10", 1.0, 1, np.zeros(N))
  score, valid = protocol.run_episode(_probe([0]), task, device, np.ones(N), np.random.default_rng(0))
  assert (score, valid) == (0.0, False)


def test_noisy_draws_are_reproducible_and_shared_across_methods():
  bench = _benchmark()
  budget = protocol.percentile_budget(bench.latency("toy"), 50)
  seen = {}

  def recording(name):
    def method(task, target, rng):
      rng.random(5 if name == "a" else 1)  # the methods' own draws differ ...
      seen[name] = [target.measure(i) for i in (7, 7, 9)]  # ... the device's do not
      return 7
    return method

  for name in ("a", "b"):
    protocol.evaluate_cell(name, [recording(name)], bench, "toy", "cifar10", budget, 3, 1,
                           seed=0, noise=0.1, isolated=False)
  assert seen["a"] == seen["b"]
  assert seen["a"][0] != seen["a"][1]  # a repeat is a fresh draw
  true = bench.latency("toy")
  np.testing.assert_allclose(np.log(np.array(seen["a"]) / true[[7, 7, 9]]).std() > 0, True)
  first = list(seen["a"])
  protocol.evaluate_cell("a", [recording("a")], bench, "toy", "cifar10", budget, 3, 1, seed=1,
                         noise=0.1, isolated=False)
  assert seen["a"] != first  # another seed, other draws
  protocol.evaluate_cell("a", [recording("a")], bench, "toy", "cifar10", budget, 3, 1, seed=0,
                         noise=0.0, isolated=False)
  np.testing.assert_array_equal(seen["a"], true[[7, 7, 9]])  # sigma 0: the table itself


def test_repeats_cost_probes_and_the_limit_cannot_be_caught():
  device = TableDevice("toy", np.ones(N))
  task = interface.Task("cifar10", 2.0, 3, np.zeros(N))
  accuracy = np.ones(N)
  rng = np.random.default_rng(0)
  with pytest.raises(interface.ProbeLimitExceeded):
    protocol.run_episode(_probe([5, 5, 5, 5]), task, device, accuracy, rng)

  def stubborn(task, target, rng):
    for i in range(10):
      try:
        target.measure(i)
      except interface.ProbeLimitExceeded:
        pass
    return 0

  with pytest.raises(interface.ProbeLimitExceeded, match="went on after being refused"):
    protocol.run_episode(stubborn, task, device, accuracy, rng)


def test_a_method_holds_only_name_and_measure():
  budget = interface.ProbeBudget(TableDevice("toy", np.ones(N)), 2)
  handle = budget.handle
  assert handle.name == "toy"
  assert not hasattr(handle, "latency_ms") and not hasattr(handle, "device")
  with pytest.raises(AttributeError):
    handle.measure = lambda index: 0.0


@pytest.mark.parametrize("value", [-1.0, 0.0, float("nan"), "3", None, True])
def test_a_latency_that_is_not_one_is_a_device_error(value):
  class Broken:
    name = "broken"

    def measure(self, index):
      return value

  budget = interface.ProbeBudget(Broken(), 2)
  with pytest.raises(DeviceError, match="broken"):
    budget.handle.measure(0)
  assert budget.probes == []


def test_cell_scores_and_episode_seeds():
  bench = _benchmark()
  budget = protocol.percentile_budget(bench.latency("toy"), 25)
  assert budget.budget_ms == pytest.approx(np.percentile(bench.latency("toy"), 25))
  row = protocol.evaluate_cell("oracle", None, bench, "toy", "cifar10", budget, 10, 4, seed=0)
  feasible = bench.latency("toy") <= budget.budget_ms
  assert row["mean_accuracy"] == row["oracle_accuracy"] == bench.accuracy("cifar10")[feasible].max()
  assert row["mean_regret"] == 0 and row["feasible_rate"] == 1
  # A method's episodes: each its own rng, the same for every method.
  draws = []
  record = lambda task, target, rng: draws.append(rng.integers(1 << 30)) or None
  protocol.evaluate_cell("x", [record], bench, "toy", "cifar10", budget, 1, 3, seed=0,
                         isolated=False)
  protocol.evaluate_cell("y", [record], bench, "toy", "cifar10", budget, 1, 3, seed=0,
                         isolated=False)
  assert draws[:3] == draws[3:] and len(set(draws[:3])) == 3


def test_seeds_are_averaged_with_their_spread():
  bench = _benchmark()
  budget = protocol.Budget(1.5)
  cheap = int(np.argmax(bench.latency("toy") <= 1.5))
  good = _probe([cheap])
  bad = lambda task, target, rng: None
  row = protocol.evaluate_cell("c", [good, bad], bench, "toy", "cifar10", budget, 1, 2, seed=0,
                               isolated=False)
  expected = bench.accuracy("cifar10")[cheap]
  assert row["seeds"] == 2 and row["seed_mean_accuracy"] == [expected, 0.0]
  assert row["mean_accuracy"] == pytest.approx(expected / 2)
  summary = protocol.summarize([row])["c"]
  assert summary["mean_accuracy_seed_std"] == pytest.approx(expected / 2)


def test_a_known_noise_level_changes_what_lsq_does_and_is_recorded():
  """Told the noise (`Task.noise_prior`), lsq spends no repeat to learn it; the harness
  tells every method the cell's sigma with `noise_prior="known"` and records it."""
  from hwnas_jax.search import baselines  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(1)
  latency = rng.uniform(1.0, 3.0, N)
  proxy = rng.normal(size=N)

  def probes(sigma, noise_prior):
    device = interface.ProbeBudget(
        NoisyTableDevice("toy", latency, sigma=sigma, rng=np.random.default_rng(0)), 8)
    task = interface.Task("cifar10", 2.0, 8, proxy, noise_prior=noise_prior)
    baselines.least_squares(task, device.handle, np.random.default_rng(0))
    return [p.index for p in device.probes]

  # An exact device: unknown, lsq re-measures a probe near the budget to learn the noise;
  # known, it trusts single probes and spends all 8 on different architectures.
  assert len(set(probes(0.0, None))) < 8 and len(set(probes(0.0, 0.0))) == 8
  assert probes(0.02, None) != probes(0.02, 0.02)
  bench = _benchmark()
  cell = protocol.evaluate_cell("lsq", [baselines.least_squares], bench, "toy", "cifar10",
                                protocol.percentile_budget(bench.latency("toy"), 50), 4, 1, 0,
                                noise=0.05, proxy="mean:naswot", isolated=False,
                                noise_prior=protocol.KNOWN_NOISE)
  assert cell["noise_prior"] == (0.05, 0.05)
  with pytest.raises(ValueError, match="noise prior"):
    protocol.task_noise_prior("0.1:0.05", 0.0)
