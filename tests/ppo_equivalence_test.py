"""PPO with the one-pass candidate scoring equals PPO with dense logits (the straightforward
formulation): same loss, gradients and parameters after an update, on a fixed rollout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import quick
from hwnas_jax.metatrain import env
from hwnas_jax.metatrain import ppo
from hwnas_jax.metatrain import train


def _tiny(ent_coef):
  config = quick.get_config()
  config.num_devices = 32
  config.num_probes = 5
  config.hidden_size = 8
  config.num_minibatches = 2
  config.num_epochs = 2
  config.eval_devices = 32
  config.ent_coef = ent_coef
  config.learning_rate = 1e-2  # large steps, so a wrong gradient shows in the parameters
  return config


@pytest.fixture(scope="module")
def data():
  return train.training_data(_tiny(0.0))[0]


def _dense_evaluate(config):
  """Today's formulation: the controller's dense logits per observation, log_softmax."""
  model = train.make_model(config)
  return ppo.dense_evaluate(
      lambda params, obs, data: model.apply(params, obs, data.proxies_std[obs.dataset]))


def _setup(config, data):
  trainer = train.make_train(config)
  state = jax.jit(trainer.init)(jax.random.key(0))
  episodes = env.sample_episodes(jax.random.key(1), data.prior, config.num_devices,
                                 data.proxies_raw, tuple(config.budget_percentiles))
  traj = jax.jit(lambda p, data: trainer.agent.rollout(p, episodes, jax.random.key(2), data)[0])(
      state.params, data)
  return trainer, state, traj


@pytest.mark.parametrize("ent_coef", [0.0, 0.01])
def test_loss_and_gradient_match_the_dense_formulation(data, ent_coef):
  config = _tiny(ent_coef)
  trainer, state, traj = _setup(config, data)
  batch = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), traj.replace(entropy=None))
  advantages = jnp.linspace(-1.0, 1.0, batch.reward.shape[0])
  returns = advantages * 0.5

  def loss(evaluate):  # data as an argument: nothing for XLA to fold at compile time
    return jax.jit(jax.value_and_grad(
        lambda p, data: ppo.ppo_loss(p, lambda q, o, a, e: evaluate(q, o, a, data, e), batch,
                                     advantages, returns, config), has_aux=True))

  (ours, ours_aux), ours_grad = loss(trainer.agent.evaluate)(state.params, data)
  (ref, ref_aux), ref_grad = loss(_dense_evaluate(config))(state.params, data)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
  if ent_coef:
    np.testing.assert_allclose(ours_aux["entropy"], ref_aux["entropy"], rtol=1e-5)
  for path, a, b in zip(jax.tree_util.tree_leaves_with_path(ours_grad),
                        jax.tree.leaves(ours_grad), jax.tree.leaves(ref_grad)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6 * max(1.0, float(jnp.abs(b).max())),
                               err_msg=jax.tree_util.keystr(path[0]))
  # The rollout's log-probabilities are the loss's at the same parameters: ratio 1.
  np.testing.assert_allclose(ours_aux["approx_kl"], 0.0, atol=1e-6)


def test_one_update_with_sampling_held_fixed_matches_the_dense_formulation(data):
  config = _tiny(0.0)
  trainer, state, traj = _setup(config, data)

  def rollout_fn(params, key, data):
    del params, key, data
    return traj, {}

  optimizer = ppo.make_optimizer(config)
  ours = jax.jit(ppo.make_update(config, trainer.agent.evaluate, rollout_fn, optimizer))
  ref = jax.jit(ppo.make_update(config, _dense_evaluate(config), rollout_fn, optimizer))
  ours_state, ours_metrics = ours(state, data)
  ref_state, ref_metrics = ref(state, data)
  np.testing.assert_allclose(ours_metrics["loss"], ref_metrics["loss"], rtol=1e-4, atol=1e-6)
  moved = 0.0
  for a, b, before in zip(jax.tree.leaves(ours_state.params), jax.tree.leaves(ref_state.params),
                          jax.tree.leaves(state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    moved = max(moved, float(jnp.max(jnp.abs(b - before))))
  assert moved > 1e-3  # the update did change the parameters
