"""Sharded meta-training: shard_map over 4 forced CPU devices == the same shards vmapped.

The multi-device check runs in a subprocess (this file as a script), because the forced
device count must be set before JAX starts and other test modules start it first.
"""

import os
import subprocess
import sys

if __name__ == "__main__":  # the child: four CPU devices, set before JAX is imported
  os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=4"
                             # compile faster (both sides alike): the check is about equality
                             " --xla_backend_optimization_level=0"
                             " --xla_llvm_disable_expensive_passes=true")
  os.environ["JAX_PLATFORMS"] = "cpu"

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.configs import default
from hwnas_jax import episode
from hwnas_jax import ppo
from hwnas_jax import searchspace
from hwnas_jax import sharding
from hwnas_jax import synthetic
from hwnas_jax import train

NUM_SHARDS = 4
NUM_UPDATES = 2


def tiny_config(num_shards: int) -> ml_collections.ConfigDict:
  config = default.get_config()
  config.update(num_devices=16, num_probes=4, hidden_size=8, num_minibatches=2, num_epochs=1,
                num_shards=num_shards, num_updates=NUM_UPDATES, eval_devices=8, eval_every=1,
                checkpoint_every=1000)
  return config


def tiny_inputs():
  """(raw proxies (2, N), a prior fitted on two hand-made devices): no bundle needed."""
  rng = np.random.default_rng(0)
  proxies = rng.uniform(size=(2, searchspace.NUM_ARCHS)).astype(np.float32)
  devices = [synthetic.make_device(1.0 + i, rng.uniform(0.1, 2.0, (6, 5)), curvature=0.1 * i,
                                   arch_jitter=0.05) for i in range(2)]
  prior = synthetic.prior_from_shapes(np.stack([synthetic.device_shape(d) for d in devices]))
  return proxies, prior


def sharded_and_vmapped(config):
  """Params and metrics after NUM_UPDATES updates, shard_map'ed and vmapped, same keys."""
  proxies, prior = tiny_inputs()
  agent = train.make_agent(config, proxies)

  def sample_fn(key, num):
    return episode.sample_episodes(key, prior, num, jnp.asarray(proxies),
                                   config.budget_percentiles)

  rollout_fn = sharding.shard_rollout(agent.rollout, sample_fn, config)
  optimizer = ppo.make_optimizer(config)
  params = jax.jit(agent.init)(jax.random.key(1))
  params = jax.tree.map(lambda x: jnp.asarray(x, x.dtype), params)  # strong types: 1 compile
  results = []
  for make in (sharding.make_sharded_update, sharding.make_vmapped_update):
    update = make(config, agent.apply, rollout_fn, optimizer)
    state = ppo.TrainState(params, optimizer.init(params), jnp.array(0))
    for key in jax.random.split(jax.random.key(2), NUM_UPDATES):
      state, metrics = update(state, key)
    results.append(jax.device_get((state.params, metrics)))
  return params, *results


def check_sharded_matches_vmapped():
  assert jax.local_device_count() == NUM_SHARDS, jax.devices()
  with pytest.raises(ValueError, match="does not divide"):
    sharding.check_num_shards(tiny_config(3))
  config = tiny_config(NUM_SHARDS)
  initial, (sharded, sharded_metrics), (vmapped, vmapped_metrics) = sharded_and_vmapped(config)
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(sharded),
                                                        jax.tree.leaves(initial)))
  assert moved > 1e-6, "the updates changed nothing: the comparison would be vacuous"
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               sharded, vmapped)
  for name in vmapped_metrics:
    np.testing.assert_allclose(sharded_metrics[name], vmapped_metrics[name], rtol=1e-4,
                               atol=1e-5, err_msg=name)
  print(f"sharded == vmapped over {NUM_SHARDS} shards after {NUM_UPDATES} updates "
        f"(params moved up to {moved:.2e}); metrics {sorted(vmapped_metrics)}")


def test_sharded_update_matches_vmapped_shards():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
  if jax.config.jax_compilation_cache_dir:  # share the session's cache (tests/conftest.py)
    env.update(JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
  run = subprocess.run([sys.executable, os.path.abspath(__file__)], cwd=root, env=env,
                       capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stdout + run.stderr
  assert "sharded == vmapped" in run.stdout


class _Built(Exception):
  """Raised once the update is built: the dispatch is what is tested, not the training."""


@pytest.fixture(scope="module")
def tiny():
  """Tiny inputs and initial parameters (jitted once: eager init takes 15 s on a busy CPU)."""
  proxies, prior = tiny_inputs()
  params = jax.jit(train.make_agent(tiny_config(1), proxies).init)(jax.random.key(0))
  return proxies, prior, params


def _update_builder(monkeypatch, tmp_path, tiny, config):
  """Which builder `train_and_evaluate` calls for its update: 'plain' or 'sharded'."""
  proxies, prior, params = tiny
  monkeypatch.setattr(train, "training_inputs", lambda *args, **kwargs: (
      proxies, (prior, synthetic.sample_devices), "tiny"))
  make_agent = train.make_agent
  monkeypatch.setattr(train, "make_agent", lambda *args: make_agent(*args)._replace(
      init=lambda key: params))
  used = []

  def spy(name, build):
    def built(*args, **kwargs):
      update = build(*args, **kwargs)
      used.append((name, kwargs))
      raise _Built(update)
    return built

  monkeypatch.setattr(ppo, "make_update", spy("plain", ppo.make_update))
  monkeypatch.setattr(sharding, "make_sharded_update",
                      spy("sharded", sharding.make_sharded_update))
  with pytest.raises(_Built):
    train.train_and_evaluate(config, str(tmp_path), log=lambda _: None)
  return used


def test_one_shard_takes_the_plain_path(monkeypatch, tmp_path, tiny):
  assert _update_builder(monkeypatch, tmp_path, tiny, tiny_config(1)) == [("plain", {})]


def test_too_many_shards_is_a_clear_error(monkeypatch, tmp_path, tiny):
  config = tiny_config(jax.local_device_count() + 1)
  with pytest.raises(ValueError, match=r"num_shards=\d+ but .* has \d+ device"):
    _update_builder(monkeypatch, tmp_path, tiny, config)


if __name__ == "__main__":
  check_sharded_matches_vmapped()
