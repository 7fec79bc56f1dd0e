"""PPO over batches of synthetic-device episodes, the whole update one jitted function.

Each update samples `num_devices` fresh (device, budget, dataset) episodes, rolls the
policy out on all of them (e.g. `episode.batch_rollout`), computes GAE advantages over the K
steps and takes `num_epochs` x `num_minibatches` clipped-surrogate steps. Observations are
the probe histories themselves, so storing a rollout costs O(K) numbers per step, not
the 15,625 candidate features, which the loss recomputes.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax


class TrainState(NamedTuple):
  params: Any
  opt_state: Any
  step: jnp.ndarray


def gae(rewards, values, gamma: float, lam: float):
  """Advantages and returns of fixed-horizon episodes (axis -1: steps; terminal value 0)."""

  def backward(carry, xs):
    next_value, next_advantage = carry
    reward, value = xs
    delta = reward + gamma * next_value - value
    advantage = delta + gamma * lam * next_advantage
    return (value, advantage), advantage

  zeros = jnp.zeros(rewards.shape[:-1])
  _, advantages = jax.lax.scan(backward, (zeros, zeros),
                               (jnp.moveaxis(rewards, -1, 0), jnp.moveaxis(values, -1, 0)),
                               reverse=True)
  advantages = jnp.moveaxis(advantages, 0, -1)
  return advantages, advantages + values


def normalize_advantages(advantages, axis_name=None):
  """Zero mean, unit std over the minibatch: over every shard's part when `axis_name` is set."""
  if axis_name is None:
    return (advantages - advantages.mean()) / (advantages.std() + 1e-8)
  mean = jax.lax.pmean(advantages.mean(), axis_name)  # shards hold equal shares
  std = jnp.sqrt(jax.lax.pmean(jnp.mean((advantages - mean)**2), axis_name))
  return (advantages - mean) / (std + 1e-8)


def ppo_loss(params, apply_fn, batch, advantages, returns, config, axis_name=None):
  logits, values = jax.vmap(apply_fn, in_axes=(None, 0))(params, batch.obs)
  log_probs_all = jax.nn.log_softmax(logits)
  log_prob = jnp.take_along_axis(log_probs_all, batch.action[:, None], axis=-1)[:, 0]
  ratio = jnp.exp(log_prob - batch.log_prob)
  advantages = normalize_advantages(advantages, axis_name)
  clipped = jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps)
  policy_loss = -jnp.minimum(ratio * advantages, clipped * advantages).mean()
  value_clipped = batch.value + jnp.clip(values - batch.value, -config.clip_eps, config.clip_eps)
  value_loss = 0.5 * jnp.maximum((values - returns)**2, (value_clipped - returns)**2).mean()
  probs = jnp.exp(log_probs_all)
  entropy = -jnp.sum(jnp.where(probs > 0, probs * log_probs_all, 0.0), axis=-1).mean()
  loss = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy
  return loss, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}


def make_optimizer(config) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                     optax.adam(config.learning_rate, eps=1e-5))


def make_update(config, apply_fn: Callable, rollout_fn: Callable,
                optimizer: optax.GradientTransformation, grad_reduce: Callable = lambda g: g,
                axis_name=None):
  """`update(state, key) -> (state, metrics)`: one rollout and its PPO epochs.

  `rollout_fn(policy_params, key) -> (Transition [episodes, steps], metrics)` plays one
  batch of fresh episodes; `grad_reduce` averages gradients across devices when the
  batch is sharded (identity on one device), and `axis_name`, the shards' axis, makes the
  advantage normalisation global (see `sharding`).
  """

  def update(state: TrainState, key):
    key_roll, key_perm = jax.random.split(key)
    traj, rollout_metrics = rollout_fn(state.params, key_roll)
    batch_size = traj.reward.size  # episodes x steps, static
    minibatch_size = batch_size // config.num_minibatches
    advantages, returns = gae(traj.reward, traj.value, config.gamma, config.gae_lambda)
    flat = jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]),
                        (traj, advantages, returns))

    def epoch(carry, key):
      params, opt_state = carry
      perm = jax.random.permutation(key, batch_size)
      shuffled = jax.tree.map(lambda x: x[perm].reshape(
          (config.num_minibatches, minibatch_size) + x.shape[1:]), flat)

      def minibatch(carry, mb):
        params, opt_state = carry
        (loss, aux), grads = jax.value_and_grad(ppo_loss, has_aux=True)(
            params, apply_fn, *mb, config, axis_name)
        grads = grad_reduce(grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), {"loss": loss, **aux}

      return jax.lax.scan(minibatch, (params, opt_state), shuffled)

    (params, opt_state), losses = jax.lax.scan(
        epoch, (state.params, state.opt_state), jax.random.split(key_perm, config.num_epochs))
    metrics = {**rollout_metrics, **jax.tree.map(jnp.mean, losses)}
    return TrainState(params, opt_state, state.step + 1), metrics

  return update
