"""Deployment: a meta-trained controller as a search method on a real (or table) device.

The controller spends its K probes through `device.measure` and nothing else; its answer
is the best-proxy architecture it measured within budget.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hwnas_jax import controller as controller_lib
from hwnas_jax import search


def controller_method(model, params) -> search.Method:
  """Greedy in-context search with a trained `Controller`."""
  logits_fn = jax.jit(lambda obs, proxy_std: model.apply(params, obs, proxy_std)[0])
  standardized = functools.lru_cache(maxsize=8)(
      lambda key: jnp.asarray(controller_lib.standardize(np.frombuffer(key))))

  def method(task: search.Task, device, rng: np.random.Generator) -> int | None:
    del rng  # greedy: the device's answers are the only source of variation
    proxy_std = standardized(np.asarray(task.proxy, np.float64).tobytes())
    probe_index = np.zeros(task.num_probes, np.int32)
    latency_rel = np.zeros(task.num_probes, np.float32)
    probed = {}
    for t in range(task.num_probes):
      obs = controller_lib.Observation(jnp.asarray(probe_index), jnp.asarray(latency_rel),
                                       jnp.array(t, jnp.int32), jnp.array(0, jnp.int32))
      index = int(jnp.argmax(logits_fn(obs, proxy_std)))
      latency_ms = device.measure(index)
      probed[index] = latency_ms
      probe_index[t], latency_rel[t] = index, min(latency_ms / task.budget_ms, 1e6)
    return search.best_valid(probed, task.proxy, task.budget_ms)

  return method


def load_method(workdirs: str, name: str = "controller") -> search.Method:
  """The method `name` from meta_train --workdir(s) (comma-separated; latest checkpoint).

  With several workdirs, the one whose run trained `name` is used.
  """
  from hwnas_jax import train  # pylint: disable=import-outside-toplevel (train imports us)
  found = []
  for workdir in workdirs.split(","):
    config, agent, params = train.load_policy(workdir)
    if config.name == name:
      return agent.method(params)
    found.append(f"{workdir!r} holds a {config.name!r} run")
  raise ValueError(f"no {name!r} run in --checkpoint: {'; '.join(found)}")
