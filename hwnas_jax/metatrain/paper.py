"""The paper-faithful controller (sim-is-more, DESIGN.md), kept to stand beside ours.

What it keeps from the authors' code: edit actions (set one edge to one operation, 30
actions), an observation of the last 5 (architecture, latency) pairs, the reward
`TF(a) * (1e-3 + L(a))^-0.3 - 1` with TF the paper's proxy, an MLP policy (64-64 tanh, as
Stable-Baselines3's default), PPO with gamma 0.6 and lr 3e-4, a one-number-per-operator
truncated-normal device prior, and the last architecture as the answer.
Like the authors' code, it min-max normalises latency with the device's fastest and slowest
architecture: in training from the synthetic device's table, in deployment from the target's
table. Those two numbers are the one thing it reads beyond its K probes, which no other
method may; without them (the host device) it cannot run. The factor (1e-3 + L)^-0.3 is
what makes the fastest architectures win: with L measured against the budget instead,
nothing comes near L = 0 and the policy maximises the proxy far over budget.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices import synthetic
from hwnas_jax.metatrain.env import EpisodeParams, Transition

HISTORY = 5
NUM_ACTIONS = searchspace.NUM_EDGES * searchspace.NUM_OPS
OBS_SIZE = HISTORY * (NUM_ACTIONS + 1)


@chex.dataclass(frozen=True)
class State:
  ops: jax.Array      # (6,) current architecture
  history: jax.Array  # (HISTORY, 31) one-hot architecture and L of the last probes


def ops_index(ops):
  """(6,) operation indices -> NATS-Bench index, inside jitted edits."""
  codes = jnp.dot(ops, jnp.asarray(searchspace.CODE_WEIGHTS, jnp.int32))
  return jnp.asarray(searchspace.code_to_index(), jnp.int32)[codes]


def normalised_latency(latency_ms, latency_range):
  low, high = latency_range
  return jnp.clip((jnp.asarray(latency_ms) - low) / (high - low), 0.0, 1.0)


def paper_reward(proxy, latency_norm):
  return proxy * (1e-3 + latency_norm) ** -0.3 - 1.0


def observe(history, ops, latency_norm):
  """The paper episode's step: the newest (architecture, L) enters the last-5 history."""
  entry = jnp.concatenate([jax.nn.one_hot(ops, searchspace.NUM_OPS).reshape(-1),
                           latency_norm[None]])
  return jnp.concatenate([history[1:], entry[None]], axis=0)


class PaperPolicy(nn.Module):
  """Separate actor and critic MLPs (64-64 tanh) over the flattened history."""

  @nn.compact
  def __call__(self, obs):
    x = obs.reshape(-1)
    actor = nn.tanh(nn.Dense(64)(nn.tanh(nn.Dense(64)(x))))
    critic = nn.tanh(nn.Dense(64)(nn.tanh(nn.Dense(64)(x))))
    return nn.Dense(NUM_ACTIONS)(actor), nn.Dense(1)(critic)[0]


def rollout(apply_fn, policy_params, params: EpisodeParams, key, proxies_raw, num_probes: int,
            greedy: bool = False):
  """One episode: a random first architecture, then K-1 edits, every one measured.

  Returns (transitions over the K-1 edit steps, answer's proxy / best proxy within budget
  if the last architecture is within budget else 0, whether it is).
  """
  key_init, key_measure, key_steps = jax.random.split(key, 3)
  proxy = proxies_raw[params.dataset]
  table = synthetic.latency_table(params.device)
  latency_range = (jnp.min(table), jnp.max(table))
  first = jax.random.randint(key_init, (), 0, searchspace.NUM_ARCHS)
  ops = jnp.asarray(searchspace.arch_ops())[first]
  latency_ms = synthetic.measure(params.device, first, key_measure)
  history = observe(jnp.zeros((HISTORY, NUM_ACTIONS + 1)), ops,
                 normalised_latency(latency_ms, latency_range))

  def one_step(carry, key):
    state, _ = carry
    key_act, key_measure = jax.random.split(key)
    logits, value = apply_fn(policy_params, state.history)
    log_probs = jax.nn.log_softmax(logits)
    action = jnp.argmax(logits) if greedy else jax.random.categorical(key_act, logits)
    ops = state.ops.at[action // searchspace.NUM_OPS].set(action % searchspace.NUM_OPS)
    index = ops_index(ops)
    latency_ms = synthetic.measure(params.device, index, key_measure)
    latency_norm = normalised_latency(latency_ms, latency_range)
    reward = paper_reward(proxy[index], latency_norm)
    latency_rel = latency_ms / params.budget_ms
    transition = Transition(obs=state.history, action=action, arch=index,
                            log_prob=log_probs[action],
                            value=value, reward=reward, latency_rel=latency_rel,
                            valid=latency_rel <= 1.0)
    return (State(ops=ops, history=observe(state.history, ops, latency_norm)), index), transition

  (_, last), transitions = jax.lax.scan(one_step, (State(ops=ops, history=history), first),
                                        jax.random.split(key_steps, num_probes - 1))
  valid = transitions.latency_rel[-1] <= 1.0
  score = jnp.where(valid, proxy[last] / params.oracle_proxy, 0.0)
  return transitions, score, valid


def batch_rollout(apply_fn, policy_params, params: EpisodeParams, key, proxies_raw,
                  num_probes: int, greedy: bool = False):
  keys = jax.random.split(key, params.budget_ms.shape[0])
  return jax.vmap(rollout, in_axes=(None, None, 0, 0, None, None, None))(
      apply_fn, policy_params, params, keys, proxies_raw, num_probes, greedy)
