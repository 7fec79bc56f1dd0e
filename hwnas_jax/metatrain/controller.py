"""The architecture controller: a recurrent policy that scores every candidate from its features.

Nothing here memorises one dataset's landscape. At each step the controller
  1. fits the probes so far in context: a Bayesian linear model of latency / budget on the
     operation counts, whose prior mean and scale and noise level are meta-learned;
  2. describes every candidate by a few numbers (proxy, gain over the best valid probe,
     predicted slack, log-probability of fitting the budget, uncertainty, ...);
  3. runs a GRU over the probe history and maps its summary to weights over those features.
The logits are the weighted features, so one small network scores all 15,625 candidates
at once, and the same weights transfer to any device, dataset and budget.
"""

from __future__ import annotations

import functools
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hwnas_jax.benchmark import searchspace
from hwnas_jax.metatrain.env import Observation

FEATURES = ("proxy", "gain", "log_p_fit", "p_fit", "expected_gain", "slack", "log_sigma")
NUM_FEATURES = len(FEATURES)
# Initial feature weights: "best proxy among those likely to fit", a reasonable prior that
# meta-training then improves. Order as FEATURES.
INITIAL_WEIGHTS = (4.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0)
MASKED = -1e9


def policy_apply(model: nn.Module, proxies_std: jnp.ndarray):
  """`apply(params, obs)` for episodes whose proxy is row `obs.dataset` of `proxies_std`."""

  def apply(params, obs: Observation):
    return model.apply(params, obs, proxies_std[obs.dataset])

  return apply


def standardize(proxy: np.ndarray) -> np.ndarray:
  """Proxies in standard units over the space, so weights mean the same on any dataset."""
  proxy = np.asarray(proxy, np.float64)
  return ((proxy - proxy.mean()) / proxy.std()).astype(np.float32)


@functools.lru_cache(maxsize=None)
def count_groups() -> tuple[np.ndarray, np.ndarray]:
  """(210, 5) distinct operation shares and (15625,) the group of each architecture.

  Latency is close to linear in the operation counts on most devices, so the in-context
  model predicts per group: 210 predictions instead of 15,625.
  """
  shares = searchspace.op_counts() / searchspace.NUM_EDGES
  groups, group_of = np.unique(shares, axis=0, return_inverse=True)
  return groups.astype(np.float32), group_of.reshape(-1).astype(np.int32)


def spd_inverse(matrix: jnp.ndarray) -> jnp.ndarray:
  """Inverse of a small symmetric positive-definite matrix by an unrolled Cholesky.

  Plain jnp, no LAPACK: XLA's CPU batched triangular solve deadlocked its thread pool at
  2,048+ vmapped 5x5 systems (seen on 2 cores), and at this size unrolling is as fast.
  """
  n = matrix.shape[-1]
  lower = [[None] * n for _ in range(n)]
  for j in range(n):
    diag = matrix[j, j] - sum(lower[j][k] ** 2 for k in range(j))
    lower[j][j] = jnp.sqrt(diag)
    for i in range(j + 1, n):
      lower[i][j] = (matrix[i, j] - sum(lower[i][k] * lower[j][k] for k in range(j))) / lower[j][j]
  # inverse(L), lower triangular, by forward substitution; then inverse = inv(L)^T inv(L).
  inv = [[jnp.zeros_like(matrix[0, 0])] * n for _ in range(n)]
  for i in range(n):
    inv[i][i] = 1.0 / lower[i][i]
    for j in range(i):
      inv[i][j] = -sum(lower[i][k] * inv[k][j] for k in range(j, i)) / lower[i][i]
  inv_lower = jnp.stack([jnp.stack(row) for row in inv])
  return inv_lower.T @ inv_lower


def fit_latency(x: jnp.ndarray, obs: Observation, prior_mean, prior_scale, noise_scale):
  """Posterior mean and std of latency / budget for each row of `x` (Bayesian ridge)."""
  groups, group_of = count_groups()
  mask = (jnp.arange(obs.probe_index.shape[0]) < obs.num_probed).astype(jnp.float32)
  phi = jnp.asarray(groups)[jnp.asarray(group_of)[obs.probe_index]] * mask[:, None]
  dim = x.shape[1]
  precision = jnp.eye(dim) / prior_scale**2 + phi.T @ phi / noise_scale**2
  # A probe that could not run (inf) or ran far over budget says "too slow", not how slow.
  latency_rel = jnp.minimum(obs.latency_rel, 10.0)
  rhs = prior_mean / prior_scale**2 + phi.T @ (mask * latency_rel) / noise_scale**2
  covariance = spd_inverse(precision)
  weights = covariance @ rhs
  mean = x @ weights
  var = jnp.sum((x @ covariance) * x, axis=-1) + noise_scale**2
  return mean, jnp.sqrt(var)


def probe_summary(proxy_std, proxy_floor, obs: Observation):
  """(best proxy among valid probes, or the floor; whether any probe was valid)."""
  mask = jnp.arange(obs.probe_index.shape[0]) < obs.num_probed
  valid = mask & (obs.latency_rel <= 1.0)
  any_valid = valid.any()
  best = jnp.where(any_valid, jnp.max(jnp.where(valid, proxy_std[obs.probe_index], -jnp.inf)),
                   proxy_floor)
  return best, any_valid


def candidate_logits(weights, proxy_std, best, obs: Observation, prior_mean, prior_scale,
                     noise_scale):
  """`features(candidate) @ weights` for every candidate, without materialising features.

  Latency features live on the 210 count groups; only the proxy terms are per candidate:
  logit = w_proxy p + (w_gain + w_expected_gain P(fit)) relu(p - best) + group_term.
  """
  groups, group_of = count_groups()
  group_of = jnp.asarray(group_of)
  mean, sigma = fit_latency(jnp.asarray(groups), obs, prior_mean, prior_scale, noise_scale)
  log_p_fit = jnp.maximum(jax.scipy.stats.norm.logcdf((1.0 - mean) / sigma), -20.0)
  p_fit = jnp.exp(log_p_fit)
  w = dict(zip(FEATURES, weights))
  group_term = (w["log_p_fit"] * log_p_fit + w["p_fit"] * p_fit
                + w["slack"] * jnp.clip(mean - 1.0, -3.0, 3.0) + w["log_sigma"] * jnp.log(sigma))
  gain = jax.nn.relu(proxy_std - best)
  return (w["proxy"] * proxy_std + (w["gain"] + w["expected_gain"] * p_fit[group_of]) * gain
          + group_term[group_of])


class Controller(nn.Module):
  """Policy and value over all candidates.

  `__call__(obs, proxy_std) -> (logits (N,), value ())`; `proxy_std` is the task's proxy
  in standard units (`standardize`), so any dataset or computed proxy table can be used.
  """
  hidden_size: int = 64

  @nn.compact
  def __call__(self, obs: Observation, proxy_std: jnp.ndarray):
    proxy_floor = jnp.min(proxy_std)
    prior_mean = self.param("prior_mean", lambda _: jnp.ones(searchspace.NUM_OPS))
    prior_scale = jax.nn.softplus(self.param("prior_scale_raw", lambda _: jnp.array(0.55, jnp.float32)))
    noise_scale = jax.nn.softplus(self.param("noise_scale_raw", lambda _: jnp.array(-2.5, jnp.float32)))
    best, any_valid = probe_summary(proxy_std, proxy_floor, obs)

    # Recurrent summary of the probe history, slot by slot (masked beyond num_probed).
    num_slots = obs.probe_index.shape[0]
    mask = jnp.arange(num_slots) < obs.num_probed
    steps = jnp.stack([jnp.clip(obs.latency_rel, 0.0, 4.0),
                       (obs.latency_rel <= 1.0).astype(jnp.float32),
                       proxy_std[obs.probe_index],
                       jnp.log(jnp.clip(obs.latency_rel, 1e-3, None))], axis=-1)
    cell = nn.GRUCell(self.hidden_size, name="history")
    carry = jnp.zeros(self.hidden_size)
    for slot in range(num_slots):  # K is small and static: unrolled
      new_carry, _ = cell(carry, steps[slot])
      carry = jnp.where(mask[slot], new_carry, carry)
    progress = jnp.stack([obs.num_probed / num_slots, any_valid.astype(jnp.float32), best,
                          (num_slots - obs.num_probed).astype(jnp.float32)])
    h = nn.tanh(nn.Dense(self.hidden_size, name="summary")(jnp.concatenate([carry, progress])))
    weights = nn.Dense(NUM_FEATURES, name="weights", kernel_init=nn.initializers.zeros,
                       bias_init=lambda *_: jnp.array(INITIAL_WEIGHTS))(h)
    logits = candidate_logits(weights, proxy_std, best, obs, prior_mean, prior_scale,
                              noise_scale)
    probed = jnp.zeros(proxy_std.shape[0], bool).at[obs.probe_index].max(mask)
    logits = jnp.where(probed, MASKED, logits)
    value = nn.Dense(1, name="value")(nn.tanh(nn.Dense(self.hidden_size, name="value_hidden")(h)))
    return logits, value[0]
