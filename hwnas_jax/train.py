"""Meta-training: `train_and_evaluate(config, workdir)`, resumable, with metrics on disk.

Only training-free proxies and synthetic devices enter here: the prior is fitted on the
training devices of PROTOCOL.md and no test accuracy is read.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
import time
from typing import Any, Callable, NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from hwnas_jax import bench
from hwnas_jax import controller as controller_lib
from hwnas_jax import deploy
from hwnas_jax import episode
from hwnas_jax import paper
from hwnas_jax import ppo
from hwnas_jax import searchspace
from hwnas_jax import sharding
from hwnas_jax import synthetic

CHECKPOINT = "checkpoint.msgpack"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
EVAL_SEED = 10_000  # held-out synthetic devices: a key stream training never draws from


EMBEDDED_PRIOR = "assets/prior_shapes.json"


def training_inputs(config, data_dir: str | None = None,
                    proxy_files: dict[str, str] | None = None):
  """(raw proxy per dataset (3, N), (prior, sampler), description of what was used).

  With the bundle: the paper's proxy and a prior fitted on the 13 training devices.
  Without it (no --data_dir, no $HWNAS_DATA_DIR): the parameter count as the proxy and
  the prior embedded in the package (fitted on the same training devices).
  """
  if data_dir is None and not os.environ.get(bench.DATA_DIR_ENV):
    if config.prior == "paper":
      raise bench.BenchmarkDataError("the paper prior is fitted on the bundle's training "
                                     f"devices: set ${bench.DATA_DIR_ENV} or --data_dir")
    proxies = np.stack([bench.minmax(searchspace.flops_params_table(d)[1])
                        for d in searchspace.DATASETS]).astype(np.float32)
    raw = importlib.resources.files("hwnas_jax").joinpath(EMBEDDED_PRIOR).read_text()
    embedded = json.loads(raw)
    prior = synthetic.prior_from_shapes(np.asarray(embedded["shapes"]))
    return proxies, (prior, synthetic.sample_devices), (
        f"NO BENCHMARK BUNDLE (set ${bench.DATA_DIR_ENV}): embedded defaults, the parameter "
        f"count as accuracy proxy and the prior of hwnas_jax/{EMBEDDED_PRIOR} (fitted on "
        f"{', '.join(embedded['devices'])})")
  benchmark = bench.load_benchmark(data_dir, proxy_files=proxy_files)
  tables = synthetic.training_tables(benchmark)
  proxies = np.stack([benchmark.proxy(d) for d in searchspace.DATASETS]).astype(np.float32)
  if config.prior == "paper":
    prior = (synthetic.fit_paper_prior(tables), synthetic.sample_paper_devices)
  else:
    prior = (synthetic.fit_prior(tables), synthetic.sample_devices)
  return proxies, prior, (
      f"bundle {benchmark.source}: the paper proxy of {', '.join(searchspace.DATASETS)}; "
      f"{config.prior} prior fitted on {len(tables)} training devices ({', '.join(tables)})")


def embedded_prior_json(data_dir: str | None = None) -> str:
  """The file behind EMBEDDED_PRIOR: each training device's fitted shape (no table)."""
  tables = synthetic.training_tables(bench.load_benchmark(data_dir))
  shapes = [synthetic.device_shape(synthetic.fit_device(tables[name])).tolist()
            for name in sorted(tables)]
  return json.dumps({"devices": sorted(tables), "shapes": shapes}, indent=1)


class Agent(NamedTuple):
  """What meta-training and deployment need of a controller, whichever kind it is."""
  apply: Callable    # (params, obs) -> (logits, value)
  init: Callable     # key -> params
  rollout: Callable  # (params, EpisodeParams, key, greedy) -> (transitions, score, valid)
  method: Callable   # params -> search.Method


def make_agent(config, proxies_raw: np.ndarray | None = None) -> Agent:
  """The controller named by `config.name`, rolling out over the given proxy tables."""
  # Without proxy tables (deployment) rollouts are never called: any placeholder will do.
  proxies = jnp.asarray(np.linspace(0, 1, searchspace.NUM_ARCHS, dtype=np.float32)[None]
                        if proxies_raw is None else proxies_raw)
  num_probes = config.num_probes
  if config.name == "paper_controller":
    model = paper.PaperPolicy()
    return Agent(
        model.apply,
        lambda key: model.init(key, jnp.zeros((paper.HISTORY, paper.NUM_ACTIONS + 1))),
        lambda params, ep, key, greedy=False: paper.batch_rollout(
            model.apply, params, ep, key, proxies, num_probes, greedy),
        functools.partial(paper.paper_method, model))
  model = controller_lib.Controller(hidden_size=config.hidden_size)
  proxies_std = jnp.asarray(np.stack([controller_lib.standardize(p) for p in np.asarray(proxies)]))
  apply = controller_lib.policy_apply(model, proxies_std)

  def rollout(params, ep, key, greedy=False):
    transitions = episode.batch_rollout(apply, params, ep, key, proxies, num_probes, greedy)
    return (transitions, *episode.episode_score(transitions))

  return Agent(
      apply,
      lambda key: model.init(key, controller_lib.empty_observation(num_probes),
                             jnp.zeros(searchspace.NUM_ARCHS)),
      rollout, functools.partial(deploy.controller_method, model))


def random_rollout(ep, key, proxies_raw, num_probes):
  """Uniform over the unprobed candidates: the random-search reference on synthetic devices."""

  def apply(params, obs: controller_lib.Observation):
    del params
    mask = jnp.arange(obs.probe_index.shape[0]) < obs.num_probed
    probed = jnp.zeros(searchspace.NUM_ARCHS, bool).at[obs.probe_index].max(mask)
    return jnp.where(probed, controller_lib.MASKED, 0.0), jnp.zeros(())

  return episode.episode_score(episode.batch_rollout(apply, None, ep, key, proxies_raw,
                                                     num_probes))


def save_checkpoint(workdir: str, state: ppo.TrainState, key) -> None:
  payload = flax.serialization.to_bytes({"state": state, "key": jax.random.key_data(key)})
  tmp = os.path.join(workdir, CHECKPOINT + ".tmp")
  with open(tmp, "wb") as f:
    f.write(payload)
  os.replace(tmp, os.path.join(workdir, CHECKPOINT))  # atomic: an interruption loses nothing


def restore_checkpoint(workdir: str, state: ppo.TrainState, key):
  path = os.path.join(workdir, CHECKPOINT)
  if not os.path.exists(path):
    return state, key
  with open(path, "rb") as f:
    template = {"state": state, "key": jax.random.key_data(key)}
    restored = flax.serialization.from_bytes(template, f.read())
  return restored["state"], jax.random.wrap_key_data(restored["key"])


def load_policy(workdir: str):
  """(config, agent, params) of a finished or running meta-training workdir."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  config_path = os.path.join(workdir, CONFIG)
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"no meta-training run in {workdir!r} (looked for {config_path})")
  if not os.path.exists(os.path.join(workdir, CHECKPOINT)):
    raise FileNotFoundError(f"{workdir!r} has no checkpoint yet")
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f)["config"])
  agent = make_agent(config)
  params = agent.init(jax.random.key(0))
  state = ppo.TrainState(params, ppo.make_optimizer(config).init(params), jnp.array(0))
  state, _ = restore_checkpoint(workdir, state, jax.random.key(0))
  return config, agent, state.params


def train_and_evaluate(config, workdir: str, data_dir: str | None = None,
                       log: Callable[[str], None] = print,
                       proxy_files: dict[str, str] | None = None) -> dict[str, Any]:
  """Meta-train into `workdir` (resuming from its checkpoint); `proxy_files` maps a dataset
  to a proxy table (e.g. from experiments.score_proxies) replacing the bundle's."""
  os.makedirs(workdir, exist_ok=True)
  proxies_np, (prior, sample_devices), source = training_inputs(config, data_dir, proxy_files)
  log(f"meta-training data: {source}")
  proxies_raw = jnp.asarray(proxies_np)
  agent = make_agent(config, proxies_np)
  with open(os.path.join(workdir, CONFIG), "w") as f:
    json.dump({"config": config.to_dict(), "source": source}, f, indent=1)

  def sample_fn(key, num):
    return episode.sample_episodes(key, prior, num, proxies_raw, config.budget_percentiles,
                                   sample_devices)

  optimizer = ppo.make_optimizer(config)
  key, init_key = jax.random.split(jax.random.key(config.seed))
  params = agent.init(init_key)
  state = ppo.TrainState(params, optimizer.init(params), jnp.array(0))
  state, key = restore_checkpoint(workdir, state, key)
  if int(state.step):
    log(f"resuming from update {int(state.step)} in {workdir}")
  # One shard's share of the episodes; with one shard, all of them.
  rollout_fn = sharding.shard_rollout(agent.rollout, sample_fn, config)
  if config.get("num_shards", 1) > 1:  # the episodes split over accelerators
    update = sharding.make_sharded_update(config, agent.apply, rollout_fn, optimizer)
  else:
    update = jax.jit(ppo.make_update(config, agent.apply, rollout_fn, optimizer))

  eval_key = jax.random.key(EVAL_SEED)
  eval_params = jax.jit(sample_fn, static_argnums=1)(eval_key, config.eval_devices)
  evaluate = jax.jit(lambda params: agent.rollout(params, eval_params, eval_key, True)[1:])
  random_score, random_valid = jax.jit(lambda: random_rollout(
      eval_params, eval_key, proxies_raw, config.num_probes))()
  reference = {"random_score": float(random_score.mean()),
               "random_feasible_rate": float(random_valid.mean())}

  metrics_path = os.path.join(workdir, METRICS)
  last: dict[str, Any] = {}
  progress = tqdm(range(int(state.step), config.num_updates), desc="meta-train", unit="update",
                  initial=int(state.step), total=config.num_updates)
  for step in progress:
    key, update_key = jax.random.split(key)
    start = time.perf_counter()
    state, metrics = update(state, update_key)
    metrics = jax.tree.map(float, metrics)
    metrics.update(step=step + 1, seconds=time.perf_counter() - start,
                   probe_steps=config.num_devices * config.num_probes)
    if (step + 1) % config.eval_every == 0 or step + 1 == config.num_updates:
      score, valid = evaluate(state.params)
      metrics.update(eval_score=float(score.mean()), eval_feasible_rate=float(valid.mean()),
                     **reference)
    with open(metrics_path, "a") as f:
      f.write(json.dumps(metrics) + "\n")
    progress.set_postfix(score=f"{metrics['score']:.3f}", feas=f"{metrics['feasible_rate']:.2f}")
    if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.num_updates:
      save_checkpoint(workdir, state, key)
    last = metrics
  return last
