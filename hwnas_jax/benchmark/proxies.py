"""Training-free accuracy proxies, as FreeREA defines them, in jitted JAX.

  * `naswot` (Mellor et al., 2021): log |det K|, K[i, j] = number of ReLU units (over
    every ReLU of the network) on which images i and j are both active or both
    inactive; the network is freshly initialised, batch norm uses batch statistics.
  * `logsynflow` (FreeREA): synflow with a log-scaled gradient. Batch norm removed,
    every weight replaced by its absolute value, float64, one input image of ones,
    loss = sum of the logits; score = sum over conv and linear weights w of
    |w * log(dL/dw + 1e-6)|. Every convolution the architecture holds counts, also one
    on a dead path (zero gradient), as in the PyTorch network.
  * `skip`: the mean, over skip connections, of how many intermediate nodes each one
    jumps (0 when there is none); a function of the architecture alone.
FLOPs and parameter counts come from `searchspace.flops_params_table`.

The bundle's values are means over 3 image batches x 3 random initialisations
(batch 64). Here every architecture is scored with `num_inits` initialisations drawn
from `fold_in(key(seed), index)` and every batch of 64 images given (the bundle's 128
images: 2 batches), so a run is reproducible and can resume anywhere. Where K is singular (no ReLU ever sees the
images, e.g. a cell whose output is always zero) the log-determinant is -inf, and the
bundle stores 1e-6: so does `score`.

Scoring one architecture at a time (`score`, the (6,) int form of the network) runs
only the chosen operation of each edge: the fastest way on a CPU. `score_batch`
vmaps over architectures (the masked supernet): one call, for accelerators.
`jitted_scorers` gives the jitted pieces (init, one NASWOT, one log-synflow).
"""

from __future__ import annotations

import functools
import re
from typing import Any, Mapping

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from hwnas_jax.benchmark import network as network_lib
from hwnas_jax.benchmark import searchspace

NUM_INITS = 3
BATCH_SIZE = 64
LOG_EPS = 1e-6  # FreeREA: log(grad + 1e-6)
SINGULAR_NASWOT = 1e-6  # the bundle's value where K is singular
# Intermediate nodes each edge jumps over (edge (i, j) skips j - i - 1 nodes).
SKIP_LENGTH = np.array([dst - src - 1 for src, dst in searchspace.EDGES], np.float64)
# ImageNet16-120's test transform in FreeREA's data loaders (ToTensor, then Normalize);
# its stored image batches, which the published values came from, are raw uint8.
IMAGENET16_MEAN = (0.4810980392156863, 0.45749019607843133, 0.4078823529411765)
IMAGENET16_STD = (0.247921568627451, 0.24023529411764705, 0.2552549019607843)
_EDGE_PARAM = re.compile(r"^edge(\d)_(\w+)$")
# Extra XLA options for compiling the scorers, e.g. {"xla_backend_optimization_level": 0}
# (the tests' tiny networks then compile in a third of the time). Set before first use.
COMPILER_OPTIONS: dict[str, Any] = {}


# --- cheap proxies: the architecture alone ----------------------------------------------------

def skip(ops: np.ndarray) -> np.ndarray:
  """Portion of skipped layers of (..., 6) architectures (FreeREA's `skip`)."""
  is_skip = np.asarray(ops) == network_lib.SKIP
  count = is_skip.sum(axis=-1)
  return np.where(count > 0, (is_skip * SKIP_LENGTH).sum(axis=-1) / np.maximum(count, 1), 0.0)


def flops_params(indices: np.ndarray, dataset: str = "cifar10") -> tuple[np.ndarray, np.ndarray]:
  """(MFLOPs, M params) of the indexed architectures (NATS-Bench's counting)."""
  flops, params = searchspace.flops_params_table(dataset)
  indices = np.asarray(indices, np.int64)
  return flops[indices], params[indices]


# --- images -------------------------------------------------------------------------------

def prepare_images(images: np.ndarray, batch_size: int = BATCH_SIZE,
                   imagenet16_transform: bool = False) -> np.ndarray:
  """NCHW images -> (num_batches, batch_size, H, W, C) float32.

  Raw uint8 images (the bundle's ImageNet16-120) are fed as they are, 0..255, as FreeREA
  fed its stored uint8 batches: on 8 architectures that gave the bundle's NASWOT to
  0.2 % on average, the loaders' ImageNet16 transform (`imagenet16_transform=True`)
  0.7 % too high on every one (scale does not matter: a batch norm follows the stem).
  Float images are taken as normalised already (the bundle's CIFAR batches). Images
  beyond a whole number of batches are dropped.
  """
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[1] != 3:
    raise ValueError(f"expected NCHW images with 3 channels, got shape {images.shape}")
  if images.dtype == np.uint8 and imagenet16_transform:
    mean = np.array(IMAGENET16_MEAN, np.float32)[:, None, None]
    std = np.array(IMAGENET16_STD, np.float32)[:, None, None]
    images = (images.astype(np.float32) / 255.0 - mean) / std
  num_batches = images.shape[0] // batch_size
  if num_batches == 0:
    raise ValueError(f"need at least {batch_size} images for one batch, got {images.shape[0]}")
  images = network_lib.nhwc(images[:num_batches * batch_size].astype(np.float32))
  return images.reshape((num_batches, batch_size) + images.shape[1:])


# --- the proxies of one initialisation ------------------------------------------------------

def activity(ops: Any) -> jax.Array:
  """(6, 5) float32: 1 where an edge holds an operation (the one-hot of any ops form)."""
  form = network_lib.ops_form(ops)
  if form == "masked":
    return jnp.asarray(ops, jnp.float32)
  return jax.nn.one_hot(jnp.asarray(ops), searchspace.NUM_OPS, dtype=jnp.float32)


def naswot_logdet(network: network_lib.TinyNetwork, params: Mapping, images: jax.Array,
                  ops: Any) -> jax.Array:
  """log |det K| of one batch (NHWC) and one initialisation; -inf where K is singular."""
  net = network.clone(relu_kernel=True, use_batchnorm=True)
  _, state = net.apply({"params": params}, images, ops, mutable=["intermediates"])
  kernel = state["intermediates"]["relu_kernel"][0]
  dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
  return jnp.linalg.slogdet(kernel.astype(dtype))[1]


def logsynflow_value(network: network_lib.TinyNetwork, params: Mapping, ops: Any,
                     image_shape: tuple[int, int, int]) -> jax.Array:
  """FreeREA's log-synflow of one initialisation; needs x64 (values reach 1e40)."""
  if not jax.config.jax_enable_x64:
    raise RuntimeError("logsynflow needs float64: call it inside `with jax.enable_x64(True):`")
  net = network.clone(use_batchnorm=False, relu_kernel=False)
  absolute = jax.tree_util.tree_map(lambda w: jnp.abs(w).astype(jnp.float64), params)
  ones = jnp.ones((1,) + tuple(image_shape), jnp.float64)
  grads = jax.grad(lambda p: jnp.sum(net.apply({"params": p}, ones, ops)))(absolute)
  mask = activity(ops)
  flat_w, flat_g = traverse_util.flatten_dict(absolute), traverse_util.flatten_dict(grads)
  total = jnp.zeros((), jnp.float64)
  for path, w in flat_w.items():
    if path[-1] != "kernel":  # conv and linear weights only, as FreeREA
      continue
    term = jnp.sum(jnp.abs(w * jnp.log(flat_g[path] + LOG_EPS)))
    edge = _EDGE_PARAM.match(path[-2]) if len(path) >= 2 else None
    if edge:  # a candidate operation: counts only where the architecture holds it
      term = term * mask[int(edge.group(1)), searchspace.OPS.index(edge.group(2))]
    total = total + term
  return total


# --- the averaged scores, jitted -------------------------------------------------------------

def proxy_scores(network: network_lib.TinyNetwork, num_inits: int, rng: jax.Array,
                 ops: Any, batches: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(naswot, logsynflow) of one architecture: means over inits x image batches."""
  shapes = network_lib.param_shapes(network.clone(relu_kernel=False, use_batchnorm=True))

  def one_init(key):
    params = network_lib.sample_params(key, shapes)
    naswot = jax.vmap(lambda x: naswot_logdet(network, params, x, ops))(batches)
    return naswot, logsynflow_value(network, params, ops, batches.shape[2:])

  naswot, logsynflow = jax.lax.map(one_init, jax.random.split(rng, num_inits))
  naswot = jnp.mean(naswot.astype(jnp.float64))
  naswot = jnp.where(jnp.isfinite(naswot), naswot, SINGULAR_NASWOT)
  return naswot, jnp.mean(logsynflow)


@functools.lru_cache(maxsize=None)
def _jitted(network: network_lib.TinyNetwork, num_inits: int, batched: bool):
  fn = functools.partial(proxy_scores, network, num_inits)
  if batched:
    fn = jax.vmap(fn, in_axes=(0, 0, None))
  return jax.jit(fn, compiler_options=COMPILER_OPTIONS or None)


@functools.lru_cache(maxsize=None)
def jitted_scorers(network: network_lib.TinyNetwork, image_shape: tuple[int, int, int]):
  """Jitted `init(key) -> params`, `naswot(params, images, ops)` (log |det K|) and
  `logsynflow(params, ops)` (call it under x64). Three small programs compile far faster
  than `proxy_scores` in one piece (minutes on two CPU cores), and run as fast."""
  shapes = network_lib.param_shapes(network.clone(relu_kernel=False, use_batchnorm=True))
  jit = functools.partial(jax.jit, compiler_options=COMPILER_OPTIONS or None)
  init = jit(lambda key: network_lib.sample_params(key, shapes))
  naswot = jit(functools.partial(naswot_logdet, network))
  synflow = jit(lambda params, ops: logsynflow_value(network, params, ops, image_shape))
  return init, naswot, synflow


def arch_keys(seed: int, indices: np.ndarray) -> jax.Array:
  """One key per architecture, fixed by its index: any subset scores the same."""
  base = jax.random.key(seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(indices, jnp.uint32))


def score(network: network_lib.TinyNetwork, ops: np.ndarray, batches: np.ndarray, *,
          index: int = 0, seed: int = 0, num_inits: int = NUM_INITS) -> tuple[float, float]:
  """(naswot, logsynflow) of one architecture ((6,) ints); compiled once for all of them."""
  ops = np.asarray(ops, np.int32)
  if ops.shape != (searchspace.NUM_EDGES,):
    raise ValueError(f"expected {searchspace.NUM_EDGES} operation indices, got shape {ops.shape}")
  batches = np.asarray(batches, np.float32)
  with jax.enable_x64(True):
    init, naswot, synflow = jitted_scorers(network, tuple(batches.shape[2:]))
    ops = jnp.asarray(ops)
    logdets, synflows = [], []
    for key in jax.random.split(arch_keys(seed, np.array([index]))[0], num_inits):
      params = init(key)
      logdets += [naswot(params, jnp.asarray(batch), ops) for batch in batches]
      synflows.append(synflow(params, ops))
    logdet = float(np.mean(np.asarray(logdets, np.float64)))
    return (logdet if np.isfinite(logdet) else SINGULAR_NASWOT,
            float(np.mean(np.asarray(synflows))))


def score_batch(network: network_lib.TinyNetwork, ops: np.ndarray, batches: np.ndarray, *,
                indices: np.ndarray | None = None, seed: int = 0,
                num_inits: int = NUM_INITS) -> tuple[np.ndarray, np.ndarray]:
  """(naswot, logsynflow) of (A, 6) architectures in one vmapped call (masked supernet).

  Same keys as `score` (by index), so both agree to rounding; on a CPU it computes every
  operation of every edge, so `score` in a loop is faster there.
  """
  ops = np.asarray(ops, np.int32)
  indices = np.arange(len(ops)) if indices is None else np.asarray(indices)
  with jax.enable_x64(True):
    rngs = arch_keys(seed, indices)
    onehot = jnp.asarray(searchspace.one_hot(ops))
    naswot, synflow = _jitted(network, num_inits, True)(rngs, onehot, jnp.asarray(batches))
    return np.asarray(naswot), np.asarray(synflow)
