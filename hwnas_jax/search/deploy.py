"""Deployment: a meta-trained controller as a search method on a real (or table) device.

The controller spends its K probes through the handle's `measure` and nothing else. Each
measurement enters its observation through the episode's own step (`env.observe`, or the
paper controller's `paper.observe`), the very function the jitted rollout of meta-training
uses, so what it sees deployed is what it saw in training; its answer follows the rule its
reward is computed with (`noise.answer`; a checkpoint of 0.5.0 or earlier was rewarded under
the fallback of its day, the most confident probe).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices import noise
from hwnas_jax.metatrain import checkpoint
from hwnas_jax.metatrain import controller as controller_lib
from hwnas_jax.metatrain import env
from hwnas_jax.metatrain import paper
from hwnas_jax.metatrain import train
from hwnas_jax.search import interface

# Latencies beyond this many budgets (or inf: cannot run) enter the observation capped.
MAX_LATENCY_REL = 1e6


@functools.lru_cache(maxsize=8)
def _standardized(proxy_bytes: bytes) -> jax.Array:
  return jnp.asarray(controller_lib.standardize(np.frombuffer(proxy_bytes)))


def controller_method(model: controller_lib.Controller, params) -> interface.Method:
  """Greedy in-context search with a trained `Controller`."""
  choose = jax.jit(lambda obs, proxy_std: env.arch_of_action(
      obs, jnp.argmax(model.apply(params, obs, proxy_std)[0])))
  observe = jax.jit(env.observe)

  def method(task: interface.Task, target: interface.ProbeHandle,
             rng: np.random.Generator) -> int | None:
    del rng  # greedy: the device's answers are the only source of variation
    proxy_std = _standardized(np.asarray(task.proxy, np.float64).tobytes())
    obs = env.empty_observation(task.num_probes, noise_prior=task.noise_prior)
    indices, latencies = [], []
    for _ in range(task.num_probes):
      index = int(choose(obs, proxy_std))
      latencies.append(target.measure(index))
      indices.append(index)
      obs = observe(obs, index, min(noise.ratio_float32(latencies[-1], task.budget_ms),
                                    MAX_LATENCY_REL))
    return noise.answer(indices, latencies, task.budget_ms, task.proxy,
                        noise_prior=task.noise_prior)[0]

  return method


def paper_method(model: paper.PaperPolicy, params) -> interface.Method:
  """Deployment as in the paper: K-1 greedy edits from a random start; answer = the last.

  Like the authors' code it min-max normalises latency with the target's fastest and
  slowest architecture; the harness hands it those two numbers (`task.latency_range_ms`,
  because it asks for them with `reads_table_range`), which no other method gets.
  """
  logits_fn = jax.jit(lambda history: model.apply(params, history)[0])

  def method(task: interface.Task, target: interface.ProbeHandle,
             rng: np.random.Generator) -> int:
    if task.latency_range_ms is None:
      raise ValueError("paper_controller min-max normalises latency with the target's table, "
                       f"and device {target.name!r} has none")
    latency_range = task.latency_range_ms
    index = int(rng.integers(searchspace.NUM_ARCHS))
    ops = np.array(searchspace.arch_ops()[index])
    history = paper.observe(jnp.zeros((paper.HISTORY, paper.NUM_ACTIONS + 1)), ops,
                            paper.normalised_latency(target.measure(index), latency_range))
    for _ in range(task.num_probes - 1):
      action = int(jnp.argmax(logits_fn(history)))
      ops[action // searchspace.NUM_OPS] = action % searchspace.NUM_OPS
      index = searchspace.ops_to_index(ops)
      history = paper.observe(history, ops,
                              paper.normalised_latency(target.measure(index), latency_range))
    return index

  method.reads_table_range = True
  return method


def check_finite_params(what: str, params) -> None:
  """ValueError when any parameter is NaN or inf: a diverged controller would still pick
  architectures (argmax of NaN is index 0) and score as if it worked."""
  bad = [jax.tree_util.keystr(path) for path, x in jax.tree_util.tree_leaves_with_path(params)
         if not np.all(np.isfinite(np.asarray(x)))]
  if bad:
    raise ValueError(f"{what} has non-finite parameters (NaN or inf in "
                     f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): its training "
                     "diverged; retrain it (a lower learning rate, proxies that vary)")


def load_methods(workdir: str, untrained: bool = False) -> tuple[Any, list[interface.Method]]:
  """(the run's config, one method per trained seed) of a meta-training workdir.

  `untrained`: the same controllers with the parameters they started from, to show what
  meta-training adds.
  """
  config, policies = train.load_policies(workdir)
  for seed, params in policies:
    check_finite_params(f"the checkpoint of seed {seed} in {workdir!r}", params)
  if untrained:  # the start of training, its in-context start as training saved it
    init = jax.jit(train.make_train(config).init)
    policies = [(seed, init(jax.random.key(seed)).params) for seed, _ in policies]
    start = checkpoint.read_in_context_start(workdir)
    if train.fits_in_context_start(config):
      if start is None:
        raise ValueError(f"{workdir!r} was trained from a fitted in-context start that it did "
                         "not keep (a run of an earlier version): retrain it to show its "
                         "untrained start")
      policies = [(seed, controller_lib.with_in_context_prior(params, *start))
                  for seed, params in policies]
  return config, [method_of(config, jax.device_get(params)) for _, params in policies]


def method_of(config, params) -> interface.Method:
  """The method of a controller `config` with `params` (numpy); its `recipe` is how a
  process of its own (`isolation.Runner`) rebuilds it, without reading the workdir again."""
  make = paper_method if config.name == "paper_controller" else controller_method
  method = make(train.make_model(config), params)
  method.recipe = functools.partial(method_of, config, params)
  return method
