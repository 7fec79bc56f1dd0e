"""What noisy probes say: the noise posterior, the confidence and the answer rule."""

import numpy as np
import pytest

from hwnas_jax.devices import noise


def _stats(indices, latencies, budget=1.0, slots=8):
  index = np.zeros(slots, np.int32)
  rel = np.zeros(slots, np.float32)
  index[:len(indices)] = indices
  rel[:len(indices)] = np.asarray(noise.log_rel(np.asarray(latencies), budget))
  return noise.probe_stats(index, rel, len(indices))


def test_no_repeat_leaves_the_prior_and_exact_repeats_find_no_noise():
  prior = _stats([1, 2, 3], [0.5, 0.9, 1.2])
  assert float(prior.df) == 0
  np.testing.assert_allclose(prior.sigma_weights, 1 / len(noise.SIGMA_GRID), rtol=1e-5)
  exact = _stats([1, 1, 2, 2], [0.9, 0.9, 0.7, 0.7])
  assert float(exact.df) == 2 and float(exact.sigma_mean) < 0.01
  # One exact repeat already makes a probe at 0.97 x budget confident.
  assert float(_stats([1, 1], [0.97, 0.97]).confidence[0]) > 0.97
  assert float(_stats([1], [0.97]).confidence[0]) < 0.9  # a single probe: noise unknown


def test_a_reading_at_the_budget_is_within_it_once_the_device_shows_it_is_exact():
  """A reading exactly at the budget (whole-ms phone tables put many networks there): 1/2
  under the continuous model however often it repeats, until EXACT_REPEATS repeats with no
  spread show the device exact; then within, as the protocol's <= counts it. Any spread,
  or one repeat short, keeps the continuous model; told the device is exact, one reading."""
  at_budget = 12.0
  assert float(_stats([1, 1, 1], [12.0] * 3, budget=at_budget).confidence[0]) == 1.0
  one_short = _stats([1, 1, 2], [12.0, 12.0, 9.0], budget=at_budget)
  assert float(one_short.confidence[0]) == pytest.approx(0.5)
  exact = _stats([2, 2, 1, 1], [9.0, 9.0, 12.0, 12.0], budget=at_budget)
  assert float(exact.confidence[2]) == 1.0 and float(exact.confidence[0]) == 1.0
  spread = _stats([2, 2, 1, 1], [9.0, 9.1, 12.0, 12.0], budget=at_budget)
  assert float(spread.confidence[2]) == pytest.approx(0.5)
  over = _stats([2, 2, 1, 1], [9.0, 9.0, 13.0, 13.0], budget=at_budget)
  assert float(over.confidence[2]) == 0.0
  proxy = np.zeros(100)
  proxy[[20, 30]] = [2.0, 3.0]
  assert noise.answer([20, 30], [0.6, 1.0], 1.0, proxy)[0] == 20
  assert noise.answer([20, 30], [0.6, 1.0], 1.0, proxy, noise_prior=0.0)[0] == 30
  # Repeats of a network that could not run (inf) show no spread on any device: no evidence
  # of exactness. Told the device's noise is 0.1 % (a careful timer), not that it is exact.
  cannot_run = noise.answer([5, 5, 5, 20, 30], [np.inf] * 3 + [0.5, 1.0], 1.0, proxy)
  assert cannot_run[0] == 20 and cannot_run[1].confidence[4] == pytest.approx(0.5)
  assert noise.answer([20, 30], [0.6, 1.0], 1.0, proxy, noise_prior=0.001)[0] == 20
  # Over the budget by less than float32 can tell (eyeriss's table against its own 10th
  # percentile): over, as the protocol's float64 comparison says, however exact the device.
  over_by_an_ulp = [3.399860000000001] * 3
  assert noise.answer([20, 20, 20], over_by_an_ulp, 3.3998600000000003, proxy)[0] is None
  assert noise.answer([20], over_by_an_ulp[:1], 3.3998600000000003, proxy,
                      noise_prior=0.0)[0] is None


def test_spread_of_repeats_estimates_sigma():
  rng = np.random.default_rng(0)
  sigma = 0.1
  archs = np.repeat(np.arange(6), 5)
  truth = rng.uniform(0.5, 2.0, 6)[archs]
  stats = _stats(archs, truth * np.exp(sigma * rng.standard_normal(archs.size)), slots=32)
  assert float(stats.df) == pytest.approx(24)
  assert 0.07 < float(stats.sigma_mean) < 0.14


def test_confidence_grows_with_distance_and_repeats():
  far, near, over = _stats([1, 1, 2, 2, 3, 3], [0.5, 0.55, 0.97, 1.0, 1.3, 1.25]).confidence[np.array([0, 2, 4])]
  assert far > 0.999 and 0.3 < near < 0.9 and over < 0.01


def test_answer_prefers_a_confirmed_architecture():
  proxy = np.zeros(100)
  proxy[[10, 20, 30]] = [1.0, 2.0, 3.0]
  # 30 (best proxy) measured once just under budget with noisy repeats elsewhere: not
  # confirmed; 20 measured twice well under: confirmed; 10 also confirmed but worse.
  indices = [10, 10, 20, 20, 30]
  latencies = [0.5, 0.56, 0.6, 0.66, 0.99]
  answer, stats = noise.answer(indices, latencies, 1.0, proxy)
  assert answer == 20
  assert stats.confidence[4] < noise.MIN_CONFIDENCE <= stats.confidence[2]
  # Nothing confirmed and neither likely enough (FALLBACK_CONFIDENCE): the most confident.
  answer, _ = noise.answer([30, 20], [0.99, 0.9], 1.0, proxy)
  assert answer == 20
  # Nothing within budget: no answer.
  assert noise.answer([30, 20], [1.1, float("inf")], 1.0, proxy)[0] is None


def test_fallback_answers_the_best_likely_probe_and_at_min_confidence_the_most_confident():
  proxy = np.zeros(100)
  proxy[[10, 20, 30]] = [1.0, 2.0, 3.0]
  # No repeats: nothing confirmed. 30 (best proxy) at 0.99 x budget, 20 at 0.85, 10 at 0.7.
  indices, latencies = [10, 20, 30], [0.7, 0.85, 0.99]
  _, stats = noise.answer(indices, latencies, 1.0, proxy)
  confidence = np.asarray(stats.confidence)
  assert confidence[0] > confidence[1] > confidence[2] and confidence.max() < noise.MIN_CONFIDENCE
  at = lambda c: noise.answer(indices, latencies, 1.0, proxy, fallback_confidence=c)[0]
  assert at(noise.MIN_CONFIDENCE) == at(1.0) == 10  # the most confident
  assert at(float(confidence[1])) == 20  # the best proxy that reaches the threshold
  assert at(0.5) == 30  # any probe within budget
  # A confirmed answer wins over any fallback, and a probe over budget is never one.
  assert noise.answer([10, 10, 30], [0.5, 0.5, 0.99], 1.0, proxy, fallback_confidence=0.5)[0] == 10
  assert noise.answer([30, 20], [1.01, 0.9], 1.0, proxy, fallback_confidence=0.0)[0] == 20


def test_inf_is_far_over_and_never_an_answer():
  stats = _stats([4, 4], [float("inf"), float("inf")])
  assert float(stats.confidence[0]) == pytest.approx(0.0, abs=1e-6)
  assert not bool(stats.any_within[0])


def test_noise_prior_is_parsed_and_malformed_ones_are_refused():
  assert noise.checked_noise_prior(None) is None
  assert noise.checked_noise_prior("0.05") == (0.05, 0.05)
  assert noise.checked_noise_prior("0.02:0.1") == (0.02, 0.1)
  assert noise.checked_noise_prior((0, 0.1)) == (0.0, 0.1)
  for bad in ("abc", "-0.1", "0.2:0.1", "1:2:3", "", float("nan"), float("inf"), True, (1, 2, 3)):
    with pytest.raises(ValueError, match="noise prior"):
      noise.checked_noise_prior(bad)


def test_noise_prior_keeps_the_grid_inside_its_range():
  allowed = noise.sigma_log_prior("0.02:0.1") == 0
  assert np.all(noise.SIGMA_GRID[allowed] >= 0.02) and np.all(noise.SIGMA_GRID[allowed] <= 0.1)
  assert allowed.sum() > 1
  # No grid point inside: the nearest one (sigma 0 is the grid's smallest, 0.5 its largest);
  # sigma 0, below the whole grid, also carries the mark of an exact device.
  exact = noise.sigma_log_prior(0)
  assert np.flatnonzero(exact > noise.RULED_OUT / 2).tolist() == [0]
  assert exact[0] == noise.EXACT_MARK and noise.sigma_log_prior(0.001)[0] == 0
  assert np.flatnonzero(noise.sigma_log_prior(0.5) == 0).tolist() == [len(noise.SIGMA_GRID) - 1]
  assert np.all(noise.sigma_log_prior(None) == 0)


def test_a_known_exact_device_trusts_a_single_probe():
  proxy = np.zeros(100)
  proxy[[20, 30]] = [2.0, 3.0]
  # 30 measured once at 0.99 x budget: unknown noise cannot confirm it, the most confident
  # probe (20) is the answer; told the device is exact, 30 is confirmed by its one probe.
  assert noise.answer([20, 30], [0.6, 0.99], 1.0, proxy)[0] == 20
  answer, stats = noise.answer([20, 30], [0.6, 0.99], 1.0, proxy, noise_prior=0.0)
  assert answer == 30 and stats.confidence[1] >= noise.MIN_CONFIDENCE
  # Told the device is very noisy, even 0.75 x budget is no confirmation from one probe.
  _, stats = noise.answer([20, 30], [0.75, 0.99], 1.0, proxy, noise_prior="0.3")
  assert stats.confidence[0] < noise.MIN_CONFIDENCE


def test_at_k3_on_a_known_exact_device_the_answer_is_the_best_single_probe():
  """Three probes, no repeats: told the device is exact, the rule answers the best-proxy
  probe measured within budget, as a rule trusting single probes would; it never gives one
  away to wait for a confirmation it cannot afford. The one exception is the noise grid's
  floor: sigma 0.001 leaves a probe within 0.2 % under the budget short of confirmed."""
  rng = np.random.default_rng(0)
  proxy = rng.normal(size=100)
  floor = np.exp(-2 * noise.SIGMA_GRID[0])
  checked = 0
  for _ in range(300):
    indices = rng.choice(100, 3, replace=False).tolist()
    latencies = rng.uniform(0.5, 1.5, 3).tolist()
    if any(floor < latency <= 1.0 for latency in latencies):
      continue
    within = [i for i, latency in zip(indices, latencies) if latency <= 1.0]
    best = max(within, key=lambda i: proxy[i]) if within else None
    assert noise.answer(indices, latencies, 1.0, proxy, noise_prior=0.0)[0] == best
    checked += 1
  assert checked > 250


def test_answer_study_chooses_by_its_stated_rule():
  from experiments import answer_study  # pylint: disable=g-import-not-at-top
  m = noise.MIN_CONFIDENCE
  row = lambda c, acc, feasible, k=3: dict(method="lsq", probes=k, noise=0.2, fallback=c,
                                           mean_accuracy=acc, feasible_rate=feasible)
  # 0.5 is the most accurate but loses 0.05 of feasibility in one cell: excluded.
  rows = [row(m, 50, 0.95), row(0.8, 55, 0.94), row(0.5, 60, 0.90),
          row(m, 60, 1.0, 10), row(0.8, 60, 0.99, 10), row(0.5, 60, 1.0, 10)]
  chosen, verdict = answer_study.choose(rows, [0.5, 0.8, m])
  assert chosen == 0.8 and not verdict[0.5]["meets"] and verdict[m]["meets"]
  # Equal means: the more cautious threshold, the rule in force.
  assert answer_study.choose([row(m, 50, 1.0), row(0.5, 50, 1.0)], [0.5, m])[0] == m
  # Runs over disjoint devices combine into one, weighted by their episodes.
  a, b = row(m, 50, 1.0), row(m, 80, 0.5)
  a["episodes"], b["episodes"] = 3, 1
  (combined,) = answer_study.combine([[a], [b]])
  assert combined["mean_accuracy"] == 57.5 and combined["feasible_rate"] == 0.875
  assert combined["episodes"] == 4
  with pytest.raises(ValueError, match="differ in their methods, K, sigmas or thresholds"):
    answer_study.combine([[a], [row(0.8, 50, 1.0)]])
