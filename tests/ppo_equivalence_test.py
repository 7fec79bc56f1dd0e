"""PPO with the one-pass candidate scoring equals PPO with dense logits (the straightforward
formulation): same loss, gradients and parameters after an update, on a fixed rollout; and
that update moves the policy and the value the right way (the suite's short form of the
meta-training check in benchmarks/long_checks_test.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import quick
from hwnas_jax.metatrain import candidates
from hwnas_jax.metatrain import controller
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


@pytest.fixture(scope="module")
def played(data):
  """(trainer, initial state, one sampled rollout of it): what every test holds fixed. The
  entropy coefficient is read by the loss only, so one rollout serves both."""
  config = _tiny(0.0)
  trainer = train.make_train(config)
  state = jax.jit(trainer.init)(jax.random.key(0))
  episodes = env.sample_episodes(jax.random.key(1), data.prior, config.num_devices,
                                 data.proxies_raw, tuple(config.budget_percentiles))
  traj = jax.jit(lambda p, data: trainer.agent.rollout(p, episodes, jax.random.key(2), data)[0])(
      state.params, data)
  return trainer, state, traj


@pytest.fixture(scope="module")
def updated(data, played):
  """(state, metrics) after one update on the fixed rollout: ours, then the dense one's."""
  config = _tiny(0.0)
  trainer, state, traj = played

  def rollout_fn(params, key, data):
    del params, key, data
    return traj, {}

  optimizer = ppo.make_optimizer(config)
  ours = jax.jit(ppo.make_update(config, trainer.agent.evaluate, rollout_fn, optimizer))
  ref = jax.jit(ppo.make_update(config, _dense_evaluate(config), rollout_fn, optimizer))
  return ours(state, data), ref(state, data)


@pytest.mark.parametrize("ent_coef", [0.0, 0.01])
def test_loss_and_gradient_match_the_dense_formulation(data, played, ent_coef):
  config = _tiny(ent_coef)
  trainer, state, traj = played
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


def test_one_update_with_sampling_held_fixed_matches_the_dense_formulation(played, updated):
  _, state, _ = played
  (ours_state, ours_metrics), (ref_state, ref_metrics) = updated
  np.testing.assert_allclose(ours_metrics["loss"], ref_metrics["loss"], rtol=1e-4, atol=1e-6)
  moved = 0.0
  for a, b, before in zip(jax.tree.leaves(ours_state.params), jax.tree.leaves(ref_state.params),
                          jax.tree.leaves(state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    moved = max(moved, float(jnp.max(jnp.abs(b - before))))
  assert moved > 1e-3  # the update did change the parameters


def test_the_update_moves_the_policy_to_better_actions_and_the_value_to_the_returns(
    data, played, updated):
  """Measured apart from the loss that was minimised: the change of each rollout action's
  log-probability points along its advantage (cosine 0.11 to 0.21 over six rollouts on
  2026-12-07, this one 0.20; a reversed policy gradient makes it negative), and the value's
  squared error to the returns falls by about half (0.31 -> 0.11 here).

  The suite's short form of benchmarks/long_checks_test.py's meta-training check, which
  trains 40 updates and compares held-out episodes."""
  config = _tiny(0.0)
  trainer, state, traj = played
  (new_state, _), _ = updated
  advantages, returns = ppo.gae(traj.reward, traj.value, config.gamma, config.gae_lambda)
  advantages = np.asarray(ppo.normalize_advantages(advantages), np.float64).reshape(-1)
  returns = np.asarray(returns, np.float64).reshape(-1)
  batch = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), traj.replace(entropy=None))
  evaluate = jax.jit(lambda params, data: trainer.agent.evaluate(params, batch.obs,
                                                                 batch.action, data)[:2])
  log_prob, value = (np.asarray(x, np.float64) for x in evaluate(state.params, data))
  new_log_prob, new_value = (np.asarray(x, np.float64)
                             for x in evaluate(new_state.params, data))
  change = new_log_prob - log_prob
  cosine = advantages @ change / (np.linalg.norm(advantages) * np.linalg.norm(change))
  assert cosine > 0.05, cosine
  error, new_error = np.mean((value - returns)**2), np.mean((new_value - returns)**2)
  assert new_error < 0.75 * error, (error, new_error)


def test_whole_episode_evaluation_equals_step_by_step(data, played):
  """One GRU pass over an episode's last observation gives every step's log-probability,
  value and entropy, as the per-step evaluation does: the same float32 computations,
  batched differently. Also for episodes whose own K (3) ends before the history's 5
  slots: their later steps repeat the observation after K probes, as a mixed-K rollout
  leaves them."""
  _, state, traj = played
  model = train.make_model(_tiny(0.0))
  steps = np.minimum(np.arange(traj.action.shape[1]), 3)
  ended = jax.tree.map(lambda x: x[:, steps], traj.obs).replace(
      num_probes=jnp.full(traj.action.shape, 3, jnp.int32))

  @jax.jit
  def both(params, obs, data):
    table = candidates.proxy_table(data.proxies_std)
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), obs)
    per_step = controller.evaluator(model)(params, flat, traj.action.reshape(-1), table, True)
    whole = controller.episode_evaluator(model)(params, obs, traj.action, table, True)
    return per_step, whole

  for obs in (traj.obs, ended):
    per_step, whole = both(state.params, obs, data)
    assert whole[0].shape == traj.action.shape == (32, 5)
    for a, b in zip(per_step, whole):
      np.testing.assert_allclose(np.asarray(b).reshape(-1), a, rtol=1e-5, atol=1e-5)


def test_episode_minibatches_hold_whole_episodes():
  """With config.episode_minibatches the loss sees (episodes, steps) blocks, every episode
  once an epoch; without, single steps from across the episodes."""
  num_episodes, num_steps = 8, 3
  ids = jnp.broadcast_to(jnp.arange(num_episodes)[:, None], (num_episodes, num_steps))
  zeros = jnp.zeros((num_episodes, num_steps))
  traj = env.Transition(obs=ids, action=ids, arch=ids, log_prob=zeros, value=zeros,
                        reward=zeros + 1.0, latency_rel=zeros, valid=zeros > 0)
  seen = []

  def evaluate(params, obs, actions, data, entropy):
    del actions, data, entropy
    jax.debug.callback(lambda o: seen.append(np.asarray(o)), obs)
    return params["w"] * jnp.ones(obs.shape), params["w"] * jnp.ones(obs.shape), None

  for by_episode in (True, False):
    seen.clear()
    config = _tiny(0.0)
    config.update(num_minibatches=2, num_epochs=2, episode_minibatches=by_episode)
    update = ppo.make_update(config, evaluate, lambda *_: (traj, {}),
                             ppo.make_optimizer(config))
    state = ppo.TrainState(params={"w": jnp.zeros(())}, opt_state=ppo.make_optimizer(
        config).init({"w": jnp.zeros(())}), step=jnp.array(0), key=jax.random.key(0))
    jax.block_until_ready(jax.jit(update)(state, None))
    assert len(seen) == 4  # 2 epochs x 2 minibatches
    if by_episode:
      assert all(mb.shape == (4, num_steps) and (mb == mb[:, :1]).all() for mb in seen)
      for epoch in (seen[:2], seen[2:]):
        assert sorted(np.concatenate([mb[:, 0] for mb in epoch])) == list(range(num_episodes))
    else:
      assert all(mb.shape == (num_episodes * num_steps // 2,) for mb in seen)
      assert any(len(set(mb.tolist())) > 4 for mb in seen)  # steps of many episodes mixed
