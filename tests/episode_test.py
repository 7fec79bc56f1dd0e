"""The episode: probe count, validity, and the vmapped scan against a plain Python loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices import noise
from hwnas_jax.devices import synthetic
from hwnas_jax.devices.table import TableDevice
from hwnas_jax.metatrain import candidates
from hwnas_jax.metatrain import controller as controller_lib
from hwnas_jax.metatrain import env
from hwnas_jax.search import deploy
from hwnas_jax.search import interface

K = 6


def _devices(noise):
  rng = np.random.default_rng(0)
  costs = rng.uniform(0.1, 2.0, size=(3, 1, 5)) * np.ones((3, 6, 5))
  return synthetic.stack_devices([
      synthetic.make_device(1.0 + i, costs[i], noise=noise) for i in range(3)])


# The tests' programs, jitted once for the module: run op by op, the controller's few
# hundred operations would each compile on their own (seconds per test).
rollout = jax.jit(env.batch_rollout, static_argnames=("act_fn", "num_probes", "greedy",
                                                      "invalid_penalty"))
policy_scores = jax.jit(controller_lib.policy_scores, static_argnums=0)
sample = jax.jit(candidates.sample)
env_step = jax.jit(env.step)


@pytest.fixture(scope="module")
def setup():
  rng = np.random.default_rng(1)
  proxies = jnp.asarray(rng.uniform(size=(2, searchspace.NUM_ARCHS)).astype(np.float32))
  model = controller_lib.Controller(hidden_size=8)
  proxies_std = jnp.stack([jnp.asarray(controller_lib.standardize(p)) for p in proxies])
  table = candidates.proxy_table(proxies_std)
  apply = controller_lib.actor(model, table)
  params = jax.jit(model.init)(jax.random.key(0), env.empty_observation(K), proxies_std[0])
  return proxies, model, apply, params, table


def _params(devices, proxies, q=30.0):
  tables = jax.vmap(synthetic.latency_table)(devices)
  budget = jnp.asarray([np.percentile(np.asarray(t), q) for t in tables], jnp.float32)
  dataset = jnp.array([0, 1, 0])
  oracle = jnp.max(jnp.where(tables <= budget[:, None], proxies[dataset], 0.0), axis=1)
  return env.EpisodeParams(device=devices, budget_ms=budget, dataset=dataset,
                           oracle_proxy=oracle), tables


def test_batched_rollout_matches_python_loop(setup):
  proxies, model, apply, params, table = setup
  ep, _ = _params(_devices(noise=0.05), proxies)
  key = jax.random.key(3)
  batched = rollout(apply, params, ep, key, proxies, K)
  for i, episode_key in enumerate(jax.random.split(key, 3)):
    one = jax.tree.map(lambda x: x[i], ep)
    state = env.reset(one, K)
    for t, step_key in enumerate(jax.random.split(episode_key, K)):
      key_act, key_measure = jax.random.split(step_key)
      scores, _ = policy_scores(model, params, state.obs, table)
      one_row = jax.tree.map(lambda x: x[None], scores)
      action = int(sample(key_act[None], one_row, table)[0][0])
      arch = int(env.arch_of_action(state.obs, action))
      state, reward, latency_rel, _, _ = env_step(key_measure, one, state, arch, proxies)
      assert action == int(batched.action[i, t])
      np.testing.assert_allclose(float(reward), float(batched.reward[i, t]), rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(float(latency_rel), float(batched.latency_rel[i, t]), rtol=1e-5)


def test_episode_probes_k_distinct_architectures_and_scores_validity(setup):
  proxies, _, apply, params, _ = setup
  ep, tables = _params(_devices(noise=0.0), proxies)
  out = rollout(apply, params, ep, jax.random.key(0), proxies, K, greedy=True)
  actions, archs = np.asarray(out.action), np.asarray(out.arch)
  assert actions.shape == archs.shape == (3, K)
  for row, arch in zip(actions, archs):  # a new candidate, or a repeat of an earlier probe
    for t, (action, index) in enumerate(zip(row, arch)):
      if action < searchspace.NUM_ARCHS:
        assert index == action and index not in arch[:t]
      else:
        assert index == arch[action - searchspace.NUM_ARCHS] and index in arch[:t]
  actions = archs
  score, valid = env.episode_score(out)
  for i in range(3):
    latency = np.asarray(tables[i])[actions[i]]
    proxy = np.asarray(proxies[ep.dataset[i]], np.float64)
    answer, _ = noise.answer(actions[i], latency, float(ep.budget_ms[i]), proxy)
    assert bool(valid[i]) == (answer is not None)  # exact device: measured = true latency
    expected = proxy[answer] / float(ep.oracle_proxy[i]) if answer is not None else 0.0
    np.testing.assert_allclose(float(score[i]), expected, rtol=1e-5)
    assert 0.0 <= float(score[i]) <= 1.0 + 1e-6


def test_invalid_penalty_is_the_return_of_an_episode_without_a_valid_answer(setup):
  """A budget below every architecture: no answer, so the rewards sum to -penalty, and the
  reported score stays the protocol's 0; with a valid answer the penalty changes nothing."""
  proxies, _, apply, params, _ = setup
  ep, _ = _params(_devices(noise=0.0), proxies)
  impossible = ep.replace(budget_ms=ep.budget_ms * 1e-3)
  for episodes, any_valid in ((impossible, False), (ep, True)):
    plain = rollout(apply, params, episodes, jax.random.key(0), proxies, K, greedy=True)
    penalised = rollout(apply, params, episodes, jax.random.key(0), proxies, K, greedy=True,
                        invalid_penalty=2.0)
    np.testing.assert_array_equal(np.asarray(plain.arch), np.asarray(penalised.arch))
    valid = np.asarray(plain.valid[:, -1])
    returns = np.asarray(penalised.reward.sum(-1))
    np.testing.assert_allclose(returns[~valid], -2.0, rtol=1e-6)
    np.testing.assert_allclose(returns[valid], np.asarray(plain.reward.sum(-1))[valid],
                               rtol=1e-5)
    assert valid.any() == any_valid
    score, _ = env.episode_score(penalised)
    np.testing.assert_allclose(np.asarray(score), np.asarray(env.episode_score(plain)[0]),
                               rtol=1e-5)


def test_a_batch_mixing_probe_budgets_plays_each_episode_as_alone(setup):
  """Episodes with K = 3, 6, 3 in one batch of 6 steps: each stops at its own K (later steps
  not live, reward 0) and plays exactly what a batch of its own K alone plays. One K short
  of the batch's is enough to tell a per-episode stop from a per-batch one, and each K
  alone is one more program to compile."""
  proxies, _, apply, params, _ = setup
  ep, _ = _params(_devices(noise=0.0), proxies)
  own_k = np.array([3, 6, 3])
  mixed = rollout(apply, params, ep.replace(num_probes=jnp.asarray(own_k)), jax.random.key(0),
                  proxies, K, greedy=True)
  live = np.asarray(mixed.live)
  np.testing.assert_array_equal(live.sum(1), own_k)
  assert np.all(np.asarray(mixed.reward)[~live] == 0)
  mixed_score, mixed_valid = env.episode_score(mixed)
  for i, k in enumerate(own_k):
    alone = rollout(apply, params, ep, jax.random.key(0), proxies, int(k), greedy=True)
    np.testing.assert_array_equal(np.asarray(mixed.arch)[i, :k], np.asarray(alone.arch)[i])
    score, valid = env.episode_score(alone)
    np.testing.assert_allclose(float(mixed_score[i]), float(score[i]), rtol=1e-5)
    assert bool(mixed_valid[i]) == bool(valid[i])


def test_deployed_controller_repeats_the_greedy_episode(setup):
  """On a noise-free device, the deployed method probes what the greedy scan probes."""
  proxies, model, apply, params, _ = setup
  devices = _devices(noise=0.0)
  ep, tables = _params(devices, proxies)
  out = rollout(apply, params, ep, jax.random.key(0), proxies, K, greedy=True)
  method = deploy.controller_method(model, params)
  table = TableDevice("synthetic", np.asarray(tables[0], np.float64))
  budgeted = interface.ProbeBudget(table, K)
  task = interface.Task("d0", float(ep.budget_ms[0]), K, np.asarray(proxies[0], np.float64))
  answer = method(task, budgeted.handle, np.random.default_rng(0))
  assert [p.index for p in budgeted.probes] == [int(a) for a in out.arch[0]]
  assert answer is None or budgeted.is_valid(answer, task.budget_ms)


def test_probe_budgets_are_drawn_in_proportion_to_k_to_the_minus_power():
  """Power 0 keeps the uniform draws bit for bit; power 2 over 3..20 gives K = 3 a third of
  the episodes (0.321) and K = 20 under 1 %: within 5 binomial sigmas of 20,000 draws."""
  key = jax.random.key(3)
  uniform = env.draw_num_probes(key, 20_000, (3, 20))
  np.testing.assert_array_equal(uniform, jax.random.randint(key, (20_000,), 3, 21))
  drawn = np.asarray(env.draw_num_probes(key, 20_000, (3, 20), power=2.0))
  assert drawn.min() >= 3 and drawn.max() <= 20
  weights = np.arange(3, 21, dtype=np.float64) ** -2.0
  expected = weights / weights.sum()
  share = np.bincount(drawn - 3, minlength=18) / drawn.size
  sigma = np.sqrt(expected * (1 - expected) / drawn.size)
  assert np.all(np.abs(share - expected) < 5 * sigma), (share, expected)


def test_quantile_by_bisection_matches_numpy():
  values = jnp.asarray(np.random.default_rng(0).lognormal(size=15625).astype(np.float32))
  for q in (0.05, 0.25, 0.6):
    got = float(env.quantile_by_bisection(values, q))
    share = float(np.mean(np.asarray(values) <= got))
    assert share >= q and share - q < 2 / 15625
