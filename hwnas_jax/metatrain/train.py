"""Meta-training: the factory `make_train(config) -> Trainer` and the resumable loop around it.

`Trainer.train(key, data)` is the whole run as one pure function, in purejaxrl's style
(`jax.vmap` it over keys for seeds); `init`, `update` and `evaluate` are its pieces, which
`train_and_evaluate` drives one update at a time to checkpoint, log and show progress.
Everything the jitted functions read (proxies, the prior, the held-out episodes) is a
`TrainData` argument, never a closed-over constant that XLA would fold at compile time.

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

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import progress as progress_lines
from hwnas_jax.benchmark import searchspace
from hwnas_jax.benchmark import tables
from hwnas_jax.devices import synthetic
from hwnas_jax.metatrain import candidates
from hwnas_jax.metatrain import checkpoint
from hwnas_jax.metatrain import config as config_lib
from hwnas_jax.metatrain import controller as controller_lib
from hwnas_jax.metatrain import env
from hwnas_jax.metatrain import paper
from hwnas_jax.metatrain import ppo
from hwnas_jax.metatrain import sharding

EVAL_SEED = 10_000  # held-out synthetic devices: a key stream training never draws from
# The synthetic devices the in-context model's start is fitted on (`fit_in_context_start`):
# a key stream of their own.
PRIOR_FIT_SEED = 20_000
PRIOR_FIT_DEVICES = 1024
EMBEDDED_PRIOR = "assets/prior_shapes.json"


@chex.dataclass(frozen=True)
class TrainData:
  """What meta-training reads besides the parameters; an argument of every jitted function."""
  proxies_raw: jax.Array    # (datasets, 15625) the proxy as the reward reads it
  proxies_std: jax.Array    # (datasets, 15625) the same in standard units (controller input)
  prior: Any                # synthetic.Prior or synthetic.PaperPrior
  eval_episodes: Any        # env.EpisodeParams: held-out synthetic episodes
  # (prior mean, prior scale) the controller's in-context model starts from, or None: the
  # flat start (`fit_in_context_start`).
  in_context_start: Any = None


def sampler(config) -> Callable:
  """`sample_devices(key, prior, num)` of the config's prior."""
  return synthetic.sample_paper_devices if config.prior == "paper" else synthetic.sample_devices


def reward_scale(proxy: np.ndarray) -> np.ndarray:
  """The proxy as the reward counts it: normal scores of its ranks, shifted so the worst
  architecture scores 0 (about 3.8 at the median, 7.6 at the best).

  Only the order of a proxy means anything, and a proxy's own scale can squash the top of
  the space (a min-max scaled log-rank sum puts half the space above 0.81): in normal scores
  the best of the feasible architectures stand out from the merely good ones, as they
  should when the episode is scored by the answer's proxy over the best within budget.
  """
  ranks = scipy.stats.rankdata(np.asarray(proxy, np.float64))
  scores = scipy.stats.norm.ppf(ranks / (len(ranks) + 1))
  return (scores - scores.min()).astype(np.float32)


def probes_range(config) -> tuple[int, ...]:
  """(low, high) K drawn per meta-training episode, or () for K = config.num_probes."""
  return tuple(int(k) for k in config.get("num_probes_range", ()))


def make_data(config, proxies_raw: np.ndarray, prior) -> TrainData:
  """`TrainData` from proxies (datasets, 15625) and a prior of the config's kind.

  The controller's reward reads the proxies on `reward_scale`; the paper-faithful
  controller's reward, as the authors', reads them as they are.
  """
  proxies_std = jnp.asarray(np.stack([controller_lib.standardize(p)
                                      for p in np.asarray(proxies_raw)]))
  if config.prior == "mixture":
    prior = prior.replace(fitted_weight=jnp.asarray(
        config.get("prior_fitted_weight", synthetic.FITTED_WEIGHT), jnp.float32))
  if config.name == "controller":
    proxies_raw = np.stack([reward_scale(p) for p in np.asarray(proxies_raw)])
  proxies_raw = jnp.asarray(proxies_raw, jnp.float32)
  sample = jax.jit(env.sample_episodes,
                   static_argnames=("num", "sample_devices", "num_probes_range",
                                    "noise_told_share", "num_probes_power"))
  eval_episodes = sample(jax.random.key(EVAL_SEED), prior, num=int(config.eval_devices),
                         proxies_raw=proxies_raw,
                         budget_percentiles=tuple(config.budget_percentiles),
                         sample_devices=sampler(config),
                         num_probes_range=probes_range(config),
                         noise_told_share=float(config.get("noise_told_share", 0.0)),
                         num_probes_power=float(config.get("num_probes_power", 0.0)))
  return TrainData(proxies_raw=proxies_raw, proxies_std=proxies_std, prior=prior,
                   eval_episodes=eval_episodes,
                   in_context_start=fit_in_context_start(config, prior, proxies_raw))


def fits_in_context_start(config) -> bool:
  """Whether the controller's in-context model starts from a fit (`fit_in_context_start`)
  rather than flat."""
  return (config.name == "controller"
          and config.get("in_context_prior", config_lib.FLAT_START) != config_lib.FLAT_START)


@functools.partial(jax.jit, static_argnames=("budget_percentiles", "sample_devices"))
def _fitted_start(key, prior, proxies_raw, budget_percentiles, sample_devices):
  episodes = env.sample_episodes(key, prior, PRIOR_FIT_DEVICES, proxies_raw,
                                 budget_percentiles, sample_devices)
  tables = jax.vmap(synthetic.latency_table)(episodes.device)
  return controller_lib.fit_in_context_prior(tables / episodes.budget_ms[:, None])


def fit_in_context_start(config, prior, proxies_raw) -> tuple[np.ndarray, float] | None:
  """(prior mean, prior scale) the controller's in-context model starts from, or None for
  the flat start (versions up to 0.9.0; the paper-faithful controller).

  "fitted": fitted on PRIOR_FIT_DEVICES devices of the config's prior, budgets drawn as in
  training (`controller.fit_in_context_prior`); only the prior enters, so a family it
  leaves out stays out. "fitted_wide": the same, its scale times `synthetic.COV_INFLATE`
  once more (the prior it is drawn from is already that wide; the start's own spread is
  widened again, for a family outside the fit).
  """
  if not fits_in_context_start(config):
    return None
  prior_mean, prior_scale = jax.device_get(_fitted_start(
      jax.random.key(PRIOR_FIT_SEED), prior, proxies_raw, tuple(config.budget_percentiles),
      sampler(config)))
  if config.in_context_prior == "fitted_wide":
    prior_scale = prior_scale * synthetic.COV_INFLATE
  if not (np.all(np.isfinite(prior_mean)) and np.isfinite(prior_scale) and prior_scale > 0):
    raise ValueError(f"the in-context start fitted to the prior is degenerate (mean "
                     f"{prior_mean}, scale {prior_scale}); use config.in_context_prior='flat'")
  return np.asarray(prior_mean, np.float32), float(prior_scale)


def training_data(config, data_dir: str | None = None,
                  proxy_files: dict[str, str] | None = None,
                  proxy_dirs=()) -> tuple[TrainData, str]:
  """(`TrainData`, what it was made from).

  With the bundle: the proxy `config.proxy` (extra proxy tables from `proxy_files` or
  `proxy_dirs`) and a prior fitted on the training devices (those of
  `config.held_out_family` left out). Without it (no --data_dir,
  no $HWNAS_DATA_DIR): the parameter count as the proxy and the prior embedded in the
  package (fitted on the same training devices).
  """
  if data_dir is None and not os.environ.get(tables.DATA_DIR_ENV):
    if config.prior == "paper":
      raise tables.BenchmarkDataError("the paper prior is fitted on the bundle's training "
                                      f"devices: set ${tables.DATA_DIR_ENV} or --data_dir")
    proxies = np.stack([aggregate.minmax(searchspace.flops_params_table(d)[1])
                        for d in searchspace.DATASETS])
    raw = importlib.resources.files("hwnas_jax").joinpath(EMBEDDED_PRIOR).read_text()
    embedded = json.loads(raw)
    prior = synthetic.prior_from_shapes(np.asarray(embedded["shapes"]),
                                        stepped=embedded.get("stepped", ()))
    return make_data(config, proxies, prior), (
        f"NO BENCHMARK BUNDLE (set ${tables.DATA_DIR_ENV}): embedded defaults, the parameter "
        f"count as accuracy proxy (not config.proxy={config.proxy!r}, which needs the bundle) "
        f"and the prior of hwnas_jax/{EMBEDDED_PRIOR} (fitted on "
        f"{', '.join(embedded['devices'])})")
  benchmark = tables.load_benchmark(data_dir, proxy_files=proxy_files, proxy_dirs=proxy_dirs)
  training = synthetic.training_tables(benchmark, held_out_family=config.held_out_family)
  proxies = np.stack([benchmark.proxy(d, config.proxy) for d in searchspace.DATASETS])
  prior = (synthetic.fit_paper_prior(training) if config.prior == "paper"
           else synthetic.fit_prior(training))
  held_out = (f", family {config.held_out_family!r} held out" if config.held_out_family
              else "")
  return make_data(config, proxies, prior), (
      f"bundle {benchmark.source}: proxy {config.proxy!r} of {', '.join(searchspace.DATASETS)}; "
      f"{config.prior} prior fitted on {len(training)} training devices ({', '.join(training)})"
      f"{held_out}")


def embedded_prior_json(data_dir: str | None = None) -> str:
  """The file behind EMBEDDED_PRIOR: each training device's fitted shape and whether its
  timer is stepped (no table)."""
  training = synthetic.training_tables(tables.load_benchmark(data_dir))
  fits = [synthetic.fit_device(training[name]) for name in sorted(training)]
  return json.dumps({"devices": sorted(training),
                     "shapes": [synthetic.device_shape(f).tolist() for f in fits],
                     "stepped": [bool(float(f.resolution) > 0) for f in fits]}, indent=1)


# --- agents: the two controllers behind one interface -----------------------------------

def make_model(config) -> nn.Module:
  """The Flax module of `config.name`: ours or the paper-faithful one."""
  if config.name == "paper_controller":
    return paper.PaperPolicy()
  return controller_lib.Controller(hidden_size=config.hidden_size)


class Agent(NamedTuple):
  """What meta-training needs of a controller, whichever kind it is."""
  init: Callable      # key -> params
  evaluate: Callable  # (params, obs, actions, data, entropy) -> (log_prob, value, entropy)
  rollout: Callable   # (params, episodes, key, data, greedy) -> (transitions, score, valid)


def make_agent(config) -> Agent:
  model, num_probes = make_model(config), config_lib.num_slots(config)
  by_episode = bool(config.get("episode_minibatches", False))  # how ppo calls `evaluate`
  if config.name == "paper_controller":
    evaluate = ppo.dense_evaluate(lambda params, obs, data: model.apply(params, obs))
    return Agent(
        init=lambda key: model.init(key, jnp.zeros((paper.HISTORY, paper.NUM_ACTIONS + 1))),
        evaluate=ppo.per_step(evaluate) if by_episode else evaluate,
        rollout=lambda params, episodes, key, data, greedy=False: paper.batch_rollout(
            model.apply, params, episodes, key, data.proxies_raw, num_probes, greedy))

  evaluate = (controller_lib.episode_evaluator if by_episode else controller_lib.evaluator)(model)

  def rollout(params, episodes, key, data, greedy=False):
    table = candidates.proxy_table(data.proxies_std)  # once per rollout, shared by every row
    transitions = env.batch_rollout(controller_lib.actor(model, table), params, episodes, key,
                                    data.proxies_raw, num_probes, greedy,
                                    float(config.invalid_penalty))
    return (transitions, *env.episode_score(transitions))

  return Agent(
      init=lambda key: model.init(key, env.empty_observation(num_probes),
                                  jnp.zeros(searchspace.NUM_ARCHS)),
      evaluate=lambda params, obs, actions, data, entropy=False: evaluate(
          params, obs, actions, candidates.proxy_table(data.proxies_std), entropy),
      rollout=rollout)


def random_score(data: TrainData, key, num_probes: int):
  """Uniform over the unprobed candidates on the held-out episodes: the reference."""
  table = candidates.proxy_table(data.proxies_std)

  def act(params, obs: env.Observation, keys, greedy=False):
    del params, greedy
    scores = jax.vmap(candidates.uniform_scores)(obs)
    action, log_prob, entropy = candidates.sample(keys, scores, table)
    return action, log_prob, jnp.zeros(action.shape), entropy

  return env.episode_score(env.batch_rollout(act, None, data.eval_episodes, key,
                                             data.proxies_raw, num_probes))


# --- the factory --------------------------------------------------------------------------

class Trainer(NamedTuple):
  """One controller's meta-training as pure functions (vmap them over seeds)."""
  agent: Agent
  init: Callable      # (key, data or None) -> ppo.TrainState; None: the flat start
  update: Callable    # (state, data) -> (state, metrics); one shard's when sharded
  evaluate: Callable  # (params, data) -> (score, valid) per held-out episode, greedy
  train: Callable     # (key, data) -> (state, metrics per update): the whole run


def make_train(config, axis_name: str | None = None) -> Trainer:
  """The trainer of `config`. With `axis_name` (the shards' axis), `update` plays this
  shard's `num_devices / num_shards` episodes and averages over shards (see `sharding`)."""
  agent, optimizer = make_agent(config), ppo.make_optimizer(config)
  num_shards = int(config.num_shards) if axis_name else 1
  episodes_per_update = int(config.num_devices) // num_shards
  sample_devices = sampler(config)

  def rollout_fn(params, key, data):
    key_sample, key_roll = jax.random.split(key)
    episodes = env.sample_episodes(key_sample, data.prior, episodes_per_update,
                                   data.proxies_raw, tuple(config.budget_percentiles),
                                   sample_devices, probes_range(config),
                                   float(config.get("noise_told_share", 0.0)),
                                   float(config.get("num_probes_power", 0.0)))
    transitions, score, valid = agent.rollout(params, episodes, key_roll, data)
    metrics = {"score": score.mean(), "feasible_rate": valid.mean()}
    if transitions.entropy is not None:  # the sampling policy's, free from the sampler
      metrics["entropy"] = transitions.entropy.mean()
    return transitions, metrics

  update = ppo.make_update(config, agent.evaluate, rollout_fn, optimizer, axis_name=axis_name)

  def init(key, data: TrainData | None = None) -> ppo.TrainState:
    """`data`: where the in-context start comes from (`TrainData.in_context_start`); None
    for the flat start (enough for the parameters' shapes)."""
    key_params, key_train = jax.random.split(key)
    params = agent.init(key_params)
    if data is not None and data.in_context_start is not None:
      params = controller_lib.with_in_context_prior(params, *data.in_context_start)
    return ppo.TrainState(params=params, opt_state=optimizer.init(params),
                          step=jnp.array(0, jnp.int32), key=key_train)

  def evaluate(params, data):
    return agent.rollout(params, data.eval_episodes, jax.random.key(EVAL_SEED), data,
                         True)[1:]

  def train(key, data):
    return jax.lax.scan(lambda state, _: update(state, data), init(key, data), None,
                        length=int(config.num_updates))

  return Trainer(agent=agent, init=init, update=update, evaluate=evaluate, train=train)


def make_update_fn(config, trainer: Trainer) -> Callable:
  """The jitted update of a batch of seeds (leading axis), sharded if the config says so.

  One seed runs the plain update (its leading axis of 1 dropped and restored): on CPU a
  vmap over one seed turns every matmul into a batched one and costs about 2x.
  """
  if len(checkpoint.seeds_of(config)) == 1:
    def batched(states, data):
      state, metrics = trainer.update(jax.tree.map(lambda x: x[0], states), data)
      return jax.tree.map(lambda x: x[None], (state, metrics))
  else:
    batched = jax.vmap(trainer.update, in_axes=(0, None))
  if int(config.num_shards) > 1:
    return sharding.make_sharded_update(batched, config)
  return jax.jit(batched)


# Config fields that steer the loop or choose the data, never what the programs compute.
LOOP_AND_DATA_FIELDS = ("num_updates", "eval_every", "checkpoint_every", "seed",
                        "held_out_family", "proxy", "in_context_prior")
_PROGRAMS: dict[str, "Programs"] = {}
_MAX_PROGRAMS = 4


class Programs(NamedTuple):
  """The jitted functions of a run (leading axis of states and results: seeds)."""
  init: Callable           # (keys, data) -> states
  update: Callable         # (states, data) -> (states, metrics), `make_update_fn`
  evaluate: Callable       # (params, data) -> (score, valid) per seed and held-out episode
  params_finite: Callable  # params -> whether each seed's are all finite
  random_score: Callable   # (data, key, num_slots) -> random search's (score, valid)


def programs(config) -> Programs:
  """The run's jitted functions, built once per process and configuration: a resumed run,
  or the next held-out family of `experiments.family_study` (the same config but for
  LOOP_AND_DATA_FIELDS), neither traces nor compiles them again."""
  key = json.dumps({k: v for k, v in config.to_dict().items()
                    if k not in LOOP_AND_DATA_FIELDS}, sort_keys=True, default=repr)
  if key not in _PROGRAMS:
    while len(_PROGRAMS) >= _MAX_PROGRAMS:
      _PROGRAMS.pop(next(iter(_PROGRAMS)))  # the oldest
    config = config.copy_and_resolve_references()  # the key's values, whatever the caller does
    trainer = make_train(config, sharding.AXIS if int(config.num_shards) > 1 else None)
    _PROGRAMS[key] = Programs(
        init=jax.jit(jax.vmap(trainer.init, in_axes=(0, None))),
        update=make_update_fn(config, trainer),
        evaluate=jax.jit(jax.vmap(trainer.evaluate, in_axes=(0, None))),
        params_finite=jax.jit(jax.vmap(lambda params: jnp.all(jnp.stack(
            [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)])))),
        random_score=jax.jit(random_score, static_argnums=2))
  return _PROGRAMS[key]


# --- the resumable loop ------------------------------------------------------------------------

def _seed_states(config, workdir: str, resuming: bool, data: TrainData):
  """Initial (or restored) states of every seed, stacked; the update they resume from."""
  seeds = checkpoint.seeds_of(config)
  keys = jnp.stack([jax.random.key(s) for s in seeds])
  states = programs(config).init(keys, data)
  # Strong types from the start, so the update compiles once (init makes some weak).
  states = jax.tree.map(lambda x: jnp.asarray(x, x.dtype), states)
  if not resuming:
    return states, 0
  restored = [checkpoint.restore(workdir, s, jax.tree.map(lambda x: x[i], states))
              for i, s in enumerate(seeds)]
  if all(r is None for r in restored):
    return states, 0
  steps = {int(r.step) if r is not None else 0 for r in restored}
  if len(steps) > 1:
    raise ValueError(f"the seeds of {workdir!r} stopped at different updates {sorted(steps)}; "
                     "start afresh with --fresh")
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *restored), steps.pop()


class NonFiniteError(ValueError):
  """An update made the loss or the parameters NaN or infinite: the run stops there."""


def train_and_evaluate(config, workdir: str, *args, **kwargs) -> dict[str, Any]:
  """Meta-train `config.num_seeds` controllers into `workdir`, resuming from its checkpoints.

  Returns the last update's metrics averaged over seeds, with each seed's under "seeds".
  `proxy_files` maps a dataset to a proxy table (e.g. from experiments.score_proxies).
  The workdir is locked while the run writes to it (`checkpoint.locked`).
  """
  with checkpoint.locked(workdir):
    return _train_and_evaluate(config, workdir, *args, **kwargs)


def check_finite(step: int, seeds, loss: np.ndarray, params_finite: np.ndarray) -> None:
  """`NonFiniteError` naming the update and seeds whose loss or parameters are not finite
  (before they are saved: the last checkpoint stays the last finite one)."""
  bad = [seed for i, seed in enumerate(seeds)
         if not (np.isfinite(loss[i]) and params_finite[i])]
  if bad:
    raise NonFiniteError(
        f"update {step}: the loss or the parameters of seed(s) {bad} are not finite (NaN or "
        "inf); the run stops, its last checkpoint is the last finite one. Lower "
        "config.learning_rate or check the proxies (a constant proxy has no ranking)")


def _train_and_evaluate(config, workdir: str, data_dir: str | None = None,
                        log: Callable[[str], None] = print,
                        proxy_files: dict[str, str] | None = None,
                        fresh: bool = False, proxy_dirs=()) -> dict[str, Any]:
  config_lib.validate(config)
  data, source = training_data(config, data_dir, proxy_files, proxy_dirs)
  log(f"meta-training data: {source}")
  resuming = checkpoint.open_run(workdir, config, source, fresh, data.in_context_start)
  seeds = checkpoint.seeds_of(config)
  if int(config.num_shards) > 1:
    sharding.check_num_shards(config)
  jitted = programs(config)
  states, start = _seed_states(config, workdir, resuming, data)
  for seed in seeds:  # from 0, the untrained row (step 0) is written again below
    checkpoint.truncate_metrics(workdir, seed, start if start else -1)
  if start:
    log(f"resuming from update {start} in {workdir}")
  update, evaluate, params_finite = jitted.update, jitted.evaluate, jitted.params_finite
  reference_score, reference_valid = jitted.random_score(
      data, jax.random.key(EVAL_SEED), config_lib.num_slots(config))
  reference = {"random_score": float(reference_score.mean()),
               "random_feasible_rate": float(reference_valid.mean())}

  per_seed: list[dict[str, Any]] = [{} for _ in seeds]
  if start == 0:  # the untrained controller: step 0 of training_curve.png
    score, valid = jax.device_get(evaluate(states.params, data))
    for i, seed in enumerate(seeds):
      checkpoint.append_metrics(workdir, seed, {
          "step": 0, "eval_score": float(score[i].mean()),
          "eval_feasible_rate": float(valid[i].mean()), **reference})
  progress = progress_lines.bar(range(start, int(config.num_updates)), desc="meta-train",
                                unit="update", initial=start, total=int(config.num_updates))
  for step in progress:
    begin = time.perf_counter()
    states, metrics = update(states, data)
    metrics = jax.device_get(metrics)
    check_finite(step + 1, seeds, np.reshape(metrics["loss"], (len(seeds), -1)).sum(axis=1),
                 jax.device_get(params_finite(states.params)))
    seconds = time.perf_counter() - begin
    done = step + 1
    evaluated = done % config.eval_every == 0 or done == config.num_updates
    if evaluated:
      score, valid = jax.device_get(evaluate(states.params, data))
    for i, seed in enumerate(seeds):
      row = {name: float(value[i]) for name, value in metrics.items()}
      row.update(step=done, seconds=seconds,
                 probe_steps=int(config.num_devices) * config_lib.num_slots(config) * len(seeds))
      if evaluated:
        row.update(eval_score=float(score[i].mean()), eval_feasible_rate=float(valid[i].mean()),
                   **reference)
      checkpoint.append_metrics(workdir, seed, row)
      per_seed[i] = row
    progress.set_postfix(score=f"{np.mean(metrics['score']):.3f}",
                         feas=f"{np.mean(metrics['feasible_rate']):.2f}")
    if done % config.checkpoint_every == 0 or done == config.num_updates:
      for i, seed in enumerate(seeds):
        checkpoint.save(workdir, seed, jax.tree.map(lambda x: x[i], states))
  for seed in seeds:
    plot_training_curve(workdir, seed)
  if not per_seed[0]:  # nothing left to train: report the saved last lines
    per_seed = [checkpoint.read_metrics(workdir, s)[-1:] or [{}] for s in seeds]
    per_seed = [rows[0] for rows in per_seed]
  keys = set.intersection(*(set(row) for row in per_seed))
  mean = {k: float(np.mean([row[k] for row in per_seed])) for k in sorted(keys)}
  return {**mean, "seeds": per_seed}


def plot_training_curve(workdir: str, seed: int) -> str | None:
  """Held-out synthetic score of the greedy controller and of random search, per update."""
  rows = [m for m in checkpoint.read_metrics(workdir, seed) if "eval_score" in m]
  if not rows:
    return None
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(5, 3.5))
  steps = [m["step"] for m in rows]
  ax.plot(steps, [m["eval_score"] for m in rows], marker="o", ms=3, label="controller (greedy)")
  ax.plot(steps, [m["random_score"] for m in rows], ls="--", c="0.4", label="random search")
  ax.set_xlabel("update (0: untrained)")
  ax.set_ylabel("answer's score (1 = best within budget)")
  ax.set_title(f"held-out synthetic devices, seed {seed}")
  ax.set_ylim(0, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right")
  fig.tight_layout()
  path = os.path.join(checkpoint.seed_dir(workdir, seed), checkpoint.CURVE)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def load_policies(workdir: str) -> tuple[Any, list[tuple[int, Any]]]:
  """(config, [(seed, params), ...]) of a meta-training workdir, every trained seed."""
  config = checkpoint.read_config(workdir)
  seeds = checkpoint.trained_seeds(workdir)  # before any compiling: a clear error if none
  template = jax.jit(make_train(config).init)(jax.random.key(0))
  return config, [(seed, checkpoint.restore(workdir, seed, template).params) for seed in seeds]
