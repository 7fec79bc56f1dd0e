"""The controller's in-context latency model and candidate scoring."""

import jax
import jax.numpy as jnp
import numpy as np

from hwnas_jax.metatrain import controller as controller_lib
from hwnas_jax.metatrain import env
from hwnas_jax.benchmark import searchspace

# One model for every test, its init and apply jitted: run op by op, the policy's few hundred
# operations would each compile on their own (seconds), and these tests check values, not
# the eager path.
MODEL = controller_lib.Controller(hidden_size=8)
init = jax.jit(MODEL.init)
apply = jax.jit(MODEL.apply)
fit_latency = jax.jit(controller_lib.fit_latency)


def _observation(indices, latency_rel, num_slots=10):
  index = np.zeros(num_slots, np.int32)
  rel = np.zeros(num_slots, np.float32)
  index[:len(indices)], rel[:len(indices)] = indices, latency_rel
  return env.Observation(probe_index=jnp.asarray(index), latency_rel=jnp.asarray(rel),
                         num_probed=jnp.array(len(indices), jnp.int32), dataset=jnp.array(0),
                         num_probes=jnp.array(num_slots, jnp.int32))


def test_count_groups_cover_the_space():
  groups, group_of = controller_lib.count_groups()
  assert groups.shape == (210, 5) and group_of.shape == (searchspace.NUM_ARCHS,)
  np.testing.assert_allclose(groups[group_of] * 6, searchspace.op_counts())


def test_fit_latency_recovers_a_linear_device_from_a_few_probes():
  groups, group_of = controller_lib.count_groups()
  weights = np.array([0.2, 0.1, 0.6, 1.5, 0.9], np.float32)
  probes = np.random.default_rng(0).choice(searchspace.NUM_ARCHS, 8, replace=False)
  truth = groups @ weights
  obs = _observation(probes, truth[group_of[probes]])
  mean, sigma = fit_latency(jnp.asarray(groups), obs, jnp.ones(5), 1.0, 0.01)
  np.testing.assert_allclose(mean, truth, atol=0.05)
  # Before any probe the prediction is the prior's, and much less certain.
  prior_mean, prior_sigma = fit_latency(
      jnp.asarray(groups), _observation([], []), jnp.ones(5), 1.0, 0.01)
  np.testing.assert_allclose(prior_mean, 1.0, atol=1e-5)
  assert float(prior_sigma.min()) > 5 * float(sigma.max())


def test_residual_noise_follows_the_device_with_enough_probes():
  """A device the fit explains keeps the prior's scale or less; one with a 20 % latency
  jitter that no operation count explains widens it toward that jitter; with no probe it is
  the prior's."""
  groups, group_of = controller_lib.count_groups()
  rng = np.random.default_rng(0)
  probes = rng.choice(searchspace.NUM_ARCHS, 10, replace=False)
  truth = (groups @ np.array([0.2, 0.1, 0.6, 1.5, 0.9], np.float32))[group_of[probes]]
  noise = jax.jit(controller_lib.residual_noise)
  prior = 0.08
  assert abs(float(noise(_observation([], []), jnp.ones(5), 1.0, prior)) - prior) < 1e-6
  exact = float(noise(_observation(probes, truth), jnp.ones(5), 1.0, prior))
  jitter = truth * np.exp(0.2 * rng.standard_normal(10)).astype(np.float32)
  jittery = float(noise(_observation(probes, jitter), jnp.ones(5), 1.0, prior))
  assert exact < prior < jittery
  # A probe that could not run (capped) adds no residual.
  capped = _observation([*probes[:9], 3], [*truth[:9], np.float32(1e6)])
  assert float(noise(capped, jnp.ones(5), 1.0, prior)) <= prior


def test_residual_noise_is_the_posterior_of_the_ridge_written_out():
  """The same posterior from the textbook formulas in float64: the ridge's weights and hat
  matrix H = Phi C Phi^T / sigma^2, relative residuals of the probes that ran, and the prior
  scale counted as RESIDUAL_PSEUDO_COUNT readings."""
  groups, group_of = controller_lib.count_groups()
  rng = np.random.default_rng(3)
  probes = rng.choice(searchspace.NUM_ARCHS, 7, replace=False)
  rel = rng.uniform(0.3, 3.0, 7).astype(np.float32)
  rel[2] = np.inf  # could not run: out of the fit and of the residuals
  prior_mean, prior_scale, scale = np.array([1.0, 0.9, 1.1, 1.2, 0.8]), 0.7, 0.08
  got = float(jax.jit(controller_lib.residual_noise)(
      _observation(probes, rel), jnp.asarray(prior_mean, jnp.float32), prior_scale, scale))
  ran = np.isfinite(rel)
  phi = groups[group_of[probes[ran]]].astype(np.float64)
  y = rel[ran].astype(np.float64)
  covariance = np.linalg.inv(np.eye(5) / prior_scale**2 + phi.T @ phi / scale**2)
  weights = covariance @ (prior_mean / prior_scale**2 + phi.T @ y / scale**2)
  hat = phi @ covariance @ phi.T / scale**2
  residual = (y - phi @ weights) / y
  count = controller_lib.RESIDUAL_PSEUDO_COUNT
  want = np.sqrt((np.sum(residual**2) + count * scale**2) / (np.sum(1 - np.diag(hat)) + count))
  # float32 against float64 on a 5 x 5 system of condition below 1e4: 1e-3 is far above
  # any rounding and far below a wrong term (a missing 1 / sigma^2 moves it by 10 %+).
  np.testing.assert_allclose(got, want, rtol=1e-3)


def test_policy_masks_probed_candidates_and_offers_their_repeats():
  proxy = controller_lib.standardize(np.random.default_rng(1).uniform(size=searchspace.NUM_ARCHS))
  obs = _observation([5, 17], [0.5, 2.0])
  params = init(jax.random.key(0), obs, jnp.asarray(proxy))
  logits, value = apply(params, obs, jnp.asarray(proxy))
  n, k = searchspace.NUM_ARCHS, obs.probe_index.shape[0]
  assert logits.shape == (n + k,) and value.shape == ()
  assert float(logits[5]) == controller_lib.MASKED and float(logits[17]) == controller_lib.MASKED
  repeats = np.asarray(logits[n:])
  assert np.all(repeats[2:] == controller_lib.MASKED)  # empty slots cannot be repeated
  assert np.all(repeats[:2] > controller_lib.MASKED)
  assert np.isfinite(np.asarray(logits)).all()


def test_untrained_policy_confirms_a_promising_unconfirmed_answer():
  """Measured once just under budget, the best-proxy probe is worth measuring again; far
  under budget (confirmed by one probe) or over it, it is not."""
  proxy = jnp.asarray(controller_lib.standardize(
      np.random.default_rng(1).uniform(size=searchspace.NUM_ARCHS)))
  best = int(np.argmax(proxy))
  params = init(jax.random.key(0), _observation([], []), proxy)
  n = searchspace.NUM_ARCHS

  def act(obs):
    return int(env.arch_of_action(obs, jnp.argmax(apply(params, obs, proxy)[0])))

  near = _observation([best], [0.97])
  assert int(jnp.argmax(apply(params, near, proxy)[0])) == n  # repeat slot 0
  assert act(near) == best
  for latency_rel in (0.3, 1.5):
    assert act(_observation([best], [latency_rel])) != best


def test_spd_inverse_matches_numpy():
  a = np.random.default_rng(2).normal(size=(5, 5)).astype(np.float32)
  spd = a @ a.T + 5 * np.eye(5, dtype=np.float32)
  np.testing.assert_allclose(controller_lib.spd_inverse(jnp.asarray(spd)), np.linalg.inv(spd),
                             rtol=1e-4, atol=1e-5)


def test_in_context_prior_is_fitted_from_devices_and_set_in_the_parameters():
  """Devices whose latency / budget is exactly linear in the operation shares give back
  their weights' mean and spread; the parameters then hold them (scale through softplus)."""
  groups, group_of = controller_lib.count_groups()
  weights = np.array([[0.2, 0.1, 0.6, 1.5, 0.9], [0.4, 0.3, 1.0, 2.5, 1.1]], np.float32)
  latency_rel = weights @ groups[group_of].T
  prior_mean, prior_scale = controller_lib.fit_in_context_prior(latency_rel)
  np.testing.assert_allclose(prior_mean, weights.mean(0), rtol=1e-4)
  np.testing.assert_allclose(prior_scale, np.sqrt(np.mean((weights - weights.mean(0))**2)),
                             rtol=1e-4)
  params = controller_lib.with_in_context_prior(
      init(jax.random.key(0), env.empty_observation(10), jnp.zeros(searchspace.NUM_ARCHS)),
      prior_mean, prior_scale)
  np.testing.assert_allclose(params["params"]["prior_mean"], weights.mean(0), rtol=1e-4)
  np.testing.assert_allclose(jax.nn.softplus(params["params"]["prior_scale_raw"]),
                             prior_scale, rtol=1e-4)
