"""Meta-training over many accelerators: the episode batch split over a mesh of devices.

One update of `ppo.make_update(..., axis_name=AXIS)` is written once, per shard: each of
S shards plays `num_devices / S` fresh episodes with its own key (`fold_in(key,
axis_index)`), normalises advantages with the global mean and std, averages gradients
(`pmean`) before every optimizer step, and averages its metrics. Parameters and optimizer
state are replicated, so every shard takes the same step.

The same per-shard function runs in two ways with the same mathematics:
  * `make_sharded_update`: `shard_map` over a `Mesh` of S devices, jitted (training);
  * `make_vmapped_update`: `jax.vmap(..., axis_name=AXIS)` over S shards on one device
    (the reference the tests compare against).

Multi-host: set `HWNAS_MULTIHOST=1` (and JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID unless a cluster manager such as SLURM provides them) and importing this
module calls `jax.distributed.initialize()` before any computation; the mesh then spans
`jax.devices()`, every device of every host.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hwnas_jax.metatrain import config as config_lib


AXIS = "shards"
MULTIHOST_ENV = "HWNAS_MULTIHOST"


def initialize_multihost() -> None:
  """`jax.distributed.initialize()` from the environment; must precede any JAX computation."""
  if jax.distributed.is_initialized():
    return
  num_processes = os.environ.get("JAX_NUM_PROCESSES")
  process_id = os.environ.get("JAX_PROCESS_ID")
  jax.distributed.initialize(
      num_processes=None if num_processes is None else int(num_processes),
      process_id=None if process_id is None else int(process_id))


if os.environ.get(MULTIHOST_ENV, "0") not in ("", "0"):
  initialize_multihost()  # at import: train.py imports this before it computes anything


def check_num_shards(config) -> int:
  """`config.num_shards`, refused (ValueError) unless the devices and the batch allow it."""
  num_shards = int(config.num_shards)
  multihost = jax.process_count() > 1
  available = jax.device_count() if multihost else jax.local_device_count()
  where = (f"{jax.process_count()} hosts" if multihost
           else f"this host ({jax.default_backend()})")
  if num_shards < 1 or num_shards > available:
    raise ValueError(
        f"config.num_shards={num_shards} but {where} has {available} device(s); on CPU "
        f"force more with XLA_FLAGS=--xla_force_host_platform_device_count={num_shards}")
  if multihost and num_shards != available:
    raise ValueError(f"config.num_shards={num_shards}: with {jax.process_count()} hosts it "
                     f"must be the global device count, {available}")
  if config.num_devices % num_shards:
    raise ValueError(f"config.num_shards={num_shards} does not divide "
                     f"config.num_devices={config.num_devices}")
  items, what = config_lib.minibatch_items(config)
  if items % config.num_minibatches:
    raise ValueError(f"each shard's {items} {what} do not split into "
                     f"config.num_minibatches={config.num_minibatches}")
  return num_shards


def episodes_per_shard(config) -> int:
  return config.num_devices // check_num_shards(config)


def make_mesh(num_shards: int, devices=None) -> Mesh:
  """A 1-D mesh over the first `num_shards` of `devices` (default: all hosts' devices)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices[:num_shards]), (AXIS,))


def replicate(tree, sharding: NamedSharding):
  """Every leaf onto the mesh, replicated: a no-op for leaves already there (after update 1).

  Weak types are made strong, as the update returns them, so the second call does not
  compile again. With several hosts, device_put refuses a host-local array committed to
  one device, so those go through numpy (keys through their raw data).
  """

  def put(x):
    if getattr(x, "sharding", None) == sharding and not getattr(x, "weak_type", False):
      return x
    if getattr(x, "weak_type", False):
      x = jnp.asarray(x, x.dtype)
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    return jax.device_put(np.asarray(x), sharding)

  return jax.tree.map(put, tree)


def make_sharded_update(shard_update: Callable, config, devices=None) -> Callable:
  """Jitted `update(state, data)` over `config.num_shards` devices (all inputs replicated).

  `shard_update` is one shard's update, written with collectives over `AXIS` (for example
  `ppo.make_update(..., axis_name=AXIS)`, or that vmapped over seeds).
  """
  num_shards = check_num_shards(config)
  mesh = make_mesh(num_shards, devices)
  # check_vma=False: gradients stay per shard until the explicit pmean, as under vmap
  # (with it, grad would already sum over shards the replicated parameters' cotangents).
  sharded = jax.shard_map(shard_update, mesh=mesh, in_specs=(P(), P()), out_specs=(P(), P()),
                          check_vma=False)
  replicated = NamedSharding(mesh, P())
  jitted = jax.jit(sharded, in_shardings=(replicated, replicated),
                   out_shardings=(replicated, replicated))

  def update(state, data):
    return jitted(*replicate((state, data), replicated))

  update.jitted = jitted  # for `.lower(...)` in benchmarks
  update.mesh = mesh
  return update


def make_vmapped_update(shard_update: Callable, config) -> Callable:
  """The sharded update's reference: the same shards under `vmap` on one device."""
  batched = jax.vmap(shard_update, in_axes=(None, None), axis_name=AXIS,
                     axis_size=check_num_shards(config))

  def update(state, data):
    return jax.tree.map(lambda x: x[0], batched(state, data))  # every shard holds the same

  return jax.jit(update)
