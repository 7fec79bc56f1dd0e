"""The controller's in-context latency model and candidate scoring."""

import jax
import jax.numpy as jnp
import numpy as np

from hwnas_jax.metatrain import controller as controller_lib
from hwnas_jax.metatrain import env
from hwnas_jax.benchmark import searchspace


def _observation(indices, latency_rel, num_slots=10):
  index = np.zeros(num_slots, np.int32)
  rel = np.zeros(num_slots, np.float32)
  index[:len(indices)], rel[:len(indices)] = indices, latency_rel
  return env.Observation(probe_index=jnp.asarray(index), latency_rel=jnp.asarray(rel),
                         num_probed=jnp.array(len(indices), jnp.int32), dataset=jnp.array(0))


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
  mean, sigma = controller_lib.fit_latency(jnp.asarray(groups), obs, jnp.ones(5), 1.0, 0.01)
  np.testing.assert_allclose(mean, truth, atol=0.05)
  # Before any probe the prediction is the prior's, and much less certain.
  prior_mean, prior_sigma = controller_lib.fit_latency(
      jnp.asarray(groups), _observation([], []), jnp.ones(5), 1.0, 0.01)
  np.testing.assert_allclose(prior_mean, 1.0, atol=1e-5)
  assert float(prior_sigma.min()) > 5 * float(sigma.max())


def test_policy_never_repeats_a_probe_and_prefers_proxy_among_feasible():
  model = controller_lib.Controller(hidden_size=8)
  proxy = controller_lib.standardize(np.random.default_rng(1).uniform(size=searchspace.NUM_ARCHS))
  obs = _observation([5, 17], [0.5, 2.0])
  params = model.init(jax.random.key(0), obs, jnp.asarray(proxy))
  logits, value = model.apply(params, obs, jnp.asarray(proxy))
  assert logits.shape == (searchspace.NUM_ARCHS,) and value.shape == ()
  assert float(logits[5]) == controller_lib.MASKED and float(logits[17]) == controller_lib.MASKED
  assert np.isfinite(np.asarray(logits)).all()


def test_spd_inverse_matches_numpy():
  a = np.random.default_rng(2).normal(size=(5, 5)).astype(np.float32)
  spd = a @ a.T + 5 * np.eye(5, dtype=np.float32)
  np.testing.assert_allclose(controller_lib.spd_inverse(jnp.asarray(spd)), np.linalg.inv(spd),
                             rtol=1e-4, atol=1e-5)
