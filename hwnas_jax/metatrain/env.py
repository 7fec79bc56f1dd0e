"""The search episode as an environment in gymnax's style: pure functions of pytrees.

An episode is K probes of one device under one budget. Its parameters (`EpisodeParams`:
a synthetic device, the budget, which proxy table) are a pytree, so `jax.vmap` over them
runs thousands of variants at once. `observe` is the one step of the episode: it adds a
measured latency to the observation. The jitted rollout calls it after measuring a
synthetic device, and deployment calls the same function after measuring a real one.

The reward telescopes to the protocol's objective with the proxy in place of test accuracy:
after every probe, the score of the answer the episode would give if it stopped there
(`noise.answer_slot`: the best confirmed architecture measured within budget, else the best
likely one), its proxy
over the best proxy within budget if its true (noise-free) latency is within budget, else
0 (or `-invalid_penalty`: a wrong answer worse than a weaker one); the reward is the change
of that score.
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp

from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices import noise
from hwnas_jax.devices import synthetic


@chex.dataclass(frozen=True)
class Observation:
  """What a controller sees: its own probe history (indices, latency / budget), how many
  probes the episode may spend, and what it was told of the device's noise (None: nothing,
  as in meta-training). Slots beyond `num_probes` are padding: one batch of episodes can
  mix probe budgets."""
  probe_index: jax.Array  # (S,) int32, valid for slots < num_probed
  latency_rel: jax.Array  # (S,) float32 measured latency / budget
  num_probed: jax.Array   # () int32
  dataset: jax.Array      # () int32 which proxy table the episode uses
  num_probes: jax.Array   # () int32 the episode's probe budget K <= S
  sigma_log_prior: Any = None  # (G,) `noise.sigma_log_prior` of a known noise level


def empty_observation(num_probes: int, dataset=0, noise_prior=None,
                      num_slots: int | None = None) -> Observation:
  """`noise_prior` (`noise.checked_noise_prior`): the device's noise when it is known;
  `num_slots` (static, >= any K of the batch; default `num_probes`) the history's length."""
  num_slots = num_probes if num_slots is None else num_slots
  return Observation(probe_index=jnp.zeros(num_slots, jnp.int32),
                     latency_rel=jnp.zeros(num_slots, jnp.float32),
                     num_probed=jnp.array(0, jnp.int32),
                     dataset=jnp.asarray(dataset, jnp.int32),
                     num_probes=jnp.asarray(num_probes, jnp.int32),
                     sigma_log_prior=(None if noise_prior is None
                                      else jnp.asarray(noise.sigma_log_prior(noise_prior))))


def observe(obs: Observation, index, latency_rel) -> Observation:
  """The episode's step: architecture `index` was measured at `latency_rel` x the budget."""
  slot = obs.num_probed
  return obs.replace(probe_index=obs.probe_index.at[slot].set(jnp.asarray(index, jnp.int32)),
                     latency_rel=obs.latency_rel.at[slot].set(
                         jnp.asarray(latency_rel, jnp.float32)),
                     num_probed=slot + 1)


@chex.dataclass(frozen=True)
class EpisodeParams:
  device: Any               # synthetic.SyntheticDevice
  budget_ms: jax.Array      # ()
  dataset: jax.Array        # () int32
  oracle_proxy: jax.Array   # () best raw proxy within budget: the reward's scale
  num_probes: Any = None    # () int32 the episode's K (None: the rollout's number of steps)
  sigma_log_prior: Any = None  # (G,) what the episode is told of the noise (None: nothing)


@chex.dataclass(frozen=True)
class EnvState:
  obs: Observation
  score: jax.Array  # () the score of the answer if the episode stopped now


@chex.dataclass(frozen=True)
class Transition:
  obs: Any  # the observation the action was chosen on (a controller's or the paper's)
  action: jax.Array   # the policy's action (a candidate, or N + k: repeat probe slot k)
  arch: jax.Array     # the architecture it measured
  log_prob: jax.Array
  value: jax.Array
  reward: jax.Array
  latency_rel: jax.Array
  valid: jax.Array  # () the answer after this step is within budget, truly
  entropy: Any = None  # the policy's entropy where the actor computed it (a metric)
  live: Any = None  # () the step was within the episode's K (None: every step is)


# A told noise level is this factor wide either side of the device's own sigma.
NOISE_TOLD_FACTOR = 1.5


def quantile_by_bisection(values, fraction, iterations: int = 30):
  """The smallest x with share(values <= x) >= fraction, to float precision.

  XLA's sort is slow on CPU (2 s for 256 devices x 15,625); 30 counting passes are not.
  """

  def bisect(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    enough = jnp.mean(values <= mid) >= fraction
    return jnp.where(enough, lo, mid), jnp.where(enough, mid, hi)

  _, hi = jax.lax.fori_loop(0, iterations, bisect, (jnp.min(values), jnp.max(values)))
  return hi


def draw_num_probes(key, num: int, num_probes_range, power: float = 0.0) -> jax.Array:
  """(num,) int32 probe budgets K in [low, high], P(K) proportional to K ** -power."""
  low, high = int(num_probes_range[0]), int(num_probes_range[1])
  if not power:  # uniform: the draws of the code before the power existed
    return jax.random.randint(key, (num,), low, high + 1)
  values = jnp.arange(low, high + 1)
  logits = -float(power) * jnp.log(values.astype(jnp.float32))
  return values[jax.random.categorical(key, logits, shape=(num,))].astype(jnp.int32)


def sample_episodes(key, prior, num: int, proxies_raw: jax.Array,
                    budget_percentiles=(5.0, 60.0),
                    sample_devices: Callable = synthetic.sample_devices,
                    num_probes_range=(), noise_told_share: float = 0.0,
                    num_probes_power: float = 0.0) -> EpisodeParams:
  """`num` synthetic devices, each with a budget percentile and a dataset drawn at random;
  with `num_probes_range` (low, high) a probe budget K drawn in it with probability
  proportional to K ** -num_probes_power (0: uniform; small K is where the first probes
  must be safe, and uniform draws give K = 3 one episode in 18); with
  `noise_told_share` > 0 that share of the episodes told their device's noise, as a range
  NOISE_TOLD_FACTOR wide either side (what earlier searches of a device tell a user)."""
  num_probes = None
  if num_probes_range:
    key, key_k = jax.random.split(key)
    num_probes = draw_num_probes(key_k, num, num_probes_range, num_probes_power)
  told = None
  if noise_told_share > 0:
    key, key_told = jax.random.split(key)
    told = jax.random.uniform(key_told, (num,)) < noise_told_share
  key_device, key_q, key_data = jax.random.split(key, 3)
  devices = sample_devices(key_device, prior, num)
  tables = jax.vmap(synthetic.latency_table)(devices)
  q = jax.random.uniform(key_q, (num,), minval=budget_percentiles[0],
                         maxval=budget_percentiles[1])
  # A few devices at a time: their tables stay in cache through the 30 passes (2-3x on CPU).
  budget_ms = jax.lax.map(lambda x: quantile_by_bisection(*x), (tables, q / 100.0),
                          batch_size=min(num, 8))
  dataset = jax.random.randint(key_data, (num,), 0, proxies_raw.shape[0])
  feasible = tables <= budget_ms[:, None]
  oracle = jnp.max(jnp.where(feasible, proxies_raw[dataset], 0.0), axis=1)
  sigma_log_prior = None
  if told is not None:
    ranges = jax.vmap(noise.range_log_prior)(devices.noise / NOISE_TOLD_FACTOR,
                                             devices.noise * NOISE_TOLD_FACTOR)
    sigma_log_prior = jnp.where(told[:, None], ranges, 0.0)
  return EpisodeParams(device=devices, budget_ms=budget_ms, dataset=dataset,
                       oracle_proxy=oracle, num_probes=num_probes,
                       sigma_log_prior=sigma_log_prior)


def reset(params: EpisodeParams, num_slots: int) -> EnvState:
  num_probes = num_slots if params.num_probes is None else params.num_probes
  obs = empty_observation(num_probes, params.dataset, num_slots=num_slots)
  return EnvState(obs=obs.replace(sigma_log_prior=params.sigma_log_prior),
                  score=jnp.array(0.0, jnp.float32))


def arch_of_action(obs: Observation, action):
  """The architecture an action measures: candidate `action` < N, or for a repeat action
  N + k the architecture of probe slot k (the controllers' action encoding, `candidates`)."""
  num = searchspace.NUM_ARCHS
  slot = jnp.clip(action - num, 0, obs.probe_index.shape[0] - 1)
  return jnp.where(action < num, action, obs.probe_index[slot])


def probe_stats(obs: Observation) -> noise.ProbeStats:
  """What the observation's probes say (noise, confidences), for the answer and controllers."""
  return noise.probe_stats(obs.probe_index, noise.log_rel(obs.latency_rel, 1.0), obs.num_probed,
                           obs.sigma_log_prior)


def answer(obs: Observation, proxy) -> tuple[jax.Array, jax.Array]:
  """(architecture index, whether there is one) the episode answers now (`noise.answer_slot`)."""
  slot, found = noise.answer_slot(probe_stats(obs), proxy[obs.probe_index])
  return obs.probe_index[slot], found


def step(key, params: EpisodeParams, state: EnvState, action, proxies_raw,
         invalid_penalty=0.0):
  """Measure architecture `action` on the synthetic device (probe noise included):
  (next state, reward, latency / budget, whether the answer is now truly within budget).

  Without a valid answer the score is `-invalid_penalty`, so the return of an episode that
  ends without one is that, and the policy weighs a risky answer against a safe one. Once
  the episode's K probes are spent a step changes nothing (reward 0)."""
  latency_ms = synthetic.measure(params.device, action, key)
  latency_rel = (latency_ms / params.budget_ms).astype(jnp.float32)
  live = state.obs.num_probed < state.obs.num_probes
  obs = jax.tree.map(lambda new, old: jnp.where(live, new, old),
                     observe(state.obs, action, latency_rel), state.obs)
  proxy = proxies_raw[params.dataset]
  index, found = answer(obs, proxy)
  valid = found & (synthetic.latency(params.device, index) <= params.budget_ms)
  score = jnp.where(valid, proxy[index] / params.oracle_proxy, -invalid_penalty)
  return EnvState(obs=obs, score=score), score - state.score, latency_rel, valid, live


def batch_rollout(act_fn: Callable, policy_params, params: EpisodeParams, key, proxies_raw,
                  num_probes: int, greedy: bool = False, invalid_penalty=0.0) -> Transition:
  """A batch of episodes (leading axis: episodes; second: steps), as one scan over the K steps.

  `act_fn(policy_params, obs, keys, greedy) -> (action, log_prob, value, entropy or None)`
  chooses for the whole batch at once (leading axis: episodes), so the policy can score
  the candidates of many observations in one pass (`controller.actor`). Each episode has
  its own key (split K ways, one per step; each step's key split into the action's and
  the measurement's). `num_probes` is the number of steps (the slots of the history);
  episodes with a smaller K of their own (`params.num_probes`) stop early, their later
  steps marked not `live`.
  """
  num = params.budget_ms.shape[0]
  keys = jax.vmap(lambda k: jax.random.split(k, num_probes))(jax.random.split(key, num))

  def one_step(state, step_keys):
    pairs = jax.vmap(jax.random.split)(step_keys)
    action, log_prob, value, entropy = act_fn(policy_params, state.obs, pairs[:, 0], greedy)
    arch = jax.vmap(arch_of_action)(state.obs, action)
    next_state, reward, latency_rel, valid, live = jax.vmap(
        step, in_axes=(0, 0, 0, 0, None, None))(pairs[:, 1], params, state, arch, proxies_raw,
                                                invalid_penalty)
    return next_state, Transition(obs=state.obs, action=action, arch=arch, log_prob=log_prob,
                                  value=value, reward=reward, latency_rel=latency_rel,
                                  valid=valid, entropy=entropy,
                                  live=None if params.num_probes is None else live)

  state = jax.vmap(reset, in_axes=(0, None))(params, num_probes)
  _, transitions = jax.lax.scan(one_step, state, jnp.swapaxes(keys, 0, 1))
  return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), transitions)


def episode_score(transitions: Transition) -> tuple[jax.Array, jax.Array]:
  """(answer proxy / best feasible proxy, 0 if invalid; whether the answer is valid)."""
  valid = transitions.valid[..., -1]
  return jnp.where(valid, transitions.reward.sum(-1), 0.0), valid
