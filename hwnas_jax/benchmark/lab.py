"""The proxy lab: training-free proxies of many architectures in one compiled program.

Each proxy family (naswot, logsynflow, meco, az) is one jitted program (`family_program`),
`lax.map` over a chunk of architectures: each edge picks its operation with `lax.switch`,
so on a CPU only the chosen operation runs (`vmap_size=1`), while `vmap_size=k` vmaps
blocks of k architectures (the switch becomes a select: every operation computed, the
masked supernet, what a GPU wants). Nothing is compiled per architecture.

What makes it fast on a CPU (`benchmarks/bench_proxy_lab.py` has the numbers):
  * one set of weights per initialisation, shared by every architecture (common random
    numbers; any subset still scores the same). A grouped convolution over per-architecture
    kernels ran at 12 GFLOP/s here against 200 for one kernel, and no weights are drawn per
    architecture;
  * an edge whose input is all zero (its source node only gets `none`) or whose output
    reaches nothing a proxy reads is computed as `none` (`plan_archs`): 13 % fewer
    convolution FLOPs over the space; and with shared weights, architectures that plan the
    same computation are computed once (`family_keys`: 10,095 distinct NASWOT
    computations in the space, 9,445 log-synflow and AZ-NAS, 12,205 MeCo);
  * the two NASWOT image batches go through together (batch norm per batch of 64), the
    stem is computed once per initialisation, the ReLU-code matmuls run in int8;
  * log-synflow in float32: its activations reach 1e40, so every cell's output is divided
    by its mean (a constant to the gradient) and the logs added back. The network without
    batch norm, with |weights| and input ones, is linear in each activation, so every
    gradient is the true one divided by the same product of scales;
  * hand-made VJPs (`conv_same`, `_edge_op`): XLA:CPU runs the input-gradient convolution
    that JAX derives 22x slower inside `lax.switch`.

Proxies (`PROXIES`; FreeREA's naswot and logsynflow, `proxies` says how):
  * `naswot`, `logsynflow`: as `proxies.score` (3 inits x 2 batches of 64), the bundle's;
  * `meco` (Jiang et al., NeurIPS 2023): the sum, over every module of the NAS-Bench-201
    network the authors hook (foresight's NAS201Model: stem, cells, their operations and
    sub-modules, reductions, last BN-ReLU), of the smallest eigenvalue of the Pearson
    correlation matrix between the channels of the module's output for one image (NaN
    entries of a constant channel set to 0). PyTorch's default init, one real image,
    batch norm on that image's statistics. A module output that repeats another (a
    ReLUConvBN's Sequential and BN outputs, its conv output up to a per-channel affine map)
    is counted as often as the authors' hooks count it;
  * `az_expressivity`, `az_progressivity`, `az_trainability` (AZ-NAS, Lee and Ham, CVPR
    2024, its NB201 code): on a batch of 64 Gaussian images, He-normal fan_in init, with the
    features of the stem and of the 17 blocks (cells and reductions): expressivity = sum of
    the entropies of the normalised eigenvalues of each feature's channel covariance;
    progressivity = the smallest increase of that entropy from a feature to the next;
    trainability = mean over blocks of -s - 1/(s + 1e-6) + 2, s the largest singular value
    of the (channels in x channels out) matrix <J^T g, g> of a Rademacher cotangent g
    (-inf where a block is the identity). The authors combine them with FLOPs by summing
    log(rank / n) (`az_nas_rank`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from hwnas_jax.benchmark import network as network_lib
from hwnas_jax.benchmark import searchspace

NONE, SKIP, CONV1, CONV3, POOL = range(searchspace.NUM_OPS)
PROXIES = ("naswot", "logsynflow", "meco", "az_expressivity", "az_progressivity",
           "az_trainability")
DEFAULT_PROXIES = ("naswot", "logsynflow")
LOG_EPS = float(np.log(1e-6))  # FreeREA's log(grad + 1e-6)
SINGULAR_NASWOT = 1e-6  # the bundle's value where K is singular
AZ_BATCH = 64  # AZ-NAS's batch of Gaussian images
# Extra XLA options for the chunk program, e.g. {"xla_backend_optimization_level": 0} for
# the tests' tiny networks. Set before first use.
COMPILER_OPTIONS: dict[str, Any] = {}
# Cell nodes each edge reads and writes (searchspace.EDGES); nodes 1..3 and their inputs.
_INCOMING = {j: [e for e, (_, dst) in enumerate(searchspace.EDGES) if dst == j] for j in (1, 2, 3)}


# --- which edges run (numpy, per architecture) -----------------------------------------------

def plan_archs(ops: np.ndarray) -> dict[str, np.ndarray]:
  """What each of (A, 6) architectures computes, as int32 arrays.

  `ops` the operations (which weights count); `reads` (A, 3) the conv edges reading nodes
  0, 1, 2 (each one a ReLU NASWOT hooks); `run_all` the ops with `none` on every edge that
  reads an all-zero node (its output is zero: MeCo, which scores dead edges too);
  `run_naswot` also `none` where an edge's output reaches neither the cell output nor a node
  a convolution reads; `run_out` `none` wherever the output does not reach the cell output
  (log-synflow's gradients and AZ-NAS's features are the same).
  """
  ops = np.asarray(ops, np.int32).reshape(-1, searchspace.NUM_EDGES)
  conv = (ops == CONV1) | (ops == CONV3)
  reads = np.stack([conv[:, [0, 1, 3]].sum(1), conv[:, [2, 4]].sum(1), conv[:, 5]], 1)
  run = ops.copy()
  zero1 = run[:, 0] == NONE
  run[zero1, 2] = NONE
  run[zero1, 4] = NONE
  zero2 = (run[:, 1] == NONE) & (run[:, 2] == NONE)
  run[zero2, 5] = NONE
  run_all = run.copy()
  dead2 = run[:, 5] == NONE  # node 2 reaches the output through edge 5 only
  run[dead2, 1] = NONE
  run[dead2, 2] = NONE
  dead1 = (run[:, 2] == NONE) & (run[:, 4] == NONE)
  run_out, run_naswot = run.copy(), run.copy()
  run_out[dead1, 0] = NONE
  run_naswot[dead1 & (reads[:, 1] == 0), 0] = NONE
  return {"ops": ops, "reads": reads.astype(np.int32), "run_all": run_all,
          "run_naswot": run_naswot, "run_out": run_out}


# --- building blocks: activations (G, N, H, W, C), batch norm per group ----------------------

def conv(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  lead = x.shape[:-3]
  y = network_lib.conv(x.reshape((-1,) + x.shape[-3:]), kernel, stride)
  return y.reshape(lead + y.shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_same(x: jax.Array, kernel: jax.Array, kernel_grad: bool = True) -> jax.Array:
  """Stride-1 'same' convolution whose VJP is made of forward convolutions.

  Inside `lax.switch`, XLA:CPU ran the convolution JAX derives for an input gradient 22x
  slower than a forward one (300 ms against 13 ms for 64 CIFAR images); here the input
  gradient is the convolution with the flipped, transposed kernel, and the kernel gradient
  a product of image patches (skipped where `kernel_grad` is False: zeros).
  """
  return conv(x, kernel)


def _conv_same_fwd(x, kernel, kernel_grad):
  return conv(x, kernel), (x, kernel)


def _conv_same_bwd(kernel_grad, res, g):
  x, kernel = res
  g_x = conv(g, jnp.swapaxes(kernel[::-1, ::-1], 2, 3))
  if not kernel_grad:
    return g_x, jnp.zeros_like(kernel)
  kh, kw, c_in, c_out = kernel.shape
  flat = x.reshape((-1,) + x.shape[-3:])
  patches = jax.lax.conv_general_dilated_patches(
      flat, (kh, kw), (1, 1), [((kh - 1) // 2,) * 2, ((kw - 1) // 2,) * 2],
      dimension_numbers=("NHWC", "OIHW", "NHWC"))  # features ordered (c_in, kh, kw)
  g_k = patches.reshape(-1, c_in * kh * kw).T @ g.reshape(-1, c_out)
  return g_x, jnp.transpose(g_k.reshape(c_in, kh, kw, c_out), (1, 2, 0, 3))


conv_same.defvjp(_conv_same_fwd, _conv_same_bwd)


def batch_norm(p: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
  """Batch statistics of each group (axis 0), as a fresh network in training mode."""
  return jax.vmap(network_lib.batch_norm, (None, 0))(p, x)


def avg_pool_2x2(x: jax.Array) -> jax.Array:
  g, n, h, w, c = x.shape
  return x.reshape(g, n, h // 2, 2, w // 2, 2, c).mean(axis=(3, 5))


def code_kernel(x: jax.Array) -> jax.Array:
  """NASWOT's K of each group: (G, N, N) agreements of ReLU states."""
  return jax.vmap(network_lib.relu_code_kernel)(x)


def min_corr_eigenvalue(x: jax.Array) -> jax.Array:
  """MeCo's term: smallest eigenvalue of the channel correlation of the first image.

  As `torch.corrcoef` with NaN set to 0: a constant channel gets a zero row and column.
  With no more positions than channels (CIFAR's 8x8x64 last stage) the centred features
  have rank < channels and the smallest eigenvalue is 0: returned without the
  eigendecomposition, which took most of MeCo's time (LAPACK gives +-1e-7 there).
  """
  if x.shape[-3] * x.shape[-2] <= x.shape[-1]:
    return jnp.float32(0.0)
  f = x.reshape((-1,) + x.shape[-3:])[0].reshape(-1, x.shape[-1])
  f = f - f.mean(axis=0)
  cov = f.T @ f
  d = jnp.diagonal(cov)
  inv = jnp.where(d > 0, jax.lax.rsqrt(jnp.where(d > 0, d, 1.0)), 0.0)
  corr = jnp.clip(cov * inv[:, None] * inv[None, :], -1.0, 1.0)
  return jnp.linalg.eigvalsh(corr)[0]


def covariance_entropy(x: jax.Array) -> jax.Array:
  """AZ-NAS's expressivity of one feature: entropy of the normalised eigenvalues of the
  channel covariance over all positions of all images.

  Eigenvalues are clipped at 0: skip-heavy stacks reach covariances with a condition number
  of 1e8, whose float32 eigenvalues come out slightly negative, and the authors' formula
  then gives NaN (-inf) for a sound network.
  """
  f = x.reshape(-1, x.shape[-1])
  f = f - f.mean(axis=0)
  s = jnp.maximum(jnp.linalg.eigvalsh(f.T @ f / f.shape[0]), 0.0)
  p = s / s.sum()
  return jnp.sum(-p * jnp.log(p + 1e-8))


def gradient_score(g_in: jax.Array, g_out: jax.Array) -> jax.Array:
  """AZ-NAS's trainability of one block from J^T g and g (space-to-depth where it halves)."""
  if g_in.shape[-3] != g_out.shape[-3]:
    r = g_in.shape[-3] // g_out.shape[-3]
    lead, (h, w, c) = g_in.shape[:-3], g_in.shape[-3:]
    g_in = g_in.reshape(lead + (h // r, r, w // r, r, c))
    g_in = jnp.moveaxis(g_in, (-4, -2), (-2, -1)).reshape(lead + (h // r, w // r, c * r * r))
  a, b = g_in.reshape(-1, g_in.shape[-1]), g_out.reshape(-1, g_out.shape[-1])
  mat = a.T @ b / a.shape[0]
  s = jnp.linalg.svd(mat, compute_uv=False)[0]
  score = -s - 1.0 / (s + 1e-6) + 2.0
  if g_in.shape == g_out.shape:  # a block that passes its input on unchanged
    score = jnp.where(jnp.all(g_in == g_out), -jnp.inf, score)
  return score


# --- the network, as pure functions of the parameter tree ------------------------------------

@dataclasses.dataclass(frozen=True)
class Variant:
  """How the network runs for a proxy: with batch norm or none (log-synflow's), MeCo's
  per-module eigenvalues summed or not."""
  use_bn: bool = True
  meco: bool = False
  param_grads: bool = False  # whether an edge's VJP gives its weights' gradients


def _relu_conv_bn(v: Variant, p, h, stride=1):
  """Output and, for MeCo, its modules' terms (ReLU once; conv, BN, Sequential, ReLUConvBN
  share one correlation)."""
  r = jax.nn.relu(h)
  y = conv(r, p["kernel"], stride) if stride > 1 else conv_same(r, p["kernel"], v.param_grads)
  out = batch_norm(p, y) if v.use_bn else y
  tap = min_corr_eigenvalue(r) + 4 * min_corr_eigenvalue(y) if v.meco else 0.0
  return out, tap


def _edge(v: Variant, op, p1, p3, h, acc):
  """`acc + op(h)` (just `op(h)` when acc is None) and the op's MeCo terms."""
  if not v.meco:
    y = _edge_op(v, op, h, p1, p3)
    return (y if acc is None else acc + y), 0.0
  add = (lambda y: y) if acc is None else (lambda y: acc + y)

  def none(h):
    return (jnp.zeros_like(h) if acc is None else acc), jnp.float32(0.0)

  def skip(h):
    return add(h), min_corr_eigenvalue(h)

  def conv_with(p):
    def branch(h):
      y, tap = _relu_conv_bn(v, p, h)
      return add(y), tap
    return branch

  def pool(h):
    y = network_lib.avg_pool_3x3(h)
    return add(y), 2 * min_corr_eigenvalue(y)

  return jax.lax.switch(op, [none, skip, conv_with(p1), conv_with(p3), pool], h)


def _op_branches(v: Variant):
  """The five operations as functions of (input, conv1x1 weights, conv3x3 weights)."""
  return [lambda h, p1, p3: jnp.zeros_like(h),
          lambda h, p1, p3: h,
          lambda h, p1, p3: _relu_conv_bn(v, p1, h)[0],
          lambda h, p1, p3: _relu_conv_bn(v, p3, h)[0],
          lambda h, p1, p3: network_lib.avg_pool_3x3(h)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _edge_op(v: Variant, op, h, p1, p3):
  """One edge's operation, chosen by `lax.switch`, with a hand-made VJP.

  Differentiating `lax.switch` directly keeps the residuals of all five branches and ran
  15x slower than the forward pass on a CPU; this VJP keeps only the edge's input and
  recomputes the chosen operation's forward inside its backward branch.
  """
  return jax.lax.switch(op, _op_branches(v), h, p1, p3)


def _edge_op_fwd(v, op, h, p1, p3):
  return _edge_op(v, op, h, p1, p3), (op, h, p1, p3)


def _edge_op_bwd(v, res, cotangent):
  op, h, p1, p3 = res
  if v.param_grads:
    branches = [lambda h, p1, p3, c, f=f: jax.vjp(f, h, p1, p3)[1](c) for f in _op_branches(v)]
    g_h, g_p1, g_p3 = jax.lax.switch(op, branches, h, p1, p3, cotangent)
    return None, g_h, g_p1, g_p3
  branches = [lambda h, p1, p3, c, f=f: jax.vjp(lambda t: f(t, p1, p3), h)[1](c)[0]
              for f in _op_branches(v)]
  g_h = jax.lax.switch(op, branches, h, p1, p3, cotangent)
  zeros = lambda tree: jax.tree_util.tree_map(jnp.zeros_like, tree)
  return None, g_h, zeros(p1), zeros(p3)


_edge_op.defvjp(_edge_op_fwd, _edge_op_bwd)


def cell(v: Variant, run: jax.Array, cp: Mapping, x: jax.Array):
  """One cell: its four nodes and the MeCo terms of its operations and output."""
  nodes, tap = [x], 0.0
  for j in (1, 2, 3):
    acc = None
    for e in _INCOMING[j]:
      p1 = jax.tree_util.tree_map(lambda a: a[e], cp["conv1"])
      p3 = jax.tree_util.tree_map(lambda a: a[e], cp["conv3"])
      acc, t = _edge(v, run[e], p1, p3, nodes[searchspace.EDGES[e][0]], acc)
      tap = tap + t
    nodes.append(acc)
  if v.meco:
    tap = tap + min_corr_eigenvalue(nodes[3])
  return nodes, tap


def reduction(v: Variant, rp: Mapping, x: jax.Array):
  """ResNet basic block, stride 2; its output, the input of conv_b, and MeCo's terms."""
  a, tap_a = _relu_conv_bn(v, rp["conv_a"], x, stride=2)
  b, tap_b = _relu_conv_bn(v, rp["conv_b"], a)
  pooled = avg_pool_2x2(x)
  shortcut = conv(pooled, rp["downsample"]["kernel"])
  out = shortcut + b
  tap = 0.0
  if v.meco:  # block; residual Sequential and its conv; its pool; conv_a; conv_b
    tap = (min_corr_eigenvalue(out) + 2 * min_corr_eigenvalue(shortcut)
           + min_corr_eigenvalue(pooled) + tap_a + tap_b)
  return out, a, tap


def stem(v: Variant, params: Mapping, images: jax.Array):
  y = conv(images, params["stem"]["kernel"])
  out = batch_norm(params["stem"], y) if v.use_bn else y
  return out, (4 * min_corr_eigenvalue(y) if v.meco else 0.0)  # conv, BN, Sequential, stem


def stage_params(params: Mapping, stage: int, num_cells: int) -> dict:
  """The cells of a stage stacked: {"conv1"|"conv3": leaves of shape (cells, 6, ...)}."""
  out = {}
  for op, name in ((CONV1, "conv1"), (CONV3, "conv3")):
    per_cell = [[params[f"cell{stage}_{i}"][f"edge{e}_{searchspace.OPS[op]}"]
                 for e in range(searchspace.NUM_EDGES)] for i in range(num_cells)]
    out[name] = jax.tree_util.tree_map(lambda *a: jnp.stack(a).reshape(
        (num_cells, searchspace.NUM_EDGES) + a[0].shape), *[p for c in per_cell for p in c])
  return out


def layered(params: Mapping, num_cells: int) -> dict:
  """The parameter tree with each stage's cells stacked for `lax.scan`."""
  out = {k: v for k, v in params.items() if not k.startswith("cell")}
  out["stages"] = [stage_params(params, s, num_cells) for s in range(3)]
  return out


# --- the proxies of one architecture ----------------------------------------------------------

def naswot_kernel(plan: Mapping, lp: Mapping, stem_out: jax.Array) -> jax.Array:
  """(G, N, N) NASWOT K of one initialisation: every hooked ReLU's agreements."""
  v = Variant()
  x, kernel = stem_out, 0.0
  for s in range(3):
    if s:
      x_in = x
      x, a, _ = reduction(v, lp[f"reduction{s}"], x)
      kernel = kernel + code_kernel(x_in) + code_kernel(a)

    def body(carry, cp):
      h, k = carry
      nodes, _ = cell(v, plan["run_naswot"], cp, h)
      for i in range(3):
        count = plan["reads"][i]
        k = k + jax.lax.cond(count > 0, lambda t: count.astype(jnp.float32) * code_kernel(t),
                             lambda t: jnp.zeros(t.shape[:2] + t.shape[1:2], jnp.float32),
                             nodes[i])
      return (nodes[3], k), None

    zero = jnp.zeros(x.shape[:2] + x.shape[1:2], jnp.float32)
    (x, k), _ = jax.lax.scan(body, (x, zero), lp["stages"][s])
    kernel = kernel + k
  x = batch_norm(lp["lastact"], x)
  return kernel + code_kernel(x)


def _rescaled(x, log_scale):
  """x over its mean (a constant to autodiff), and the log of that scale added up."""
  mean = jax.lax.stop_gradient(jnp.mean(x))
  scale = jnp.where(mean > 0, mean, 1.0)
  return x / scale, log_scale + jnp.log(scale)


def logsynflow_terms(plan: Mapping, abs_lp: Mapping, image_shape: tuple[int, int, int]):
  """FreeREA's log-synflow of one initialisation (`abs_lp`: |weights|, layered), float32, in
  parts: the sum over the weights outside the cells, and (3 stages, conv1x1 | conv3x3, 6
  edges) sums over each candidate's weights, which count where the architecture holds that
  operation (`logsynflow_from_terms`). The gradients depend on `run_out` alone."""
  v = Variant(use_bn=False, param_grads=True)

  def loss(p):
    ones = jnp.ones((1, 1) + tuple(image_shape), jnp.float32)
    x, log_scale = _rescaled(stem(v, p, ones)[0], 0.0)
    for s in range(3):
      if s:
        x, log_scale = _rescaled(reduction(v, p[f"reduction{s}"], x)[0], log_scale)

      def body(carry, cp):
        h, ls = carry
        nodes, _ = cell(v, plan["run_out"], cp, h)
        return _rescaled(nodes[3], ls), None

      (x, log_scale), _ = jax.lax.scan(body, (x, log_scale), p["stages"][s])
    pooled = jnp.mean(jax.nn.relu(x), axis=(2, 3))
    logits = pooled @ p["classifier"]["kernel"] + p["classifier"]["bias"]
    return jnp.sum(logits), log_scale

  grads, log_scale = jax.grad(loss, has_aux=True)(abs_lp)

  def term(w, g):  # sum |w log(g + 1e-6)| with g = the scaled gradient times exp(log_scale)
    log_g = jnp.logaddexp(jnp.log(g) + log_scale, LOG_EPS)
    return jnp.abs(w) * jnp.abs(log_g)

  total = 0.0
  for name, sub in abs_lp.items():
    if name == "stages":
      continue
    for w, g in zip(jax.tree_util.tree_leaves(_kernels(sub)),
                    jax.tree_util.tree_leaves(_kernels(grads[name]))):
      total = total + jnp.sum(term(w, g))
  per_edge = jnp.stack([jnp.stack([
      jnp.sum(term(abs_lp["stages"][s][key]["kernel"], grads["stages"][s][key]["kernel"]),
              axis=(0, 2, 3, 4, 5)) for key in ("conv1", "conv3")]) for s in range(3)])
  return total, per_edge


def logsynflow_from_terms(base: np.ndarray, per_edge: np.ndarray, ops: np.ndarray):
  """(A,) log-synflow from (A,) outside sums, (A, 3, 2, 6) candidate sums, (A, 6) ops."""
  held = np.stack([ops == CONV1, ops == CONV3], axis=1)[:, None]  # (A, 1, 2, 6)
  return np.asarray(base, np.float64) + np.sum(np.asarray(per_edge, np.float64) * held,
                                               axis=(1, 2, 3))


def _kernels(tree):
  if isinstance(tree, Mapping):
    return {k: _kernels(v) for k, v in tree.items() if k == "kernel" or isinstance(v, Mapping)}
  return tree


def meco_value(plan: Mapping, lp: Mapping, image: jax.Array) -> jax.Array:
  """MeCo of one architecture for one image (1, 1, H, W, 3)."""
  v = Variant(meco=True)
  x, total = stem(v, lp, image)
  for s in range(3):
    if s:
      x, _, tap = reduction(v, lp[f"reduction{s}"], x)
      total = total + tap

    def body(carry, cp):
      h, t = carry
      nodes, tap = cell(v, plan["run_all"], cp, h)
      return (nodes[3], t + tap), None

    (x, total), _ = jax.lax.scan(body, (x, total), lp["stages"][s])
    total = total + min_corr_eigenvalue(x)  # the stage's nn.Sequential
  y = batch_norm(lp["lastact"], x)
  return total + min_corr_eigenvalue(y) + 2 * min_corr_eigenvalue(jax.nn.relu(y))


def az_values(plan: Mapping, lp: Mapping, images: jax.Array, rng: jax.Array) -> jax.Array:
  """(expressivity, progressivity, trainability) of AZ-NAS for one architecture."""
  v = Variant()
  x, _ = stem(v, lp, images)
  entropies, scores = [covariance_entropy(x)[None]], []

  def block_scores(fn, h, key):
    y, pullback = jax.vjp(fn, h)
    g_out = jax.random.rademacher(key, y.shape, jnp.float32)
    return y, covariance_entropy(y), gradient_score(pullback(g_out)[0], g_out)

  keys = jax.random.split(rng, 3)
  for s in range(3):
    if s:
      x, e, t = block_scores(lambda h: reduction(v, lp[f"reduction{s}"], h)[0], x,
                             jax.random.fold_in(keys[s], 99))
      entropies.append(e[None])
      scores.append(t[None])

    def body(h, xs):
      cp, key = xs
      y, e, t = block_scores(lambda t: cell(v, plan["run_out"], cp, t)[0][3], h, key)
      return y, (e, t)

    num_cells = lp["stages"][s]["conv1"]["kernel"].shape[0]
    x, (e, t) = jax.lax.scan(body, x, (lp["stages"][s], jax.random.split(keys[s], num_cells)))
    entropies.append(e)
    scores.append(t)
  entropies, scores = jnp.concatenate(entropies), jnp.concatenate(scores)
  values = jnp.stack([entropies.sum(), jnp.min(jnp.diff(entropies)), scores.mean()])
  return jnp.where(jnp.isnan(values), -jnp.inf, values)


# --- many architectures: the shared inputs, one compiled program per setup -------------------

@dataclasses.dataclass(frozen=True)
class Setup:
  """What the compiled program depends on (hashable): the network, the proxies, the number of
  NASWOT / log-synflow initialisations, the image shape (H, W, 3), and how many
  architectures are vmapped at a time (1: a loop that runs only the chosen operations, for
  CPUs; more: the masked supernet in blocks, for accelerators), AZ-NAS's batch."""
  network: network_lib.TinyNetwork
  proxies: tuple[str, ...]
  num_inits: int
  image_shape: tuple[int, int, int]
  vmap_size: int = 1
  az_batch: int = AZ_BATCH  # Gaussian images of AZ-NAS (the authors': 64)

  def __post_init__(self):
    unknown = [p for p in self.proxies if p not in PROXIES]
    if unknown or not self.proxies:
      raise ValueError(f"unknown proxies {unknown}; known: {list(PROXIES)}")

  @property
  def families(self) -> set[str]:
    return {family_of(p) for p in self.proxies}


def _param_shapes(net: network_lib.TinyNetwork):
  return network_lib.param_shapes(net.clone(relu_kernel=False, use_batchnorm=True))


def meco_image(images: np.ndarray) -> np.ndarray:
  """MeCo's one image, (1, 1, H, W, 3): the first given, normalised as the authors' loaders
  do (the bundle's CIFAR images are; raw uint8 ImageNet16 gets its mean and std)."""
  from hwnas_jax.benchmark import proxies  # pylint: disable=import-outside-toplevel
  first = np.asarray(images)[:1]
  if first.dtype == np.uint8:
    return proxies.prepare_images(np.repeat(first, 1, 0), 1, imagenet16_transform=True)
  return proxies.prepare_images(first.astype(np.float32), 1)


def prepare(setup: Setup, batches: np.ndarray, images: np.ndarray, seed: int = 0) -> dict:
  """The inputs every architecture shares: weights of each initialisation (one set for all
  architectures, keys fold_in(key(seed), i)), the stem's output, MeCo's image, AZ-NAS's
  Gaussian batch. `batches` (G, N, H, W, 3) from `proxies.prepare_images`."""
  net, shapes = setup.network, _param_shapes(setup.network)
  base = jax.random.key(seed)
  num_cells = net.num_cells
  shared = {}
  families = setup.families
  if families & {"naswot", "logsynflow"}:
    keys = [jax.random.fold_in(base, i) for i in range(setup.num_inits)]
    inits = [layered(network_lib.sample_params(k, shapes), num_cells) for k in keys]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *inits)
    if "naswot" in families:
      shared["naswot_params"] = stacked
      images_ = jnp.asarray(batches, jnp.float32)
      shared["stem_out"] = jax.vmap(lambda p: stem(Variant(), p, images_)[0])(stacked)
    if "logsynflow" in families:
      shared["synflow_params"] = jax.tree_util.tree_map(jnp.abs, stacked)
  if "meco" in families:
    p = network_lib.sample_params(jax.random.fold_in(base, 1001), shapes, "torch_default")
    shared["meco_params"] = layered(p, num_cells)
    shared["meco_image"] = jnp.asarray(meco_image(images))
  if "az" in families:
    p = network_lib.sample_params(jax.random.fold_in(base, 2001), shapes, "kaiming_fan_in")
    shared["az_params"] = layered(p, num_cells)
    shape = (1, setup.az_batch) + tuple(setup.image_shape)
    shared["az_images"] = jax.random.normal(jax.random.fold_in(base, 2002), shape)
    shared["az_key"] = jax.random.fold_in(base, 2003)
  return shared


FAMILIES = ("naswot", "logsynflow", "meco", "az")
# The plan entries that decide a family's computation: architectures equal on them get the
# same raw output (the weights are shared), so each is computed once (`family_keys`).
_FAMILY_PLAN = {"naswot": ("run_naswot", "reads"), "logsynflow": ("run_out",),
                "meco": ("run_all",), "az": ("run_out",)}


def family_of(proxy: str) -> str:
  return proxy.split("_")[0]


def family_keys(family: str, plan: Mapping[str, np.ndarray]) -> np.ndarray:
  """(A, k) ints: architectures with equal rows have equal raw outputs of `family`."""
  return np.concatenate([plan[k] for k in _FAMILY_PLAN[family]], axis=1)


def _one_arch(setup: Setup, family: str, shared: Mapping, plan: Mapping):
  if family == "naswot":
    return jax.lax.map(lambda a: naswot_kernel(plan, *a),
                       (shared["naswot_params"], shared["stem_out"]))
  if family == "logsynflow":
    base, per_edge = jax.lax.map(lambda p: logsynflow_terms(plan, p, setup.image_shape),
                                 shared["synflow_params"])
    return base.mean(0), per_edge.mean(0)
  if family == "meco":
    return meco_value(plan, shared["meco_params"], shared["meco_image"])
  return az_values(plan, shared["az_params"], shared["az_images"], shared["az_key"])


@functools.lru_cache(maxsize=None)
def family_program(setup: Setup, family: str):
  """jit(shared, plans) -> raw outputs of `family` for a chunk of architectures."""
  def run(shared, plans):
    return jax.lax.map(functools.partial(_one_arch, setup, family, shared), plans,
                       batch_size=setup.vmap_size if setup.vmap_size > 1 else None)
  return jax.jit(run, compiler_options=COMPILER_OPTIONS or None)


def _plan_arrays(plan: Mapping[str, np.ndarray], rows) -> dict:
  return {k: jnp.asarray(v[rows]) for k, v in plan.items()}


def run_family(setup: Setup, shared: Mapping, family: str, plan: Mapping[str, np.ndarray],
               pad_to: int = 0):
  """Raw outputs of `family` for every architecture of `plan` (numpy); the chunk is padded
  to `pad_to` architectures (repeating the last) so one compiled shape serves every call."""
  n = len(plan["ops"])
  rows = np.concatenate([np.arange(n), np.full(max(pad_to - n, 0), n - 1)])
  raw = jax.device_get(family_program(setup, family)(shared, _plan_arrays(plan, rows)))
  return jax.tree_util.tree_map(lambda a: np.asarray(a)[:n], raw)


def naswot_from_kernels(kernels: np.ndarray) -> np.ndarray:
  """(A, inits, batches, N, N) -> (A,) mean log |det K|, the bundle's 1e-6 where singular."""
  logdet = np.linalg.slogdet(np.asarray(kernels, np.float64))[1].mean(axis=(1, 2))
  return np.where(np.isfinite(logdet), logdet, SINGULAR_NASWOT)


def finish(family: str, raw, ops: np.ndarray) -> dict[str, np.ndarray]:
  """float64 proxy values from raw outputs (each architecture's own row) and (A, 6) ops."""
  if family == "naswot":
    return {"naswot": naswot_from_kernels(raw)}
  if family == "logsynflow":
    return {"logsynflow": logsynflow_from_terms(raw[0], raw[1], ops)}
  if family == "meco":
    return {"meco": np.asarray(raw, np.float64)}
  az = np.asarray(raw, np.float64)
  return {name: az[:, i] for i, name in enumerate(
      ("az_expressivity", "az_progressivity", "az_trainability"))}


def score(setup: Setup, shared: Mapping, ops: np.ndarray) -> dict[str, np.ndarray]:
  """float64 values of `setup.proxies` for (A, 6) architectures: one compiled call per
  family, each distinct computation once."""
  ops = np.asarray(ops, np.int32).reshape(-1, searchspace.NUM_EDGES)
  plan = plan_archs(ops)
  values = {}
  for family in sorted(setup.families):
    _, first, inverse = np.unique(family_keys(family, plan), axis=0, return_index=True,
                                  return_inverse=True)
    raw = run_family(setup, shared, family, {k: v[first] for k, v in plan.items()},
                     pad_to=len(ops))  # one compiled shape per batch size
    expanded = jax.tree_util.tree_map(lambda a: a[inverse.ravel()], raw)
    values.update(finish(family, expanded, ops))
  return {name: values[name] for name in setup.proxies}


def az_nas_rank(values: Mapping[str, np.ndarray], flops: np.ndarray) -> np.ndarray:
  """AZ-NAS's combination: sum over expressivity, progressivity, trainability and FLOPs of
  log(rank / n) (ties averaged), over the architectures given."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  n = len(flops)
  columns = [flops] + [values[k] for k in ("az_expressivity", "az_progressivity",
                                           "az_trainability")]
  return sum(np.log(stats.rankdata(c) / n) for c in columns)
