"""Sharded meta-training: shard_map over 4 forced CPU devices == the same shards vmapped.

The multi-device check runs in a subprocess (this file as a script), because the forced
device count must be set before JAX starts and other test modules start it first. It starts
as soon as the tests are collected (`start_early`), so it runs beside the rest of the suite.

What must agree is the update of the whole batch: the gradient averaged over shards, with
advantages normalised over all of them. The two programs are compiled differently, so their
float32 reductions round differently on some CPUs; Adam divides each gradient element by
its own magnitude, so a 1e-4 gradient element that rounds differently can move its
parameter the other way, and Adam's parameters cannot be compared at any tolerance that
would still catch a wrong gradient. The check therefore steps with plain SGD (with the
same clipping), where a parameter's change is the learning rate times its gradient, and
compares the changes to a tolerance set by the size of the changes themselves.
"""

import os
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
import optax
import pytest

import early
from experiments.configs import default
from hwnas_jax.benchmark import searchspace
from hwnas_jax.metatrain import sharding
from hwnas_jax.devices import synthetic
from hwnas_jax.metatrain import ppo
from hwnas_jax.metatrain import train

NUM_SHARDS = 4
NUM_UPDATES = 2
# Relative to the largest parameter change: float32 gradients of a few thousand terms agree
# to ~1e-6 relative whatever the order of their sums; a wrong average is off by O(1).
CHANGE_RTOL = 1e-3


def tiny_config(num_shards: int) -> ml_collections.ConfigDict:
  config = default.get_config()
  # default.py's K range, told noise and whole-episode minibatches, at K <= 4: the live-step
  # weights and the minibatches of episodes split over shards are part of what must agree.
  config.update(num_devices=16, num_probes=4, num_probes_range=(2, 4), hidden_size=8,
                num_minibatches=2, num_epochs=1, num_shards=num_shards,
                num_updates=NUM_UPDATES, eval_devices=8, eval_every=1, checkpoint_every=1000)
  return config


def tiny_data(config):
  """TrainData of random proxies (2, N) and a prior fitted on two hand-made devices."""
  rng = np.random.default_rng(0)
  proxies = rng.uniform(size=(2, searchspace.NUM_ARCHS)).astype(np.float32)
  devices = [synthetic.make_device(1.0 + i, rng.uniform(0.1, 2.0, (6, 5)), curvature=0.1 * i,
                                   arch_jitter=0.05) for i in range(2)]
  prior = synthetic.prior_from_shapes(np.stack([synthetic.device_shape(d) for d in devices]))
  return train.make_data(config, proxies, prior)


def sgd(config) -> optax.GradientTransformation:
  """The optimizer of `ppo.make_optimizer` with Adam's per-element scaling taken out."""
  return optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                     optax.sgd(config.learning_rate))


def sharded_and_vmapped(config):
  """Initial params, then params and metrics after NUM_UPDATES updates, shard_map'ed and
  vmapped, from the same state."""
  ppo.make_optimizer = sgd  # the child process only
  data = tiny_data(config)
  trainer = train.make_train(config, sharding.AXIS)
  state = jax.jit(trainer.init)(jax.random.key(1))
  state = jax.tree.map(lambda x: jnp.asarray(x, x.dtype), state)  # strong types: 1 compile
  results = []
  for make in (sharding.make_sharded_update, sharding.make_vmapped_update):
    update = make(trainer.update, config)
    current = state
    for _ in range(NUM_UPDATES):
      current, metrics = update(current, data)
    results.append(jax.device_get((current.params, metrics)))
  return state.params, *results


def check_sharded_matches_vmapped():
  assert jax.local_device_count() == NUM_SHARDS, jax.devices()
  with pytest.raises(ValueError, match="does not divide"):
    sharding.check_num_shards(tiny_config(3))
  config = tiny_config(NUM_SHARDS)
  config.learning_rate = 0.05  # changes well above float32's spacing of the parameters
  initial, (sharded, sharded_metrics), (vmapped, vmapped_metrics) = sharded_and_vmapped(config)
  change = [(np.float64(a) - i, np.float64(b) - i) for a, b, i in zip(
      jax.tree.leaves(sharded), jax.tree.leaves(vmapped), jax.tree.leaves(initial))]
  moved = max(float(np.abs(a).max()) for a, _ in change)
  assert moved > 1e-3, "the updates changed nothing: the comparison would be vacuous"
  for (a, b), leaf in zip(change, jax.tree.leaves(initial)):
    spacing = 4 * np.spacing(np.abs(np.float32(leaf)).astype(np.float32)).astype(np.float64)
    np.testing.assert_array_less(np.abs(a - b), CHANGE_RTOL * moved + spacing)
  for name in vmapped_metrics:  # with SGD their differences stay at float32 rounding
    np.testing.assert_allclose(sharded_metrics[name], vmapped_metrics[name], rtol=1e-4,
                               atol=1e-5, err_msg=name)
  print(f"sharded == vmapped over {NUM_SHARDS} shards after {NUM_UPDATES} updates "
        f"(params moved up to {moved:.2e}); metrics {sorted(vmapped_metrics)}")


_CHILD: list = []  # the check's process, once started


def start_early(selected=None):
  """Starts the check in its own process (conftest.py calls this once the tests are
  collected, with the names of the selected tests): it then runs beside the other tests, on
  the core a one-test-at-a-time suite leaves idle, and its test only collects the result."""
  if selected is not None and "test_sharded_update_matches_vmapped_shards" not in selected:
    return None
  if _CHILD:
    return _CHILD[0]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  # The session's compilation cache reaches the child through the environment (conftest.py).
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
  _CHILD.append(early.start([sys.executable, os.path.abspath(__file__)], cwd=root, env=env))
  return _CHILD[0]


def test_sharded_update_matches_vmapped_shards():
  run = early.finish(start_early(), timeout=600)
  assert run.returncode == 0, run.stdout + run.stderr
  assert "sharded == vmapped" in run.stdout


def test_one_shard_takes_the_plain_path(monkeypatch):
  used = []
  monkeypatch.setattr(sharding, "make_sharded_update", lambda *args: used.append(args))
  config = tiny_config(1)
  train.make_update_fn(config, train.make_train(config))
  assert used == []
  config = tiny_config(2)
  train.make_update_fn(config, train.make_train(config, sharding.AXIS))
  assert len(used) == 1


def test_too_many_shards_is_a_clear_error():
  config = tiny_config(jax.local_device_count() + 1)
  with pytest.raises(ValueError, match=r"num_shards=\d+ but .* has \d+ device"):
    sharding.check_num_shards(config)


if __name__ == "__main__":
  check_sharded_matches_vmapped()
