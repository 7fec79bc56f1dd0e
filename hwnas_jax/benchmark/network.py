"""The NATS-Bench topology network (xautodl `TinyNetwork`) in Flax.

One module, three ways to say which architecture it runs (`ops`):
  * a static tuple of 6 ints: a specialised network; only the chosen operations are
    built and `none` edges are skipped, so XLA compiles exactly that network (what a
    latency probe must time);
  * a (6,) int array: one compiled program for every architecture; each edge picks
    its operation with `lax.switch`, so on a CPU only the chosen operation runs
    (a cheap way to score many architectures one after the other), and the cells
    of a stage run as a `lax.scan`, so XLA compiles one cell per stage;
  * a (6, 5) one-hot array: a masked supernet that computes every operation and
    weights them by the one-hot, so `jax.vmap` over architectures works in one jit
    (under `vmap` the switch form turns into this too).
All three read the same parameters: the tree made by `init_params(rng)` (every
operation of every edge) serves any architecture; a specialised network ignores the
weights it does not use. Edges follow `searchspace.EDGES`, operations `searchspace.OPS`.
(`network.init` works as usual too: same distribution, other values, slow to compile.)

Batch norm uses the statistics of the batch, as a freshly built PyTorch network in
training mode does (that is how the published proxies were computed); no running
averages are kept, so `apply` needs no mutable collection. Initialisation follows
FreeREA (see KERNEL_INIT), not PyTorch's default.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hwnas_jax.benchmark import searchspace

NONE, SKIP, CONV1, CONV3, POOL = range(searchspace.NUM_OPS)
_CONV_KERNEL = {CONV1: 1, CONV3: 3}
BN_EPS = 1e-5  # PyTorch's default


# FreeREA's initialisation, which the bundle's proxies were computed with (its logsynflow
# values match it to 0.1 %, PyTorch's default init gives a third of them): He normal with
# fan_out for every conv and linear weight, zero linear bias, BN scale 1 and bias 0.
KERNEL_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class ConvBNParams(nn.Module):
  """The weights of one (ReLU-)Conv-BN, returned rather than applied.

  Returning arrays lets `lax.switch` choose among operations with pure functions
  (Flax modules cannot be called inside a raw JAX control-flow branch).
  """
  kernel_size: int
  features: int
  use_batchnorm: bool = True

  @nn.compact
  def __call__(self, in_features: int) -> dict[str, jax.Array]:
    k = self.kernel_size
    # float32 even under x64, so a key gives the same weights in every context.
    shape = (k, k, in_features, self.features)
    p = {"kernel": self.param("kernel", KERNEL_INIT, shape, jnp.float32)}
    if self.use_batchnorm:
      p["scale"] = self.param("scale", nn.initializers.ones, (self.features,), jnp.float32)
      p["bias"] = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return p


class BNParams(nn.Module):
  """Affine batch-norm weights alone (the network's last BN)."""
  features: int

  @nn.compact
  def __call__(self) -> dict[str, jax.Array]:
    return {"scale": self.param("scale", nn.initializers.ones, (self.features,), jnp.float32),
            "bias": self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)}


# --- pure building blocks ---------------------------------------------------------------

def batch_norm(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  """Normalise with the batch's own statistics; identity when the BN is disabled."""
  if "scale" not in p:
    return x
  mean = jnp.mean(x, axis=(0, 1, 2))
  var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))  # biased, as PyTorch normalises
  scale = p["scale"].astype(x.dtype) * jax.lax.rsqrt(var + BN_EPS)
  return (x - mean) * scale + p["bias"].astype(x.dtype)


def conv(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  pad = (kernel.shape[0] - 1) // 2
  return jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype), (stride, stride), [(pad, pad), (pad, pad)],
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def relu_conv_bn(p: dict[str, jax.Array], x: jax.Array, stride: int = 1) -> jax.Array:
  return batch_norm(p, conv(jax.nn.relu(x), p["kernel"], stride))


def avg_pool_3x3(x: jax.Array) -> jax.Array:
  """3x3, stride 1, padding 1, padded zeros not counted (count_include_pad=False).

  The sum of nine shifted slices of the padded input, one fused pass: 5x faster on a CPU
  than `reduce_window` (flax's `avg_pool`), equal to rounding.
  """
  h, w = x.shape[-3], x.shape[-2]
  pad = [(0, 0)] * (x.ndim - 3) + [(1, 1), (1, 1), (0, 0)]
  padded = jnp.pad(x, pad)
  total = sum(padded[..., i:i + h, j:j + w, :] for i in range(3) for j in range(3))
  return total * jnp.asarray(_inverse_window_counts(h, w), x.dtype)


@functools.lru_cache(maxsize=None)
def _inverse_window_counts(h: int, w: int) -> np.ndarray:
  """(h, w, 1): 1 / the number of in-image pixels of each 3x3 window."""
  def counts(n):
    c = np.full(n, 3.0)
    c[0] -= 1
    c[-1] -= 1
    return c
  return (1.0 / np.outer(counts(h), counts(w)))[:, :, None].astype(np.float32)


def relu_code_kernel(x: jax.Array) -> jax.Array:
  """(B, B) count of units on which two inputs share their ReLU state (NASWOT's K).

  With codes s in {-1, +1}, agreements = (s s^T + D) / 2: one matmul per ReLU, in int8
  with int32 sums (exact, and twice as fast as float32 on a CPU).
  """
  s = jnp.where(x > 0, 1, -1).astype(jnp.int8).reshape(x.shape[0], -1)
  dots = jax.lax.dot_general(s, s, (((1,), (1,)), ((), ())), preferred_element_type=jnp.int32)
  return 0.5 * (dots + s.shape[1]).astype(jnp.float32)


def apply_op(op: int, params: dict[int, dict], x: jax.Array) -> jax.Array:
  """The output of one edge for a static operation index."""
  if op == NONE:
    return jnp.zeros_like(x)
  if op == SKIP:
    return x
  if op == POOL:
    return avg_pool_3x3(x)
  return relu_conv_bn(params[op], x)


# --- architecture forms -------------------------------------------------------------------

def ops_form(ops: Any) -> str:
  """'static' (tuple of 6 ints), 'switch' ((6,) int array) or 'masked' ((6, 5) one-hot)."""
  if isinstance(ops, (tuple, list)):
    if len(ops) != searchspace.NUM_EDGES:
      raise ValueError(f"expected {searchspace.NUM_EDGES} operation indices, got {ops}")
    return "static"
  shape = tuple(np.shape(ops))
  if shape == (searchspace.NUM_EDGES,):
    return "switch"
  if shape == (searchspace.NUM_EDGES, searchspace.NUM_OPS):
    return "masked"
  e, k = searchspace.NUM_EDGES, searchspace.NUM_OPS
  raise ValueError(f"ops must be a tuple of {e} ints, a ({e},) int array or a ({e}, {k}) "
                   f"one-hot; got shape {shape}")


def _edge_output(form: str, op: Any, params: dict[int, dict], x: jax.Array) -> jax.Array:
  if form == "static":
    return apply_op(op, params, x)
  if form == "masked":  # every operation, weighted by the one-hot row
    outs = [x, relu_conv_bn(params[CONV1], x), relu_conv_bn(params[CONV3], x), avg_pool_3x3(x)]
    op = op.astype(x.dtype)
    return sum(op[k] * y for k, y in zip((SKIP, CONV1, CONV3, POOL), outs))
  branches = [lambda p, h, k=k: apply_op(k, p, h) for k in range(searchspace.NUM_OPS)]
  return jax.lax.switch(op, branches, params, x)


def _num_convs(form: str, ops: Any, edges: Sequence[int]):
  """How many ReLU-Conv-BN edges read a node (each of them is one hooked ReLU)."""
  if form == "static":
    return sum(int(ops[e] in _CONV_KERNEL) for e in edges)
  if form == "masked":
    return sum(ops[e, CONV1] + ops[e, CONV3] for e in edges)
  return sum(((ops[e] == CONV1) | (ops[e] == CONV3)).astype(jnp.float32) for e in edges)


def _weighted_kernel(form: str, count, x: jax.Array):
  if form == "static":
    return count * relu_code_kernel(x) if count else 0.0
  if form == "switch":  # skip the matmul when no convolution reads this node
    b = x.shape[0]
    return jax.lax.cond(count > 0, lambda h: count * relu_code_kernel(h),
                        lambda h: jnp.zeros((b, b), jnp.float32), x)
  return count * relu_code_kernel(x)


def normalize_ops(ops: Any) -> tuple[str, Any]:
  """(form, ops) with ops as python ints (static) or a jnp array (switch, masked)."""
  form = ops_form(ops)
  if form == "static":
    return form, tuple(int(o) for o in ops)
  if form == "switch":
    return form, jnp.asarray(ops, jnp.int32)
  return form, jnp.asarray(ops)


class CellParams(nn.Module):
  """The weights of one cell, per edge {op index: ReLU-Conv-BN weights}.

  A static architecture gets its own convolutions only; the array forms get both
  convolutions of every edge.
  """
  channels: int
  use_batchnorm: bool = True

  @nn.compact
  def __call__(self, in_features: int, ops: Any) -> list[dict[int, dict]]:
    form, ops = normalize_ops(ops)
    params = []
    for e in range(searchspace.NUM_EDGES):
      chosen = [ops[e]] if form == "static" else list(_CONV_KERNEL)
      params.append({op: ConvBNParams(_CONV_KERNEL[op], self.channels, self.use_batchnorm,
                                      name=f"edge{e}_{searchspace.OPS[op]}")(in_features)
                     for op in chosen if op in _CONV_KERNEL})
    return params


def cell_forward(ops: Any, params: list[dict[int, dict]], x: jax.Array,
                 relu_kernel: bool = False) -> tuple[jax.Array, Any]:
  """One cell: node j = sum of its incoming edges, output = node 3; and its NASWOT kernel."""
  form, ops = normalize_ops(ops)
  nodes, kernel = [x], 0.0
  for j in range(1, 4):
    incoming = [e for e, (_, dst) in enumerate(searchspace.EDGES) if dst == j]
    terms = [_edge_output(form, ops[e], params[e], nodes[searchspace.EDGES[e][0]])
             for e in incoming if not (form == "static" and ops[e] == NONE)]
    nodes.append(sum(terms[1:], terms[0]) if terms else jnp.zeros_like(x))
  if relu_kernel:
    for i in range(3):
      outgoing = [e for e, (src, _) in enumerate(searchspace.EDGES) if src == i]
      kernel = kernel + _weighted_kernel(form, _num_convs(form, ops, outgoing), nodes[i])
  return nodes[3], kernel


def stage_forward(ops: Any, cell_params: list, x: jax.Array, relu_kernel: bool = False):
  """The cells of one stage: unrolled for a static architecture (what XLA should see
  when timing it), a `lax.scan` over stacked weights otherwise (one cell to compile)."""
  form, ops = normalize_ops(ops)
  if form == "static" or len(cell_params) == 1:
    kernel = 0.0
    for params in cell_params:
      x, k = cell_forward(ops, params, x, relu_kernel)
      kernel = kernel + k
    return x, kernel

  def step(carry, params):
    h, kernel = carry
    h, k = cell_forward(ops, params, h, relu_kernel)
    return (h.astype(x.dtype), kernel + jnp.asarray(k, kernel.dtype)), None

  stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *cell_params)
  zero = jnp.zeros((x.shape[0], x.shape[0]) if relu_kernel else (), jnp.float32)
  (x, kernel), _ = jax.lax.scan(step, (x, zero), stacked)
  return x, kernel


class ResNetBasicBlock(nn.Module):
  """The reduction between stages: stride-2 ReLU-Conv-BN 3x3, ReLU-Conv-BN 3x3, plus an
  AvgPool(2) + 1x1-conv shortcut."""
  features: int
  use_batchnorm: bool = True
  relu_kernel: bool = False

  @nn.compact
  def __call__(self, x: jax.Array):
    c_in = x.shape[-1]
    pa = ConvBNParams(3, self.features, self.use_batchnorm, name="conv_a")(c_in)
    pb = ConvBNParams(3, self.features, self.use_batchnorm, name="conv_b")(self.features)
    pd = ConvBNParams(1, self.features, False, name="downsample")(c_in)
    a = relu_conv_bn(pa, x, stride=2)
    b = relu_conv_bn(pb, a)
    shortcut = conv(nn.avg_pool(x, (2, 2), strides=(2, 2)).astype(x.dtype), pd["kernel"])
    kernel = relu_code_kernel(x) + relu_code_kernel(a) if self.relu_kernel else 0.0
    return shortcut + b, kernel


class TinyNetwork(nn.Module):
  """xautodl's TinyNetwork: stem, 3 stages of `num_cells` cells, BN-ReLU, GAP, linear.

  `__call__(x, ops)` takes NHWC images and returns logits. With `relu_kernel=True` it
  also sows NASWOT's kernel (summed over every ReLU the PyTorch network hooks) as
  `intermediates/relu_kernel`. `use_batchnorm=False` removes every batch norm
  (synflow's network).
  """
  num_classes: int = 10
  channels: int = 16
  num_cells: int = 5
  use_batchnorm: bool = True
  relu_kernel: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, ops: Any) -> jax.Array:
    ops_form(ops)  # fail early on a malformed architecture
    stem = ConvBNParams(3, self.channels, self.use_batchnorm, name="stem")(x.shape[-1])
    x = batch_norm(stem, conv(x, stem["kernel"]))
    kernel, c = 0.0, self.channels
    for stage in range(3):
      if stage:
        c *= 2
        x, k = ResNetBasicBlock(c, self.use_batchnorm, self.relu_kernel,
                                name=f"reduction{stage}")(x)
        kernel = kernel + k
      cells = [CellParams(c, self.use_batchnorm, name=f"cell{stage}_{i}")(x.shape[-1], ops)
               for i in range(self.num_cells)]
      x, k = stage_forward(ops, cells, x, self.relu_kernel)
      kernel = kernel + k
    if self.use_batchnorm:
      x = batch_norm(BNParams(c, name="lastact")(), x)
    x = jax.nn.relu(x)
    if self.relu_kernel:
      self.sow("intermediates", "relu_kernel", kernel + relu_code_kernel(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=KERNEL_INIT, name="classifier")(x)


def network_for(dataset: str = "cifar10", **kwargs) -> TinyNetwork:
  """The network NATS-Bench trains on `dataset` (its number of classes)."""
  if dataset not in searchspace.NUM_CLASSES:
    raise ValueError(f"unknown dataset {dataset!r}; known: {list(searchspace.NUM_CLASSES)}")
  return TinyNetwork(num_classes=searchspace.NUM_CLASSES[dataset], **kwargs)


@functools.lru_cache(maxsize=64)
def param_shapes(network: TinyNetwork, ops_key: Any = "all") -> Any:
  """The parameter tree's shapes: of one static architecture (a tuple), or of all ops."""
  ops = ops_key if isinstance(ops_key, tuple) else _all_ops()
  dummy = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)  # shapes do not depend on H, W
  net = network.clone(relu_kernel=False)
  return jax.eval_shape(lambda x: net.init(jax.random.key(0), x, ops), dummy)["params"]


def _all_ops() -> np.ndarray:
  return np.ones((searchspace.NUM_EDGES, searchspace.NUM_OPS), np.float32)


def _leaf_name(path: tuple) -> str:
  return str(getattr(path[-1], "key", path[-1]))


def _kernel_sizes(leaves) -> list[int]:
  return [int(np.prod(leaf.shape)) if _leaf_name(path) == "kernel" else 0 for path, leaf in leaves]


# Initialisations of conv and linear kernels, as (draw, scale of a kernel of this shape).
# "freerea": FreeREA's He normal with fan_out (conv HWIO -> H*W*O, dense (in, out) -> out),
# the bundle's; "kaiming_fan_in": He normal with fan_in (AZ-NAS); "torch_default":
# PyTorch's default kaiming_uniform(a=sqrt(5)), i.e. U(-1, 1) / sqrt(fan_in) (MeCo).
INITS = {
    "freerea": ("normal", lambda shape: np.sqrt(2.0 / (np.prod(shape) // shape[-2]))),
    "kaiming_fan_in": ("normal", lambda shape: np.sqrt(2.0 / (np.prod(shape) // shape[-1]))),
    "torch_default": ("uniform", lambda shape: 1.0 / np.sqrt(np.prod(shape) // shape[-1])),
}


def _fill(noise, leaves, sizes, xp, init: str = "freerea") -> list:
  """Kernels cut from one draw and scaled as `INITS[init]` says; BN scales 1; biases 0."""
  scale_of = INITS[init][1]
  out, offset = [], 0
  for (path, leaf), size in zip(leaves, sizes):
    if size:
      std = np.float32(scale_of(leaf.shape))
      out.append((noise[offset:offset + size].reshape(leaf.shape) * std).astype(leaf.dtype))
      offset += size
    else:
      out.append((xp.ones if _leaf_name(path) == "scale" else xp.zeros)(leaf.shape, leaf.dtype))
  return out


def sample_params(rng: jax.Array, shapes: Any, init: str = "freerea") -> Any:
  """Random weights for a tree of shapes (FreeREA's init unless `init` names another of
  `INITS`), from one draw (a draw per weight makes XLA compile for minutes). Pure: jit or
  vmap it; `init_params` gives the same values."""
  if init not in INITS:
    raise ValueError(f"unknown init {init!r}; known: {list(INITS)}")
  leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  sizes = _kernel_sizes(leaves)
  if INITS[init][0] == "normal":
    noise = jax.random.normal(rng, (sum(sizes),), jnp.float32)
  else:
    noise = jax.random.uniform(rng, (sum(sizes),), jnp.float32, -1.0, 1.0)
  return jax.tree_util.tree_unflatten(treedef, _fill(noise, leaves, sizes, jnp, init))


def init_params(rng: jax.Array, ops: Any = None, dataset: str = "cifar10",
                network: TinyNetwork | None = None) -> dict:
  """Random parameters (FreeREA's init); `ops=None` gives every operation's weights.

  The full tree serves every architecture and form; a static architecture's tree is the
  part of the full one it uses (same `rng`, same values). Drawn directly from the
  shapes: compiling `network.init` (which traces the whole forward pass) takes a
  minute on two cores.
  """
  network = network or network_for(dataset)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(param_shapes(network, "all"))
  sizes = _kernel_sizes(leaves)
  noise = np.asarray(_normal(rng, sum(sizes)))  # cut up in numpy: nothing more to compile
  full = jax.tree_util.tree_unflatten(
      treedef, [jnp.asarray(a) for a in _fill(noise, leaves, sizes, np)])
  if ops is None or ops_form(ops) != "static":
    return full
  keep = param_shapes(network, tuple(int(o) for o in ops))
  return _select(full, keep)


def _select(tree: dict, like: dict) -> dict:
  return {k: _select(tree[k], v) if isinstance(v, dict) else tree[k] for k, v in like.items()}


@functools.partial(jax.jit, static_argnums=1)
def _normal(rng: jax.Array, size: int) -> jax.Array:
  return jax.random.normal(rng, (size,), jnp.float32)


def nhwc(images_nchw: np.ndarray) -> np.ndarray:
  """NCHW (PyTorch's layout, the bundle's) to NHWC (XLA's)."""
  return np.transpose(np.asarray(images_nchw), (0, 2, 3, 1))
