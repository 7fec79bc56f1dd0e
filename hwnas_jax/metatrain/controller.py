"""The architecture controller: a recurrent policy that scores every candidate from its features.

Nothing here memorises one dataset's landscape. At each step the controller
  1. fits the probes so far in context: a Bayesian linear model of latency / budget on the
     operation counts, whose prior mean and scale and noise level are meta-learned, the
     noise widened by what repeated probes say of the device's noise (`noise.probe_stats`)
     and then set by the fit's own residuals (`residual_noise`: a device unlike the prior
     makes the model less sure of itself);
  2. describes every candidate by a few numbers (proxy, gain over the confirmed answer,
     predicted slack, log-probability of fitting the budget, uncertainty, ...), and every
     probed architecture by what confirming it would be worth (a "measure it again" action:
     `REPEAT_FEATURES`);
  3. runs a GRU over the probe history and maps its summary to weights over those features.
The logits are the weighted features, so one small network scores all 15,625 candidates
and the K repeats at once, and the same weights transfer to any device, dataset and budget.
Actions: a candidate's index (< N), or N + k to measure probe slot k's architecture again.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices import noise
from hwnas_jax.metatrain import candidates
from hwnas_jax.metatrain import env
from hwnas_jax.metatrain.env import Observation

FEATURES = ("proxy", "gain", "log_p_fit", "p_fit", "expected_gain", "slack", "log_sigma",
            "log_p_confirm")
NUM_FEATURES = len(FEATURES)
# Initial feature weights: "best proxy among those likely to be confirmed within budget", a
# reasonable prior (what `lsq` does) that meta-training then improves. Order as FEATURES.
INITIAL_WEIGHTS = (4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0)
# A repeat's features: a constant, whether confirming it would improve the answer (measured
# within budget, not confirmed, better proxy than the confirmed answer, probes left for it),
# its proxy, how far under the budget it measured (mean log), how often it was measured.
REPEAT_FEATURES = ("bias", "worth", "proxy", "mean_log_rel", "count")
# Initial repeat weights: "re-measure whatever is worth confirming, the best proxy first;
# otherwise never" (what `lsq` does), which meta-training then improves.
INITIAL_REPEAT_WEIGHTS = (-30.0, 60.0, 4.0, 0.0, 0.0)
MASKED = candidates.MASKED
CONFIRM_Z = float(scipy.stats.norm.ppf(noise.MIN_CONFIDENCE))
# Latency / budget beyond which a probe says only "too slow": capped in the fit, and no
# residual of it is counted.
RESIDUAL_CAP = 10.0
# Readings the meta-learned noise scale is worth against the residuals (`residual_noise`):
# the fit's 5 weights, fixed a priori.
RESIDUAL_PSEUDO_COUNT = 5.0
count_groups = candidates.count_groups


def policy_apply(model: nn.Module, proxies_std: jnp.ndarray):
  """`apply(params, obs) -> (dense logits, value)` for episodes whose proxy is row
  `obs.dataset` of `proxies_std` (one observation; meta-training uses `policy_scores`)."""

  def apply(params, obs: Observation):
    return model.apply(params, obs, proxies_std[obs.dataset])

  return apply


def policy_scores(model: nn.Module, params, obs: Observation, table: candidates.ProxyTable):
  """(`candidates.Scores`, value) of one observation, reading its dataset's proxies from
  `table` in place (vmap over observations; the table is shared, never copied per row)."""
  return model.apply(params, obs, table.values[obs.dataset, obs.probe_index],
                     table.floor[obs.dataset], method="policy")


def episode_scores(model: nn.Module, params, obs: Observation, table: candidates.ProxyTable):
  """(`candidates.Scores`, value) of every step of one episode (leading axis of `obs`:
  steps), its probe history read by one GRU pass, over its last observation, instead of
  one per step."""
  last = jax.tree.map(lambda x: x[-1], obs)
  carries = model.apply(params, last, table.values[last.dataset, last.probe_index],
                        method="carries")

  def step(obs_t):
    return model.apply(params, obs_t, table.values[obs_t.dataset, obs_t.probe_index],
                       table.floor[obs_t.dataset], carries, method="policy")

  return jax.vmap(step)(obs)


def _batch_scores(model, params, obs, table):
  return jax.vmap(policy_scores, in_axes=(None, None, 0, None))(model, params, obs, table)


def actor(model: nn.Module, table: candidates.ProxyTable):
  """`act(params, obs, keys, greedy) -> (action, log_prob, value, entropy or None)` for a
  batch of observations (leading axis), as `env.batch_rollout` wants: sampled with
  `candidates.sample` (one uniform per key), or the argmax when `greedy`."""

  def act(params, obs: Observation, keys, greedy: bool = False):
    scores, value = _batch_scores(model, params, obs, table)
    if greedy:
      action, log_prob = candidates.greedy(scores, table)
      return action, log_prob, value, None
    action, log_prob, entropy = candidates.sample(keys, scores, table)
    return action, log_prob, value, entropy

  return act


def evaluator(model: nn.Module):
  """`evaluate(params, obs, actions, table, entropy) -> (log_prob, value, entropy or None)`
  of a batch of observations (leading axis), differentiable: PPO's loss."""

  def evaluate(params, obs: Observation, actions, table: candidates.ProxyTable,
               entropy: bool = False):
    scores, value = _batch_scores(model, params, obs, table)
    log_prob, ent = candidates.log_prob(scores, table, actions, entropy=entropy)
    return log_prob, value, ent if entropy else None

  return evaluate


def episode_evaluator(model: nn.Module):
  """`evaluator`'s function for whole episodes: obs and actions (episodes, steps, ...), and
  (log_prob, value, entropy or None) of shape (episodes, steps) (`episode_scores`)."""

  def evaluate(params, obs: Observation, actions, table: candidates.ProxyTable,
               entropy: bool = False):
    scores, value = jax.vmap(episode_scores, in_axes=(None, None, 0, None))(
        model, params, obs, table)
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), scores)
    log_prob, ent = candidates.log_prob(flat, table, actions.reshape(-1), entropy=entropy)
    return (log_prob.reshape(actions.shape), value,
            ent.reshape(actions.shape) if entropy else None)

  return evaluate


def standardize(proxy: np.ndarray) -> np.ndarray:
  """Proxies in standard units over the space, so weights mean the same on any dataset."""
  proxy = np.asarray(proxy, np.float64)
  return ((proxy - proxy.mean()) / proxy.std()).astype(np.float32)


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


def _posterior(obs: Observation, prior_mean, prior_scale, noise_scale, ran_only=False):
  """(weights, covariance, probe features, probe mask) of the Bayesian ridge of latency /
  budget on the probes' operation shares; `ran_only`: on the probes that ran within
  RESIDUAL_CAP only."""
  groups, group_of = count_groups()
  mask = (jnp.arange(obs.probe_index.shape[0]) < obs.num_probed).astype(jnp.float32)
  if ran_only:
    mask = mask * (obs.latency_rel < RESIDUAL_CAP).astype(jnp.float32)
  phi = jnp.asarray(groups)[jnp.asarray(group_of)[obs.probe_index]] * mask[:, None]
  dim = phi.shape[1]
  precision = jnp.eye(dim) / prior_scale**2 + phi.T @ phi / noise_scale**2
  # A probe that could not run (inf) or ran far over budget says "too slow", not how slow.
  latency_rel = jnp.minimum(obs.latency_rel, RESIDUAL_CAP)
  rhs = prior_mean / prior_scale**2 + phi.T @ (mask * latency_rel) / noise_scale**2
  covariance = spd_inverse(precision)
  return covariance @ rhs, covariance, phi, mask


def fit_latency(x: jnp.ndarray, obs: Observation, prior_mean, prior_scale, noise_scale):
  """Posterior mean and std of latency / budget for each row of `x` (Bayesian ridge)."""
  weights, covariance, _, _ = _posterior(obs, prior_mean, prior_scale, noise_scale)
  mean = x @ weights
  var = jnp.sum((x @ covariance) * x, axis=-1) + noise_scale**2
  return mean, jnp.sqrt(var)


def residual_noise(obs: Observation, prior_mean, prior_scale, noise_scale):
  """The fit's noise scale once its residuals at the probes are heard.

  A device unlike the prior shows it here first: on the bundle's phones a quarter of the
  latency is not a function of the operation counts at all, where the GPUs' tables are
  nearly additive. The scale is a scaled-inverse-chi-squared posterior: `noise_scale` counts
  as RESIDUAL_PSEUDO_COUNT readings, each probe that ran (fitted without those that did not,
  which say only "too slow") adds its squared relative residual over the share of it the
  fit did not absorb (1 - leverage). With few probes it stays near
  `noise_scale`; with many it follows the device.
  """
  weights, covariance, phi, ran = _posterior(obs, prior_mean, prior_scale, noise_scale,
                                             ran_only=True)
  # Relative to the reading: a jitter multiplies latency, and it matters at the budget.
  residual = (obs.latency_rel - phi @ weights) / jnp.maximum(obs.latency_rel, 1e-3)
  leverage = jnp.sum((phi @ covariance) * phi, axis=-1) / noise_scale**2
  sum_squares = jnp.sum(jnp.where(ran > 0, residual, 0.0)**2)
  readings = jnp.sum(ran * jnp.clip(1.0 - leverage, 0.0, 1.0))
  return jnp.sqrt((sum_squares + RESIDUAL_PSEUDO_COUNT * noise_scale**2)
                  / (readings + RESIDUAL_PSEUDO_COUNT))


def fit_in_context_prior(latency_rel: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(prior mean (NUM_OPS,), prior scale ()) of the in-context model, fitted to devices'
  latency / budget (devices, N).

  An empirical-Bayes start: each device's least-squares weights on the operation shares,
  their mean and their root-mean-square spread. A flat start (every network costs the
  budget) makes the first probe the top-proxy network, over the budget on most devices at
  tight budgets: a probe lost, and at K = 3 often the answer with it.
  """
  groups, group_of = count_groups()
  phi = jnp.asarray(groups)[jnp.asarray(group_of)]
  y = jnp.minimum(jnp.asarray(latency_rel, jnp.float32), RESIDUAL_CAP)
  # spd_inverse, not jnp.linalg.solve: a LAPACK solve here once hung XLA's CPU thread pool.
  weights = (spd_inverse(phi.T @ phi) @ (phi.T @ y.T)).T
  mean = weights.mean(axis=0)
  return mean, jnp.sqrt(jnp.mean((weights - mean)**2))


def with_in_context_prior(params, prior_mean, prior_scale):
  """`Controller` parameters with the in-context model's prior set (`fit_in_context_prior`;
  a scale > 0)."""
  inner = dict(params["params"])
  inner["prior_mean"] = jnp.asarray(prior_mean, inner["prior_mean"].dtype)
  scale = jnp.asarray(prior_scale, jnp.float32)
  # softplus's inverse, in the form that stays finite for large scales.
  raw = scale + jnp.log(-jnp.expm1(-scale))
  inner["prior_scale_raw"] = raw.astype(inner["prior_scale_raw"].dtype)
  return {**params, "params": inner}


def probe_summary(probe_proxy, proxy_floor, stats: noise.ProbeStats):
  """(proxy of the best confirmed probe, or the floor; whether any probe is confirmed).

  `probe_proxy` (K,): the proxy of each probe slot, in standard units."""
  confirmed = stats.first & stats.any_within & (stats.confidence >= noise.MIN_CONFIDENCE)
  any_confirmed = confirmed.any()
  best = jnp.where(any_confirmed, jnp.max(jnp.where(confirmed, probe_proxy, -jnp.inf)),
                   proxy_floor)
  return best, any_confirmed


def repeat_features(probe_proxy, best, stats: noise.ProbeStats):
  """(K, len(REPEAT_FEATURES)) features of re-measuring each probe slot's architecture, and
  whether the slot can be re-measured (its architecture's first slot)."""
  unconfirmed = stats.any_within & (stats.confidence < noise.MIN_CONFIDENCE)
  worth = (unconfirmed & (probe_proxy > best)
           & (stats.count < noise.MAX_PROBES_PER_ARCH)).astype(jnp.float32)
  features = jnp.stack([jnp.ones_like(probe_proxy), worth, probe_proxy,
                        jnp.clip(stats.mean_log_rel, -3.0, 3.0),
                        stats.count / noise.MAX_PROBES_PER_ARCH], axis=-1)
  return features, stats.first


def candidate_scores(weights, best, obs: Observation, prior_mean, prior_scale, noise_scale,
                     confirm_rel,
                     extras=None, floor=None) -> candidates.Scores:
  """`features(candidate) @ weights` for every candidate, factorised (`candidates.Scores`).

  Latency features live on the 210 count groups; only the proxy terms are per candidate:
  logit = w_proxy p + (w_gain + w_expected_gain P(fit)) relu(p - best) + group_term.
  """
  groups, _ = count_groups()
  mean, sigma = fit_latency(jnp.asarray(groups), obs, prior_mean, prior_scale, noise_scale)
  log_p_fit = jnp.maximum(jax.scipy.stats.norm.logcdf((1.0 - mean) / sigma), -20.0)
  p_fit = jnp.exp(log_p_fit)
  # Fitting under `confirm_rel` x the budget: what two probes need to confirm an answer.
  log_p_confirm = jnp.maximum(jax.scipy.stats.norm.logcdf((confirm_rel - mean) / sigma), -20.0)
  w = dict(zip(FEATURES, weights))
  group_term = (w["log_p_fit"] * log_p_fit + w["p_fit"] * p_fit
                + w["slack"] * jnp.clip(mean - 1.0, -3.0, 3.0) + w["log_sigma"] * jnp.log(sigma)
                + w["log_p_confirm"] * log_p_confirm)
  num_slots = obs.probe_index.shape[0]
  return candidates.Scores(
      proxy_weight=w["proxy"], gain_weight=w["gain"] + w["expected_gain"] * p_fit,
      group_term=group_term, best=best, probed=obs.probe_index,
      probed_valid=jnp.arange(num_slots) < obs.num_probed,
      extras=jnp.zeros(0, jnp.float32) if extras is None else extras, dataset=obs.dataset,
      floor=floor)


class Controller(nn.Module):
  """Policy and value over all candidates.

  `policy(obs, probe_proxy, proxy_floor) -> (candidates.Scores, value ())`: the factorised
  logits, what meta-training uses (with `policy_scores`); `probe_proxy` (K,) is the proxy
  of each probe slot and `proxy_floor` the task's minimum proxy, in standard units.
  `carries(obs, probe_proxy) -> (K + 1, hidden)`: the history's recurrent state after each
  number of probes, so one pass serves every step of an episode (`episode_scores`).
  `__call__(obs, proxy_std) -> (logits (N + E,), value ())`: the same as dense logits
  (`candidates.dense_logits`), for deployment; `proxy_std` is the task's proxy in standard
  units (`standardize`), so any dataset or computed proxy table can be used.
  """
  hidden_size: int = 64

  def setup(self):
    self.prior_mean = self.param("prior_mean", lambda _: jnp.ones(searchspace.NUM_OPS))
    self.prior_scale_raw = self.param("prior_scale_raw",
                                      lambda _: jnp.array(0.55, jnp.float32))
    self.noise_scale_raw = self.param("noise_scale_raw",
                                      lambda _: jnp.array(-2.5, jnp.float32))
    self.history = nn.GRUCell(self.hidden_size)
    self.summary = nn.Dense(self.hidden_size)
    self.weights = nn.Dense(NUM_FEATURES, kernel_init=nn.initializers.zeros,
                            bias_init=lambda *_: jnp.array(INITIAL_WEIGHTS))
    self.repeat_weights = nn.Dense(len(REPEAT_FEATURES), kernel_init=nn.initializers.zeros,
                                   bias_init=lambda *_: jnp.array(INITIAL_REPEAT_WEIGHTS))
    self.value_hidden = nn.Dense(self.hidden_size)
    self.value = nn.Dense(1)

  def carries(self, obs: Observation, probe_proxy: jnp.ndarray,
              stats: noise.ProbeStats | None = None) -> jnp.ndarray:
    """(K + 1, hidden): row j is the GRU's summary of the first j probe slots. A slot's
    input depends only on earlier slots, so the rows of an episode's last observation are
    those of each of its steps. `stats`: `env.probe_stats(obs)`, if already computed."""
    stats = env.probe_stats(obs) if stats is None else stats
    steps = jnp.stack([jnp.clip(obs.latency_rel, 0.0, 4.0),
                       (obs.latency_rel <= 1.0).astype(jnp.float32),
                       probe_proxy,
                       jnp.log(jnp.clip(obs.latency_rel, 1e-3, None)),
                       (~stats.first).astype(jnp.float32)], axis=-1)  # a repeat
    carry = jnp.zeros(self.hidden_size)
    rows = [carry]
    for slot in range(obs.probe_index.shape[0]):  # K is small and static: unrolled
      carry, _ = self.history(carry, steps[slot])
      rows.append(carry)
    return jnp.stack(rows)

  def policy(self, obs: Observation, probe_proxy: jnp.ndarray, proxy_floor: jnp.ndarray,
             carries: jnp.ndarray | None = None):
    """`carries`: `self.carries` of this observation or of a later one of its episode."""
    prior_scale = jax.nn.softplus(self.prior_scale_raw)
    noise_scale = jax.nn.softplus(self.noise_scale_raw)
    stats = env.probe_stats(obs)
    best, any_confirmed = probe_summary(probe_proxy, proxy_floor, stats)
    noise_scale = jnp.sqrt(noise_scale**2 + stats.sigma_mean**2)  # the device's probe noise
    noise_scale = residual_noise(obs, self.prior_mean, prior_scale, noise_scale)
    if carries is None:
      carries = self.carries(obs, probe_proxy, stats)
    carry = carries[obs.num_probed]  # the probe history so far (num_probed slots)
    # Against the episode's own K, not the history's length: one policy for every K.
    num_probes = obs.num_probes.astype(jnp.float32)
    progress = jnp.stack([obs.num_probed / num_probes, any_confirmed.astype(jnp.float32), best,
                          num_probes - obs.num_probed, jnp.log(stats.sigma_upper),
                          stats.df / num_probes])
    h = nn.tanh(self.summary(jnp.concatenate([carry, progress])))
    weights = self.weights(h)
    repeat_weights = self.repeat_weights(h)
    features, can_repeat = repeat_features(probe_proxy, best, stats)
    extras = jnp.where(can_repeat, features @ repeat_weights, MASKED)
    # Once an answer is confirmed, a probe of no higher proxy (a new candidate or a repeat)
    # cannot change it: such probes come last (on a device unlike the prior, the learned
    # weights alone spent them on equals of the answer).
    floor = jnp.where(any_confirmed, best, -jnp.inf)
    extras = extras + candidates.dominated(probe_proxy, floor)
    confirm_rel = jnp.exp(-CONFIRM_Z * stats.sigma_upper / jnp.sqrt(2.0))
    scores = candidate_scores(weights, best, obs, self.prior_mean, prior_scale, noise_scale,
                              confirm_rel, extras, floor)
    value = self.value(nn.tanh(self.value_hidden(h)))
    return scores, value[0]

  def __call__(self, obs: Observation, proxy_std: jnp.ndarray):
    scores, value = self.policy(obs, proxy_std[obs.probe_index], jnp.min(proxy_std))
    return candidates.dense_logits(scores, proxy_std), value
