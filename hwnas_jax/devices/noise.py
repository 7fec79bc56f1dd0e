"""What a handful of noisy probes say about a device's noise and an architecture's latency.

A real device never returns the same latency twice: a probe is the true (median) latency
times log-normal noise, `L * exp(sigma * eps)`, with sigma unknown to the searcher. Only
repeated probes of one architecture separate noise from the differences between
architectures, so the noise level is inferred from the within-architecture spread of the
log-latencies (the pooled sum of squares `ss` with `df` degrees of freedom) on a grid of
sigmas with a log-uniform prior. An exact repeat (sigma = 0, a table) sends the posterior
to the smallest sigma quickly: each exact repeat multiplies the odds of sigma <= 1e-2
against sigma >= 0.1 by ten. Without any repeat the posterior is the prior.

The confidence that architecture a's true latency is within budget, given its n probes
with mean log(latency / budget) m, is Phi(-m sqrt(n) / sigma_upper) (a flat prior on its
true log-latency), with sigma_upper a high quantile of the noise posterior: until repeats
show the noise to be small, it is assumed large. The answer rule built on it (`answer_slot`): the best-proxy
architecture among those measured within budget at least once whose confidence reaches
`MIN_CONFIDENCE`; if none does, the best-proxy one whose confidence reaches the lower
`FALLBACK_CONFIDENCE`, else the most confident of those measured within budget.

A device that repeats its readings exactly (`EXACT_REPEATS` repeats with no spread: a table,
or a timer that rounds) is taken at its word: a reading within budget, one exactly at the
budget included, is within it.

A device's noise is stable from one search to the next, so a user may know it: a noise prior
(`checked_noise_prior`: a sigma, or a range of them) restricts the grid to that range, and
on a device known to be exact a single probe within budget is trusted.

Everything is a pure jnp function of fixed-size probe arrays (K slots, the first
`num_probed` used), so the jitted episodes of meta-training and the numpy search methods
call the same code.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

# The sigmas the posterior lives on, log-uniform prior: from a dedicated device timed with
# care (0.1 %) to a loaded shared machine (30 %; the host study saw an inter-quartile range
# of 30 % of the median per probe under load, sigma ~ 0.22).
SIGMA_GRID = np.geomspace(1e-3, 0.3, 28).astype(np.float32)
# An answer counts as confirmed at this probability of fitting the budget. This and
# SIGMA_QUANTILE were chosen with `lsq` on the 13 training devices only (BUILD_NOTES, "noise"):
# the best mean accuracy over sigma in {0, .02, .05, .1, .2} among the settings with a
# feasible rate >= 0.99 up to sigma 0.05 and >= 0.95 at 0.2.
MIN_CONFIDENCE = 0.95
# Confidences assume this quantile of the noise posterior, not an average over it: with one
# or two repeats the posterior is mostly the prior, and averaging over a prior that allows
# no noise makes a single lucky probe look certain on a device that is very noisy.
SIGMA_QUANTILE = 0.95
# With no answer confirmed (few probes, no repeat yet), the best-proxy architecture measured
# within budget whose confidence reaches this is answered, else the most confident one; at
# MIN_CONFIDENCE it is always the most confident one (the rule before version 0.6.0).
# Chosen on the 15 training devices by the rule of `experiments.answer_study` (BUILD_NOTES,
# "The answer when nothing is confirmed"): a small gain, mostly lsq's at sigma 0.2.
FALLBACK_CONFIDENCE = 0.7
# Repeats that must all read exactly what their architecture read before (no spread at all)
# before the device is taken as exact. A continuous timer never repeats a reading, so zero
# spread means a table or a timer that rounds (HELP's phones report whole ms) with noise
# below its step; there a reading is the device's own value, and one exactly at the budget is
# within it (<=, as the protocol counts), where the continuous model gives it 1/2 however
# often it repeats. Two repeats, not one: on a rounding timer whose noise is near its step a
# single identical repeat is common, two are not.
EXACT_REPEATS = 2
# Spread below this (squared log-ratios) is none: identical readings give 0 up to rounding.
EXACT_SPREAD = 1e-10
# A method re-measures an architecture to confirm it at most this many times in all.
MAX_PROBES_PER_ARCH = 3
LOG_REL_CAP = 14.0  # log(1.2e6): a probe that could not run (inf) still counts as "far over"


@chex.dataclass(frozen=True)
class ProbeStats:
  """Per probe slot (K,): what all probes of that slot's architecture say about it."""
  count: jax.Array           # (K,) probes of the same architecture (0 for unused slots)
  mean_log_rel: jax.Array    # (K,) their mean log(latency / budget)
  any_within: jax.Array      # (K,) bool, one of them measured <= budget
  confidence: jax.Array      # (K,) P(true latency <= budget | probes)
  first: jax.Array           # (K,) bool, the first slot of its architecture (one per arch)
  sigma_weights: jax.Array   # (G,) posterior over SIGMA_GRID
  sigma_mean: jax.Array      # () posterior mean of sigma
  sigma_upper: jax.Array     # () its SIGMA_QUANTILE quantile: the sigma confidences assume
  df: jax.Array              # () degrees of freedom of the noise estimate (repeats)


def log_rel(latency_ms, budget_ms):
  """log(latency / budget), capped so that inf (cannot run) stays a finite 'far over'."""
  ratio = jnp.asarray(latency_ms, jnp.float32) / jnp.asarray(budget_ms, jnp.float32)
  return jnp.minimum(jnp.log(jnp.maximum(ratio, 1e-30)), LOG_REL_CAP)


def ratio_float32(latency_ms, budget_ms) -> np.ndarray:
  """latency / budget in float32 (numpy, on the host) on the same side of 1 as in float64.

  The protocol compares in float64; a reading over the budget by less than float32 can tell
  (a table's 3.399860000000001 ms against its 10th percentile, 3.3998600000000003) must not
  become a reading exactly at it, which an exact device counts as within."""
  latency_ms = np.asarray(latency_ms, np.float64)
  ratio = (latency_ms / budget_ms).astype(np.float32)
  over = latency_ms > budget_ms
  ratio = np.where(over & (ratio <= 1), np.nextafter(np.float32(1), np.float32(2)), ratio)
  return np.where(~over & (ratio > 1), np.float32(1), ratio).astype(np.float32)


def checked_noise_prior(noise_prior) -> tuple[float, float] | None:
  """A noise prior as (lowest, highest) sigma: None (unknown), a sigma, a pair, or text
  "0.05" or "0.02:0.1" (a flag's value). ValueError for anything that is not a finite
  sigma >= 0 or an increasing pair of them."""
  if noise_prior is None:
    return None
  if isinstance(noise_prior, str):
    text = noise_prior.strip()
    parts = text.split(":") if ":" in text else [text]
    try:
      values = [float(part) for part in parts]
    except ValueError:
      values = []
  elif isinstance(noise_prior, (bool, np.bool_)):
    values = []
  elif np.ndim(noise_prior) == 0:
    values = [noise_prior]
  else:
    values = list(noise_prior)
  try:
    values = [float(v) for v in values if not isinstance(v, (bool, np.bool_))]
  except (TypeError, ValueError):
    values = []
  if (len(values) not in (1, 2) or not all(np.isfinite(values)) or min(values) < 0
      or values[0] > values[-1]):
    raise ValueError(f"noise prior must be a sigma >= 0 (0.05) or a range LOW:HIGH "
                     f"(0.02:0.1) of the probes' log-normal noise, got {noise_prior!r}")
  return values[0], values[-1]


def sigma_log_prior(noise_prior=None) -> np.ndarray:
  """Log prior weights over SIGMA_GRID (0: allowed, very negative: ruled out) of a noise
  prior (`checked_noise_prior`); unknown noise allows every sigma of the grid."""
  bounds = checked_noise_prior(noise_prior)
  if bounds is None:
    return np.zeros(len(SIGMA_GRID), np.float32)
  return np.asarray(range_log_prior(*bounds))


def range_log_prior(low, high):
  """`sigma_log_prior` of the range [low, high] (jnp: vmappable over ranges): the grid's
  sigmas inside it, or the nearest one when none is (an exact device, sigma 0, is the
  grid's smallest)."""
  grid = jnp.asarray(SIGMA_GRID)
  inside = (grid >= low * (1 - 1e-6)) & (grid <= high * (1 + 1e-6))
  distance = jnp.minimum(jnp.abs(jnp.log(grid / jnp.maximum(low, 1e-9))),
                         jnp.abs(jnp.log(grid / jnp.maximum(high, 1e-9))))
  nearest = distance == jnp.min(distance)
  log_prior = jnp.where(jnp.where(inside.any(), inside, nearest), 0.0, RULED_OUT)
  # A range wholly below the grid (sigma 0: a table) is an exact device, not the grid's
  # smallest sigma (a careful timer): marked on the smallest sigma, which softmax ignores.
  exact = high < grid[0] * (1 - 1e-6)
  return log_prior.at[0].add(jnp.where(exact, EXACT_MARK, 0.0)).astype(jnp.float32)


RULED_OUT = -1e9  # the log prior of a sigma outside a known range (finite: softmax stays defined)
EXACT_MARK = 1.0  # `range_log_prior`'s mark of a device told exact (a shift softmax cancels)


def sigma_posterior(ss, df, log_prior=None):
  """Weights over SIGMA_GRID given a pooled within-architecture sum of squares `ss`."""
  sigma = jnp.asarray(SIGMA_GRID)
  log_like = -df * jnp.log(sigma) - ss / (2.0 * sigma**2)
  if log_prior is not None:
    log_like = log_like + log_prior
  return jax.nn.softmax(log_like)


def probe_stats(probe_index, log_rel_probes, num_probed, log_prior=None) -> ProbeStats:
  """Statistics of the first `num_probed` of K probe slots (index, log(latency / budget));
  `log_prior` (`sigma_log_prior`) what is known of the noise before any probe."""
  num_slots = probe_index.shape[0]
  used = jnp.arange(num_slots) < num_probed
  same = (probe_index[:, None] == probe_index[None, :]) & used[:, None] & used[None, :]
  count = same.sum(1).astype(jnp.float32)
  safe_count = jnp.maximum(count, 1.0)
  y = jnp.where(used, log_rel_probes, 0.0)
  mean = (same * y[None, :]).sum(1) / safe_count
  ss = jnp.sum(jnp.where(used, (y - mean)**2, 0.0))
  df = jnp.sum(jnp.where(used, 1.0 - 1.0 / safe_count, 0.0))
  weights = sigma_posterior(ss, df, log_prior)
  sigma = jnp.asarray(SIGMA_GRID)
  upper = sigma[jnp.argmax(jnp.cumsum(weights) >= SIGMA_QUANTILE)]
  # An exact device (no spread over EXACT_REPEATS repeats of readings that ran, or told it is
  # exact): a reading within budget is within it, ties included. A reading that could not run
  # is capped, so its repeats show no spread on any device and say nothing of exactness.
  ran = used & (y < LOG_REL_CAP)
  df_ran = jnp.sum(jnp.where(ran, 1.0 - 1.0 / safe_count, 0.0))
  told_exact = False if log_prior is None else log_prior[0] > 0
  exact = ((ss <= EXACT_SPREAD) & (df_ran >= EXACT_REPEATS - 1e-3)) | told_exact
  continuous = jax.scipy.stats.norm.cdf(-mean * jnp.sqrt(safe_count) / upper)
  within = (same & (y[None, :] <= 0.0)).any(1)
  confidence = jnp.where(used, jnp.where(exact, within.astype(continuous.dtype), continuous),
                         0.0)
  earlier = jnp.tril(same, k=-1).any(1)
  return ProbeStats(count=count, mean_log_rel=mean, any_within=within & used,
                    confidence=confidence, first=used & ~earlier, sigma_weights=weights,
                    sigma_mean=weights @ sigma, sigma_upper=upper, df=df)


def answer_slot(stats: ProbeStats, slot_proxy, min_confidence=MIN_CONFIDENCE,
                fallback_confidence=FALLBACK_CONFIDENCE):
  """(slot of the answer, whether there is one): the rule of the module docstring."""
  candidate = stats.first & stats.any_within
  confirmed = candidate & (stats.confidence >= min_confidence)
  likely = candidate & (stats.confidence >= fallback_confidence)
  best_confirmed = jnp.argmax(jnp.where(confirmed, slot_proxy, -jnp.inf))
  best_likely = jnp.argmax(jnp.where(likely, slot_proxy, -jnp.inf))
  # Otherwise the most confident, ties to the better proxy.
  most_confident = jnp.argmax(jnp.where(
      candidate, stats.confidence + 1e-6 * jnp.tanh(slot_proxy), -jnp.inf))
  slot = jnp.where(confirmed.any(), best_confirmed,
                   jnp.where(likely.any(), best_likely, most_confident))
  return slot, candidate.any()


@jax.jit
def _answer(probe_index, log_rel_probes, num_probed, slot_proxy, min_confidence, log_prior,
            fallback_confidence):
  stats = probe_stats(probe_index, log_rel_probes, num_probed, log_prior)
  slot, found = answer_slot(stats, slot_proxy, min_confidence, fallback_confidence)
  return slot, found, stats


def answer(indices, latencies_ms, budget_ms: float, proxy: np.ndarray,
           min_confidence: float = MIN_CONFIDENCE, noise_prior=None,
           fallback_confidence: float = FALLBACK_CONFIDENCE):
  """The rule on a list of probes (numpy in, index or None out), with its statistics;
  `noise_prior` (`checked_noise_prior`) what is known of the device's noise.

  Slots are padded to a power of two so that few shapes are ever compiled.
  """
  num = len(indices)
  if num == 0:
    return None, None
  size = 1 << max(num - 1, 0).bit_length()
  index = np.zeros(size, np.int32)
  rel = np.zeros(size, np.float32)
  index[:num] = indices
  rel[:num] = np.asarray(log_rel(ratio_float32(latencies_ms, budget_ms), 1.0))
  slot_proxy = np.zeros(size, np.float32)
  slot_proxy[:num] = np.asarray(proxy)[np.asarray(indices)]
  slot, found, stats = _answer(index, rel, np.int32(num), slot_proxy,
                               np.float32(min_confidence), sigma_log_prior(noise_prior),
                               np.float32(fallback_confidence))
  return (int(index[int(slot)]) if bool(found) else None), jax.tree.map(
      lambda x: np.asarray(x)[:num] if np.ndim(x) == 1 and len(x) == size else np.asarray(x),
      stats)
