"""PPO's pieces against numbers worked out by hand, and the paper-faithful episode's rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices import synthetic
from hwnas_jax.metatrain import env
from hwnas_jax.metatrain import paper
from hwnas_jax.metatrain import ppo


def test_gae_matches_a_hand_computed_episode():
  rewards = jnp.array([1.0, 0.0, 2.0])
  values = jnp.array([0.5, 1.0, 1.5])
  gamma, lam = 0.9, 0.8
  # deltas: r_t + gamma v_{t+1} - v_t, with v_3 = 0 (fixed horizon)
  d2 = 2.0 - 1.5
  d1 = 0.0 + 0.9 * 1.5 - 1.0
  d0 = 1.0 + 0.9 * 1.0 - 0.5
  a2 = d2
  a1 = d1 + gamma * lam * a2
  a0 = d0 + gamma * lam * a1
  advantages, returns = ppo.gae(rewards, values, gamma, lam)
  np.testing.assert_allclose(advantages, [a0, a1, a2], rtol=1e-6)
  np.testing.assert_allclose(returns, np.array([a0, a1, a2]) + np.array(values), rtol=1e-6)
  # gamma = lam = 1: the advantage is the return to go minus the value.
  advantages, _ = ppo.gae(rewards, values, 1.0, 1.0)
  np.testing.assert_allclose(advantages, [3.0 - 0.5, 2.0 - 1.0, 2.0 - 1.5], rtol=1e-6)


def test_gae_runs_over_a_batch_of_episodes():
  rewards = jnp.ones((4, 3))
  advantages, returns = ppo.gae(rewards, jnp.zeros((4, 3)), 1.0, 1.0)
  np.testing.assert_allclose(advantages, np.tile([3.0, 2.0, 1.0], (4, 1)))
  np.testing.assert_allclose(returns, advantages)


def test_normalized_advantages():
  out = ppo.normalize_advantages(jnp.array([1.0, 2.0, 3.0, 6.0]))
  assert abs(float(out.mean())) < 1e-6 and float(out.std()) == pytest.approx(1.0, rel=1e-4)


def test_paper_reward_rewards_speed_over_proxy():
  # TF(a) * (1e-3 + L)^-0.3 - 1: the fastest architecture (L = 0) beats a far better proxy.
  assert float(paper.paper_reward(0.5, 0.0)) == pytest.approx(0.5 * 1e-3**-0.3 - 1, rel=1e-5)
  assert float(paper.paper_reward(1.0, 1.0)) == pytest.approx((1.001)**-0.3 - 1, rel=1e-5)
  assert float(paper.paper_reward(0.2, 0.0)) > float(paper.paper_reward(1.0, 0.5))
  np.testing.assert_allclose(paper.normalised_latency(jnp.array([1.0, 3.0, 5.0, 9.0]), (1.0, 5.0)),
                             [0.0, 0.5, 1.0, 1.0])


def test_paper_edit_actions_set_one_edge_to_one_operation():
  ops = jnp.array([0, 1, 2, 3, 4, 0])
  for edge, op in [(0, 3), (5, 4), (2, 0)]:
    action = edge * searchspace.NUM_OPS + op
    edited = ops.at[action // searchspace.NUM_OPS].set(action % searchspace.NUM_OPS)
    expected = np.array(ops)
    expected[edge] = op
    assert int(paper.ops_index(edited)) == searchspace.ops_to_index(expected)
  history = paper.observe(jnp.zeros((paper.HISTORY, paper.NUM_ACTIONS + 1)), ops, jnp.array(0.25))
  np.testing.assert_allclose(history[-1, -1], 0.25)
  np.testing.assert_allclose(history[-1, :-1].reshape(6, 5).argmax(1), ops)
  assert float(jnp.abs(history[:-1]).sum()) == 0.0  # the newest entry goes last


def test_paper_episode_answers_its_last_architecture():
  devices = synthetic.stack_devices([synthetic.make_device(1.0, np.full((6, 5), 0.2 + 0.1 * i))
                                     for i in range(2)])
  tables = jax.vmap(synthetic.latency_table)(devices)
  proxies = jnp.asarray(np.random.default_rng(0).uniform(size=(1, searchspace.NUM_ARCHS)),
                        jnp.float32)
  budget = jnp.median(tables, axis=1)
  episodes = env.EpisodeParams(device=devices, budget_ms=budget, dataset=jnp.zeros(2, jnp.int32),
                               oracle_proxy=jnp.ones(2))
  model = paper.PaperPolicy()
  # Jitted: op by op, each of the episode's operations would compile on its own (seconds).
  params = jax.jit(model.init)(jax.random.key(0),
                               jnp.zeros((paper.HISTORY, paper.NUM_ACTIONS + 1)))
  rollout = jax.jit(paper.batch_rollout, static_argnums=(0, 5))
  transitions, score, valid = rollout(model.apply, params, episodes, jax.random.key(1),
                                      proxies, 4)
  assert transitions.action.shape == (2, 3)  # K - 1 edits after a random first probe
  np.testing.assert_array_equal(valid, transitions.latency_rel[:, -1] <= 1.0)
  assert bool(jnp.all((score == 0) | valid))
