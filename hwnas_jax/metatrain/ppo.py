"""PPO over batches of synthetic-device episodes, the whole update one jitted function.

Each update samples `num_devices` fresh (device, budget, dataset) episodes, rolls the
policy out on all of them (e.g. `episode.batch_rollout`), computes GAE advantages over the K
steps and takes `num_epochs` x `num_minibatches` clipped-surrogate steps. Observations are
the probe histories themselves, so storing a rollout costs O(K) numbers per step, not
the 15,625 candidate features, which the loss recomputes.
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import optax


@chex.dataclass(frozen=True)
class TrainState:
  """Everything one controller's training carries from update to update (a pytree, so
  `jax.vmap` over a leading axis trains several seeds at once)."""
  params: Any
  opt_state: Any
  step: jax.Array  # () int32, updates done
  key: jax.Array   # the key of the next update


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


def masked_mean(x, weights=None):
  """The mean of `x`, over the steps with weight 1 only when `weights` (0 or 1) are given:
  the steps past an episode's K carry no decision."""
  if weights is None:
    return x.mean()
  return jnp.sum(x * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def normalize_advantages(advantages, axis_name=None, weights=None):
  """Zero mean, unit std over the minibatch (its live steps when `weights` are given): over
  every shard's part when `axis_name` is set."""
  if axis_name is None:
    mean = masked_mean(advantages, weights)
    std = jnp.sqrt(masked_mean((advantages - mean)**2, weights))
    return (advantages - mean) / (std + 1e-8)
  count = 1.0 if weights is None else jax.lax.pmean(jnp.mean(weights), axis_name)
  live = 1.0 if weights is None else weights
  mean = jax.lax.pmean(jnp.mean(advantages * live), axis_name) / count  # equal shares
  std = jnp.sqrt(jax.lax.pmean(jnp.mean(live * (advantages - mean)**2), axis_name) / count)
  return (advantages - mean) / (std + 1e-8)


def ppo_loss(params, evaluate_fn: Callable, batch, advantages, returns, config, axis_name=None):
  """Clipped-surrogate loss of a minibatch of transitions, and its metrics.

  `evaluate_fn(params, obs, actions, entropy) -> (log_prob, value, entropy or None)` scores
  the minibatch (leading axis) under `params`; the entropy is asked for, and enters the
  loss, only when `config.ent_coef > 0`.
  """
  with_entropy = config.ent_coef > 0
  live = getattr(batch, "live", None)  # steps past an episode's K weigh nothing
  mean = lambda x: masked_mean(x, live)
  log_prob, values, entropy = evaluate_fn(params, batch.obs, batch.action, with_entropy)
  log_ratio = log_prob - batch.log_prob
  ratio = jnp.exp(log_ratio)
  advantages = normalize_advantages(advantages, axis_name, live)
  clipped = jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps)
  policy_loss = -mean(jnp.minimum(ratio * advantages, clipped * advantages))
  value_clipped = batch.value + jnp.clip(values - batch.value, -config.clip_eps, config.clip_eps)
  value_loss = 0.5 * mean(jnp.maximum((values - returns)**2, (value_clipped - returns)**2))
  loss = policy_loss + config.vf_coef * value_loss
  metrics = {"policy_loss": policy_loss, "value_loss": value_loss}
  if with_entropy:
    entropy = mean(entropy)
    loss = loss - config.ent_coef * entropy
    metrics["entropy"] = entropy
  # Outside the gradient: how far the policy moved from the one that played the rollout.
  log_ratio = jax.lax.stop_gradient(log_ratio)
  metrics["approx_kl"] = mean(jnp.expm1(log_ratio) - log_ratio)
  metrics["clip_fraction"] = mean(
      (jnp.abs(jax.lax.stop_gradient(ratio) - 1) > config.clip_eps).astype(jnp.float32))
  return loss, metrics


def dense_evaluate(apply_fn: Callable) -> Callable:
  """`evaluate(params, obs, actions, data, entropy)` of a policy with dense logits,
  `apply_fn(params, obs, data) -> (logits (A,), value ())` on one observation."""

  def evaluate(params, obs, actions, data, entropy: bool = False):
    logits, values = jax.vmap(apply_fn, in_axes=(None, 0, None))(params, obs, data)
    log_probs = jax.nn.log_softmax(logits)
    log_prob = jnp.take_along_axis(log_probs, actions[:, None], axis=-1)[:, 0]
    if not entropy:
      return log_prob, values, None
    probs = jnp.exp(log_probs)
    return log_prob, values, -jnp.sum(jnp.where(probs > 0, probs * log_probs, 0.0), axis=-1)

  return evaluate


def per_step(evaluate_fn: Callable) -> Callable:
  """An `evaluate(params, obs, actions, data, entropy)` of single steps (leading axis) made
  one of whole episodes (leading axes: episodes, steps), as `make_update` calls it when
  `config.episode_minibatches`."""

  def evaluate(params, obs, actions, data, entropy: bool = False):
    shape = actions.shape
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), obs)
    out = evaluate_fn(params, flat, actions.reshape(-1), data, entropy)
    return tuple(None if x is None else x.reshape(shape) for x in out)

  return evaluate


def make_optimizer(config) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                     optax.adam(config.learning_rate, eps=1e-5))


def make_update(config, evaluate_fn: Callable, rollout_fn: Callable,
                optimizer: optax.GradientTransformation, axis_name=None):
  """`update(state, data) -> (state, metrics)`: one rollout and its PPO epochs.

  `rollout_fn(policy_params, key, data) -> (Transition [episodes, steps], metrics)` plays
  one batch of fresh episodes; `evaluate_fn(params, obs, actions, data, entropy) ->
  (log_prob, value, entropy or None)` scores a minibatch (see `ppo_loss`): of steps
  (leading axis), or with `config.episode_minibatches` of whole episodes (leading axes:
  episodes, steps; `per_step` makes one of a per-step function). With
  `axis_name` (the shards' axis under `shard_map` or `vmap`, see `sharding`), every shard
  plays its own episodes (its key folded with its index), normalises advantages with the
  global statistics and averages gradients and metrics over the shards, so parameters and
  optimizer state stay the same on every shard.
  """

  def grad_reduce(grads):
    return grads if axis_name is None else jax.lax.pmean(grads, axis_name)

  def update(state: TrainState, data):
    next_key, key = jax.random.split(state.key)
    if axis_name is not None:
      key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    key_roll, key_perm = jax.random.split(key)
    traj, rollout_metrics = rollout_fn(state.params, key_roll, data)
    # Minibatches of whole episodes (config.episode_minibatches), so a recurrent policy reads
    # each history once, or of single steps shuffled across episodes (Stable-Baselines3's).
    by_episode = bool(config.get("episode_minibatches", False))
    batch_size = traj.reward.shape[0] if by_episode else traj.reward.size  # static
    minibatch_size = batch_size // config.num_minibatches
    values = traj.value
    if getattr(traj, "live", None) is not None:  # an episode ends at its own K: value 0 after
      traj = traj.replace(live=traj.live.astype(jnp.float32))
      values = values * traj.live
    advantages, returns = gae(traj.reward, values, config.gamma, config.gae_lambda)
    traj = traj.replace(entropy=None)  # a rollout metric, not needed by the loss
    flat = (traj, advantages, returns)
    if not by_episode:
      flat = jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]), flat)

    def evaluate(params, obs, actions, entropy):
      return evaluate_fn(params, obs, actions, data, entropy)

    def epoch(carry, key):
      params, opt_state = carry
      perm = jax.random.permutation(key, batch_size)
      shuffled = jax.tree.map(lambda x: x[perm].reshape(
          (config.num_minibatches, minibatch_size) + x.shape[1:]), flat)

      def minibatch(carry, mb):
        params, opt_state = carry
        (loss, aux), grads = jax.value_and_grad(ppo_loss, has_aux=True)(
            params, evaluate, *mb, config, axis_name)
        updates, opt_state = optimizer.update(grad_reduce(grads), opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), {"loss": loss, **aux}

      return jax.lax.scan(minibatch, (params, opt_state), shuffled)

    (params, opt_state), losses = jax.lax.scan(
        epoch, (state.params, state.opt_state), jax.random.split(key_perm, config.num_epochs))
    metrics = {**rollout_metrics, **jax.tree.map(jnp.mean, losses)}
    if axis_name is not None:
      metrics = jax.lax.pmean(metrics, axis_name)  # equal shares: the mean over all episodes
    return TrainState(params=params, opt_state=opt_state, step=state.step + 1,
                      key=next_key), metrics

  return update
