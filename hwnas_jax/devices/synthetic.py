"""Synthetic devices: a vmappable family of latency models, and priors to draw them from.

A `SyntheticDevice` is a pytree of small arrays; `latency_table` and `measure` are pure
jitted functions of it, so `jax.vmap` runs thousands of devices at once. The family,
chosen from the residuals of additive fits on the training devices:

  cell(a)    = sum_e edge_cost[e, op_e(a)] * (1 - dead_discount * dead_e(a))
  latency(a) = (overhead + cell(a) * (1 + curvature * cell(a) / cell_ref))
               * exp(arch_jitter * z_seed(a))
  probe(a)   = latency(a) * exp(noise * eps),   eps ~ N(0, 1) afresh at every probe,
and both rounded to the device's timer `resolution` when it has one.

* `overhead`: everything outside the cells (stem, reductions, head, launch); about 30-40 %
  of the mean latency on every bundle device, the whole latency of the cheapest cells on
  GPUs at batch 1.
* `edge_cost`: per-edge, per-operation costs. On the bundle devices the per-edge fit adds
  nothing to a per-operation fit (the edges of a cell all run at the same shape), so the
  priors draw per-operation costs and a small per-edge jitter.
* `curvature`: the non-additive term. Of the additive model's residual, a full quadratic
  in the op counts explains nearly all that any function of the op counts can (per-edge
  pairs add little, node-activity terms under 1 %); one curvature along the cost direction
  gets about half of the quadratic's gain with one number: the bundle GPUs at batch 1 and
  32 and the CPUs are sub-additive (curvature -0.1 to -0.4: more work overlaps better).
  Most of the residual is not structural at all (see `arch_jitter`).
  `cell_ref` is the sum of all 30 costs, so `cell <= cell_ref` and the latency stays
  positive for curvature > -1 and increases with the cell's work for curvature >= -0.5.
* `dead_discount`: the share of an edge's cost saved when it cannot affect the output
  (`none`, or not on an input-to-output path of non-`none` edges), as a graph compiler
  that prunes dead code would. 0 on every bundle device; kept so priors can cover one.
* `arch_jitter`, `seed`: a persistent per-architecture log-normal deviation, the same at
  every probe (what a latency table records beyond any smooth model: on the bundle GPUs and
  CPUs mostly measurement drift along the index order, 30-80 % of the additive residual).
  z is a counter-based hash of (seed, index), so one architecture's value is computed
  without the table.
* `noise`: the per-probe multiplicative noise (a table repeats itself, so `fit_device`
  sets it to 0; priors draw it).
* `resolution`: the step of the device's timer in ms (0: continuous). HELP's phones report
  whole milliseconds, 6-11 % of their budgets: near the budget, a probe then says "at most
  the budget" for a band of latencies, and the additive fit sees steps.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Mapping

import chex
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

from hwnas_jax.benchmark import tables
from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices import noise

NUM_EDGES = searchspace.NUM_EDGES
NUM_OPS = searchspace.NUM_OPS
NUM_ARCHS = searchspace.NUM_ARCHS
_NONE, _SKIP = searchspace.OPS.index("none"), searchspace.OPS.index("skip_connect")
CURVATURE_RANGE = (-0.5, 2.0)  # >= -0.5 keeps latency increasing with the cell's work


@chex.dataclass(frozen=True)
class SyntheticDevice:
  """One latency model (or a batch of them, stacked along a leading axis)."""
  overhead: jax.Array       # [] ms, fixed cost outside the cells
  edge_cost: jax.Array      # [6, 5] ms, cost of op o (OPS order) on edge e (EDGES order)
  curvature: jax.Array      # [] non-additivity: <0 sub-additive, >0 super-additive
  dead_discount: jax.Array  # [] in [0, 1], share of a dead edge's cost saved
  arch_jitter: jax.Array    # [] sd of the persistent per-architecture log-deviation
  seed: jax.Array           # [] uint32, which per-architecture deviations
  noise: jax.Array          # [] sd of the per-probe multiplicative log-normal noise
  resolution: jax.Array     # [] ms, the timer's step (0: continuous)


def make_device(overhead, edge_cost, curvature=0.0, dead_discount=0.0, arch_jitter=0.0,
                seed=0, noise=0.0, resolution=0.0) -> SyntheticDevice:
  """A device from plain numbers, with the dtypes the jitted functions expect."""
  return SyntheticDevice(
      overhead=jnp.asarray(overhead, jnp.float32),
      edge_cost=jnp.asarray(edge_cost, jnp.float32),
      curvature=jnp.asarray(curvature, jnp.float32),
      dead_discount=jnp.asarray(dead_discount, jnp.float32),
      arch_jitter=jnp.asarray(arch_jitter, jnp.float32),
      seed=jnp.asarray(seed, jnp.uint32),
      noise=jnp.asarray(noise, jnp.float32),
      resolution=jnp.asarray(resolution, jnp.float32))


# --- per-architecture features (constants, computed once) ------------------------------

# Moved down to the search space (it is the cell graph); kept here for callers.
dead_edges = searchspace.dead_edges


@functools.lru_cache(maxsize=None)
def arch_features() -> tuple[np.ndarray, np.ndarray]:
  """(15625, 30) one-hot (edge-major) and the same masked to dead edges, float32."""
  ops = searchspace.arch_ops()
  onehot = searchspace.one_hot(ops).reshape(NUM_ARCHS, NUM_EDGES * NUM_OPS).astype(np.float32)
  dead_onehot = (onehot.reshape(-1, NUM_EDGES, NUM_OPS) * dead_edges(ops)[..., None]).reshape(
      onehot.shape).astype(np.float32)
  for a in (onehot, dead_onehot):
    a.setflags(write=False)
  return onehot, dead_onehot


@functools.lru_cache(maxsize=None)
def _feature_moments() -> tuple[np.ndarray, ...]:
  """Means and second moments of the features over the space (closed-form mean latency)."""
  oh, ohd = (a.astype(np.float64) for a in arch_features())
  n = float(NUM_ARCHS)
  return (oh.mean(0), ohd.mean(0), oh.T @ oh / n, oh.T @ ohd / n, ohd.T @ ohd / n)


# --- latency -------------------------------------------------------------------------------

def _hash32(x: jax.Array) -> jax.Array:
  """lowbias32 integer hash (uint32 -> uint32); wraps modulo 2**32 by design."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def arch_normal(seed: jax.Array, index: jax.Array) -> jax.Array:
  """A standard normal per (seed, architecture), computable for one index without a table."""
  index = jnp.asarray(index).astype(jnp.uint32)
  bits = _hash32(index * jnp.uint32(0x9E3779B1) + _hash32(jnp.asarray(seed, jnp.uint32)))
  bits = _hash32(bits ^ jnp.uint32(0x5BD1E995))
  # 23 bits, so (k + 0.5) / 2**23 is exact in float32 and never rounds to 0 or 1.
  uniform = ((bits >> 9).astype(jnp.float32) + 0.5) * (1.0 / (1 << 23))
  return jax.scipy.special.ndtri(uniform)


def quantize(device: SyntheticDevice, latency_ms: jax.Array) -> jax.Array:
  """Latencies as the device's timer reports them: the nearest step, at least one step."""
  step = device.resolution
  steps = jnp.maximum(jnp.round(latency_ms / jnp.where(step > 0, step, 1.0)), 1.0)
  return jnp.where(step > 0, steps * step, latency_ms)


def _latency_from_features(device: SyntheticDevice, onehot, dead_onehot, z) -> jax.Array:
  cost = device.edge_cost.reshape(-1)
  cell = onehot @ cost - device.dead_discount * (dead_onehot @ cost)
  cell_ref = jnp.maximum(jnp.sum(cost), 1e-12)
  structural = device.overhead + cell * (1.0 + device.curvature * cell / cell_ref)
  return structural * jnp.exp(device.arch_jitter * z)


@jax.jit
def latency_table(device: SyntheticDevice) -> jax.Array:
  """(15625,) latencies in ms without probe noise, NATS-Bench order."""
  onehot, dead_onehot = arch_features()
  z = arch_normal(device.seed, jnp.arange(NUM_ARCHS))
  return quantize(device, _latency_from_features(device, jnp.asarray(onehot),
                                                 jnp.asarray(dead_onehot), z))


def _unrounded_latency(device: SyntheticDevice, index: jax.Array) -> jax.Array:
  onehot, dead_onehot = arch_features()
  index = jnp.asarray(index)
  return _latency_from_features(device, jnp.asarray(onehot)[index],
                                jnp.asarray(dead_onehot)[index], arch_normal(device.seed, index))


@jax.jit
def latency(device: SyntheticDevice, index: jax.Array) -> jax.Array:
  """Latency in ms of one architecture without probe noise (no table is built)."""
  return quantize(device, _unrounded_latency(device, index))


@jax.jit
def measure(device: SyntheticDevice, index: jax.Array, key: jax.Array) -> jax.Array:
  """One probe in ms: the latency times log-normal noise (median-preserving), fresh per key,
  as the device's timer reports it."""
  eps = jax.random.normal(key, jnp.shape(index))
  return quantize(device, _unrounded_latency(device, index) * jnp.exp(device.noise * eps))


def mean_latency(device: SyntheticDevice) -> jax.Array:
  """Mean structural latency over the space in closed form (no table); arch_jitter ignored."""
  m_oh, m_ohd, s_oo, s_od, s_dd = (jnp.asarray(a, jnp.float32) for a in _feature_moments())
  cost = device.edge_cost.reshape(-1)
  d = device.dead_discount
  first = (m_oh - d * m_ohd) @ cost
  second = cost @ (s_oo - 2.0 * d * s_od + d * d * s_dd) @ cost
  return device.overhead + first + device.curvature * second / jnp.maximum(jnp.sum(cost), 1e-12)


# --- fitting one device --------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _sparse_features():
  """Constants of the fit: flat cost indices e * 5 + op (n, 6), the dead mask, and sparse
  maps from per-architecture weights to sums over cost indices and cost-index pairs."""
  n, n_cost = NUM_ARCHS, NUM_EDGES * NUM_OPS
  idx = (NUM_OPS * np.arange(NUM_EDGES) + searchspace.arch_ops()).astype(np.int64)
  dead = dead_edges(searchspace.arch_ops()).astype(np.float64)
  rows = np.repeat(np.arange(n), NUM_EDGES)
  single = scipy.sparse.csr_matrix((np.ones(idx.size), (idx.ravel(), rows)), shape=(n_cost, n))
  single_dead = scipy.sparse.csr_matrix((dead.ravel(), (idx.ravel(), rows)), shape=(n_cost, n))
  pair = (idx[:, :, None] * n_cost + idx[:, None, :]).ravel()
  pair_rows = np.repeat(np.arange(n), NUM_EDGES * NUM_EDGES)
  dead_sum = (dead[:, :, None] + dead[:, None, :]).ravel()
  dead_both = (dead[:, :, None] * dead[:, None, :]).ravel()
  pairs = [scipy.sparse.csr_matrix((v, (pair, pair_rows)), shape=(n_cost**2, n))
           for v in (np.ones(pair.size), dead_sum, dead_both)]
  return idx, dead, single, single_dead, pairs


def _structural_np(params: np.ndarray) -> tuple[np.ndarray, dict]:
  """Structural latency (float64) for params [overhead, 30 costs, curvature, discount]."""
  idx, dead = _sparse_features()[:2]
  overhead, cost, curv, disc = params[0], params[1:31], params[31], params[32]
  chosen = cost[idx]                      # (n, 6) cost of each edge's op
  dead_cost = (chosen * dead).sum(1)
  cell = chosen.sum(1) - disc * dead_cost
  ratio = cell / max(cost.sum(), 1e-12)
  pred = overhead + cell * (1.0 + curv * ratio)
  return pred, dict(cell=cell, dead_cost=dead_cost, ratio=ratio, curv=curv, disc=disc)


def _normal_equations(parts: dict, residual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """J^T J and J^T r of the structural model without forming the (n, 33) Jacobian.

  The cost block of J is B - q 1^T, with B sparse (row a: slope_a * (1 - discount * dead)
  at its 6 cost indices) and q = curvature * ratio^2; B's products are sparse mat-vecs.
  """
  _, _, single, single_dead, (pair, pair_dead_sum, pair_dead_both) = _sparse_features()
  n_cost = NUM_EDGES * NUM_OPS
  disc = parts["disc"]
  slope = 1.0 + 2.0 * parts["curv"] * parts["ratio"]
  q = parts["curv"] * parts["ratio"]**2
  dense = np.stack([np.ones_like(slope), parts["cell"] * parts["ratio"],
                    -slope * parts["dead_cost"]], 1)  # overhead, curvature, discount columns

  def cost_t(v):  # (B - q 1^T)^T v for v of shape (n, k)
    sv = slope[:, None] * v
    return single @ sv - disc * (single_dead @ sv) - (q @ v)[None, :]

  w = slope**2
  btb = (pair @ w - disc * (pair_dead_sum @ w) + disc**2 * (pair_dead_both @ w)).reshape(n_cost, n_cost)
  btq = cost_t(q[:, None])[:, 0] + q @ q   # B^T q
  cc = btb - btq[:, None] - btq[None, :] + q @ q
  cd = cost_t(dense)
  order = [0, 31, 32]
  jtj = np.empty((33, 33))
  jtj[1:31, 1:31] = cc
  jtj[np.ix_(order, order)] = dense.T @ dense
  jtj[1:31][:, order] = cd
  jtj[np.ix_(order, range(1, 31))] = cd.T
  jtr = np.empty(33)
  jtr[1:31] = cost_t(residual[:, None])[:, 0]
  jtr[order] = dense.T @ residual
  return jtj, jtr


def _initial_params(y: np.ndarray) -> np.ndarray:
  """Additive per-op fit, the cheapest op's cost moved into the overhead."""
  counts = searchspace.op_counts().astype(np.float64)
  design = np.c_[np.ones(len(y)), counts[:, 1:]]
  coef, *_ = np.linalg.lstsq(design, y, rcond=None)
  per_op = np.r_[0.0, coef[1:]]
  overhead = coef[0] + NUM_EDGES * per_op.min()
  per_op = per_op - per_op.min()
  return np.r_[max(overhead, 1e-3), np.tile(per_op, NUM_EDGES), 0.0, 0.0]


_COST_RIDGE = 1e-6  # per architecture, on costs in units of the mean latency


def _fit_structural(target: np.ndarray, iterations: int = 40, tol: float = 1e-7) -> np.ndarray:
  """Projected Levenberg-Marquardt on [overhead, 30 costs, curvature, discount] (float64).

  A common shift of an edge's costs is the overhead's when curvature and discount are 0, so
  a tiny ridge on the costs sends such a shift to the overhead (the cheapest op of an edge
  then costs ~0, which keeps shares and per-edge jitter meaningful).
  """
  params = _initial_params(target)
  ridge = np.zeros(params.size)
  ridge[1:31] = _COST_RIDGE * len(target)
  lower = np.r_[0.0, np.zeros(30), CURVATURE_RANGE[0], 0.0]
  upper = np.r_[np.inf, np.full(30, np.inf), CURVATURE_RANGE[1], 1.0]
  params = np.clip(params, lower, upper)
  pred, parts = _structural_np(params)
  loss = np.sum((pred - target)**2) + np.sum(ridge * params**2)
  jtj, jtr = _normal_equations(parts, pred - target)
  damping = 1e-3
  for _ in range(iterations):
    grad = jtr + ridge * params
    # Parameters held at a bound by a gradient pushing outwards sit this step out.
    move = ~(((params <= lower) & (grad > 0)) | ((params >= upper) & (grad < 0)))
    hess = jtj[np.ix_(move, move)] + np.diag(ridge[move])
    step = np.linalg.solve(hess + damping * (np.diag(np.diag(hess)) + 1e-9 * np.eye(len(hess))),
                           -grad[move])
    trial = params.copy()
    trial[move] = np.clip(params[move] + step, lower[move], upper[move])
    trial_pred, trial_parts = _structural_np(trial)
    trial_loss = np.sum((trial_pred - target)**2) + np.sum(ridge * trial**2)
    if trial_loss < loss:
      improvement = (loss - trial_loss) / max(loss, 1e-30)
      params, pred, loss = trial, trial_pred, trial_loss
      jtj, jtr = _normal_equations(trial_parts, pred - target)
      damping = max(damping / 3.0, 1e-9)
      if improvement < tol and damping < 1e-3:  # a (nearly) Gauss-Newton step gained nothing
        break
    else:
      damping *= 4.0
      if damping > 1e6:
        break
  return params


def fit_device(latency_ms: np.ndarray) -> SyntheticDevice:
  """The member of the family closest (least squares, ms) to one real latency table.

  The relative residual's sd becomes `arch_jitter` (seed 0: the realised deviations are
  not the table's own); `noise` is 0 because a table returns the same value at every probe.
  """
  y = tables.check_table("latency_ms", latency_ms, positive=True)
  return _fit_device_cached(hashlib.sha256(y.tobytes()).hexdigest(), y)


_FIT_CACHE: dict[str, SyntheticDevice] = {}


def _fit_device_cached(digest: str, y: np.ndarray) -> SyntheticDevice:
  """Fits are deterministic; the same table (by content) is fitted once per process."""
  if digest not in _FIT_CACHE:
    _FIT_CACHE[digest] = _fit_device_uncached(y)
  return _FIT_CACHE[digest]


def _fit_device_uncached(y: np.ndarray) -> SyntheticDevice:
  scale = float(y.mean())
  target = y / scale
  p = _fit_structural(target)
  pred, _ = _structural_np(p)
  jitter = float(np.std(np.log(target / np.maximum(pred, 1e-9))))
  return make_device(overhead=p[0] * scale, edge_cost=(p[1:31] * scale).reshape(NUM_EDGES, NUM_OPS),
                     curvature=p[31], dead_discount=p[32], arch_jitter=jitter, seed=0, noise=0.0,
                     resolution=timer_resolution(y))


def timer_resolution(latency_ms: np.ndarray) -> float:
  """The step of a latency table's timer in ms, 0 for a continuous one.

  A table is stepped when its values take few distinct levels (fewer than one in 50
  architectures) that all lie on the grid of the smallest gap between them.
  """
  levels = np.unique(np.asarray(latency_ms, np.float64))
  if len(levels) < 2 or len(levels) * 50 > len(latency_ms):
    return 0.0
  step = float(np.min(np.diff(levels)))
  on_grid = np.abs(levels / step - np.round(levels / step)) < 1e-3
  return step if on_grid.all() else 0.0


def stack_devices(devices) -> SyntheticDevice:
  """One batched device (leading axis) from a sequence of unbatched ones."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *devices)


def without_jitter(device: SyntheticDevice) -> SyntheticDevice:
  """The same device with its persistent per-architecture deviations switched off."""
  return device.replace(arch_jitter=jnp.zeros_like(device.arch_jitter))


# --- the shape space the priors live in ----------------------------------------------------
# A device's shape, in unconstrained coordinates:
#   0  log mean latency (ms)          1  logit of the overhead's share of the mean latency
#   2-6 log(per-op cost share + SHARE_FLOOR), OPS order (shares: mean cost over edges / sum)
#   7  curvature                       8  dead_discount (clipped to [0, 1] when decoded)
#   9  log per-edge cost jitter (sd of log cost around the per-op cost)
#   10 log arch_jitter
SHAPE_NAMES = ("log_mean_ms", "overhead_logit") + tuple(f"log_share_{op}" for op in searchspace.OPS) + (
    "curvature", "dead_discount", "log_edge_jitter", "log_arch_jitter")
SHAPE_DIM = len(SHAPE_NAMES)
SHARE_FLOOR = 1e-3
_FRACTION_EPS = 1e-3
_JITTER_FLOOR = 1e-4
MAX_EDGE_JITTER = 0.5   # decoded jitters are capped: a wide Gaussian in log space has
MAX_ARCH_JITTER = 0.25  # tails no device shows (training devices: arch_jitter <= 0.093 on GPUs
                        # and CPUs, 0.13-0.14 on the phones; edge <= 0.07)


def device_shape(device: SyntheticDevice) -> np.ndarray:
  """(11,) shape coordinates of one (unbatched) device."""
  cost = np.asarray(device.edge_cost, np.float64)
  per_op = cost.mean(0)
  share = per_op / max(per_op.sum(), 1e-12)
  mean = float(mean_latency(device))
  frac = np.clip(float(device.overhead) / mean, _FRACTION_EPS, 1 - _FRACTION_EPS)
  big = per_op > 0.05 * per_op.max()  # per-edge jitter of ops that cost something
  rel = np.log(np.maximum(cost[:, big], 1e-12) / per_op[big])
  edge_jitter = max(float(np.sqrt(np.mean(rel**2))), _JITTER_FLOOR)
  return np.r_[np.log(mean), np.log(frac / (1 - frac)), np.log(share + SHARE_FLOOR),
               float(device.curvature), float(device.dead_discount), np.log(edge_jitter),
               np.log(max(float(device.arch_jitter), _JITTER_FLOOR))]


def decode_shape(shape: jax.Array, edge_eps: jax.Array, seed: jax.Array,
                 noise: jax.Array, resolution_rel: jax.Array = 0.0) -> SyntheticDevice:
  """A device from shape coordinates, (6, 5) standard normals for the per-edge jitter, a seed,
  a noise sd and a timer step relative to the mean latency (0: continuous). Costs are scaled
  so that the mean latency over the space is exp(shape[0])."""
  mean = jnp.exp(shape[0])
  frac = jax.nn.sigmoid(shape[1])
  share = jnp.maximum(jnp.exp(shape[2:7]) - SHARE_FLOOR, 0.0)
  share = share / jnp.maximum(jnp.sum(share), 1e-12)
  curvature = jnp.clip(shape[7], *CURVATURE_RANGE)
  discount = jnp.clip(shape[8], 0.0, 1.0)
  edge_jitter = jnp.minimum(jnp.exp(shape[9]), MAX_EDGE_JITTER)
  unit_cost = share[None, :] * jnp.exp(edge_jitter * edge_eps)
  unit = make_device(overhead=0.0, edge_cost=unit_cost, curvature=curvature, dead_discount=discount)
  cell_mean = mean_latency(unit)  # cell cost scales linearly with the costs
  scale = (1.0 - frac) * mean / jnp.maximum(cell_mean, 1e-12)
  return SyntheticDevice(
      overhead=(frac * mean).astype(jnp.float32),
      edge_cost=(unit_cost * scale).astype(jnp.float32),
      curvature=curvature.astype(jnp.float32),
      dead_discount=discount.astype(jnp.float32),
      arch_jitter=jnp.minimum(jnp.exp(shape[10]), MAX_ARCH_JITTER).astype(jnp.float32),
      seed=jnp.asarray(seed, jnp.uint32),
      noise=jnp.asarray(noise, jnp.float32),
      resolution=(jnp.asarray(resolution_rel, jnp.float32) * mean).astype(jnp.float32))


# --- the prior -----------------------------------------------------------------------------

@chex.dataclass(frozen=True)
class Prior:
  """Mixture over device shapes: a Gaussian around the fitted devices and a broad component.

  fitted_weight: []       probability of the fitted component.
  fitted_mean:   [11]     mean shape of the fitted devices.
  fitted_chol:   [11, 11] Cholesky factor of their (shrunk, inflated, floored) covariance.
  broad_low, broad_high: [11] uniform ranges of the broad component (share dims unused).
  broad_ratio_low, broad_ratio_high: [5] the broad component's per-op costs relative to
                          nor_conv_3x3's, uniform in these ranges (OPS order).
  broad_tie_none_skip: [] probability that `none` costs exactly what `skip_connect` costs.
  log_noise_range: [2]    per-probe noise sd is log-uniform in this range (both components).
  stepped_share: []       probability that a device's timer is stepped (both components).
  log_step_range: [2]     a stepped timer's step relative to the mean latency, log-uniform.
  """
  fitted_weight: jax.Array
  fitted_mean: jax.Array
  fitted_chol: jax.Array
  broad_low: jax.Array
  broad_high: jax.Array
  broad_ratio_low: jax.Array
  broad_ratio_high: jax.Array
  broad_tie_none_skip: jax.Array
  log_noise_range: jax.Array
  stepped_share: jax.Array
  log_step_range: jax.Array


# Hyperparameters, fixed a priori and checked only on the training devices (leave one
# device family out; see experiments/device_coverage.py). Never tuned on validation devices.
FITTED_WEIGHT = 0.5
COV_SHRINK = 0.5      # covariance = (1 - s) * sample + s * diag(sample)
COV_INFLATE = 1.5     # sd multiplier: 15 devices from 5 families underestimate the spread
SHAPE_SD_FLOOR = np.array([0.3, 0.3] + [0.3] * 5 + [0.05, 0.05, 0.3, 0.3])
# Broad component: mean latency 0.1 ms .. 1 s, overhead 8 % .. 88 % of it, curvature -0.5 ..
# 1 (super-additive up to doubling the cost of the largest cell: caches that overflow, a
# scheduler that serialises; the training devices are all sub-additive), dead-code pruning
# on a quarter of the devices (U(-3, 1) clipped at 0; no bundle device prunes), jitters up
# to the caps.
BROAD_LOW = np.array([np.log(0.1), -2.5] + [0.0] * 5 + [-0.5, -3.0, np.log(1e-3), np.log(1e-3)])
BROAD_HIGH = np.array([np.log(1000.0), 2.0] + [0.0] * 5 + [1.0, 1.0, np.log(0.3),
                                                          np.log(MAX_ARCH_JITTER)])
# Per-op cost relative to the 3x3 convolution (the op with the most work), from what the ops
# do rather than from any device: `none` (x * 0) and `skip_connect` (identity) move data at
# most, up to half a convolution where memory traffic is everything; a 1x1 conv has 1/9 of
# the MACs but the same memory traffic, and a runtime with a tuned 3x3 kernel (Winograd) and
# a generic 1x1 path can make it the slower (so 0.02 .. 1.5); a 3x3 average pool is nearly
# free when compute-bound and costlier than the conv when the datapath lacks it and it falls
# back to a slow path (0 .. 2). Training devices: none 0.04-0.23, skip 0, conv1x1 0.27-1.0,
# pool 0.16-0.8 of the conv3x3's cost: the broad ranges reach well beyond them on purpose.
BROAD_RATIO_LOW = np.array([0.0, 0.0, 0.02, 1.0, 0.0])
BROAD_RATIO_HIGH = np.array([0.5, 0.5, 1.5, 1.0, 2.0])
BROAD_TIE_NONE_SKIP = 0.5  # compilers often treat both as a copy, or both as nothing
# Probe noise from a dedicated device timed with care (0.1 %) to a loaded shared machine
# (30 %: the host study's inter-quartile range under load); the same range as the noise
# posterior of `noise.SIGMA_GRID`, so controllers meet in training what they may meet.
LOG_NOISE_RANGE = np.log([noise.SIGMA_GRID[0], noise.SIGMA_GRID[-1]])
# Stepped timers: at least a quarter of the devices (more if more of the fitted ones are),
# with a step of 1 % to 15 % of the mean latency (whole milliseconds on networks of 7 to
# 100 ms; the training phones' steps are 4-6 % of their means).
MIN_STEPPED_SHARE = 0.25
LOG_STEP_RANGE = np.log([0.01, 0.15])


def _refuse_validation(names) -> None:
  leaked = sorted(set(names) & set(tables.VALIDATION_DEVICES))
  if leaked:
    raise ValueError(f"validation devices {leaked} must never inform a prior (PROTOCOL.md); "
                     f"pass only training devices, e.g. synthetic.training_tables(benchmark)")


def training_tables(benchmark: tables.Benchmark,
                    held_out_family: str = "") -> dict[str, np.ndarray]:
  """The latency tables a prior may be fitted on: the benchmark's training devices only,
  less those of `held_out_family` (a family the fit must not see)."""
  names = [n for n in benchmark.training_devices
           if not held_out_family or tables.device_family(n) != held_out_family]
  if not names:
    raise ValueError(f"no training device is left once family {held_out_family!r} is held out")
  return {name: benchmark.latency(name) for name in names}


def prior_from_shapes(shapes: np.ndarray, stepped=()) -> Prior:
  """The mixture prior whose fitted component is built on these (n, 11) shapes; `stepped`
  says which of those devices have a stepped timer (raises the stepped share above its floor)."""
  shapes = np.asarray(shapes, np.float64).reshape(-1, SHAPE_DIM)
  stepped_share = max(MIN_STEPPED_SHARE, float(np.mean(stepped)) if len(stepped) else 0.0)
  mean = shapes.mean(0)
  if len(shapes) > 1:
    cov = np.cov(shapes, rowvar=False)
    cov = (1 - COV_SHRINK) * cov + COV_SHRINK * np.diag(np.diag(cov))
  else:
    cov = np.zeros((SHAPE_DIM, SHAPE_DIM))
  cov = COV_INFLATE**2 * cov + np.diag(SHAPE_SD_FLOOR**2)
  return Prior(fitted_weight=jnp.asarray(FITTED_WEIGHT, jnp.float32),
               fitted_mean=jnp.asarray(mean, jnp.float32),
               fitted_chol=jnp.asarray(np.linalg.cholesky(cov), jnp.float32),
               broad_low=jnp.asarray(BROAD_LOW, jnp.float32),
               broad_high=jnp.asarray(BROAD_HIGH, jnp.float32),
               broad_ratio_low=jnp.asarray(BROAD_RATIO_LOW, jnp.float32),
               broad_ratio_high=jnp.asarray(BROAD_RATIO_HIGH, jnp.float32),
               broad_tie_none_skip=jnp.asarray(BROAD_TIE_NONE_SKIP, jnp.float32),
               log_noise_range=jnp.asarray(LOG_NOISE_RANGE, jnp.float32),
               stepped_share=jnp.asarray(stepped_share, jnp.float32),
               log_step_range=jnp.asarray(LOG_STEP_RANGE, jnp.float32))


def fit_prior(latency_tables: Mapping[str, np.ndarray]) -> Prior:
  """The mixture prior fitted on exactly these tables (never a validation device)."""
  _refuse_validation(latency_tables)
  if not latency_tables:
    raise ValueError("fit_prior needs at least one latency table")
  fits = [fit_device(latency_tables[name]) for name in sorted(latency_tables)]
  return prior_from_shapes(np.stack([device_shape(f) for f in fits]),
                           stepped=[float(f.resolution) > 0 for f in fits])


_NUM_UNIFORMS = SHAPE_DIM + NUM_OPS + 5  # shape, cost ratios, tie, component, noise, step (2)


def _sample_shape(normals: jax.Array, uniforms: jax.Array, prior: Prior,
                  fitted_weight: jax.Array) -> jax.Array:
  """One shape from (11,) standard normals and uniforms (few random ops: fast to compile)."""
  fitted = prior.fitted_mean + prior.fitted_chol @ normals[:SHAPE_DIM]
  broad = prior.broad_low + (prior.broad_high - prior.broad_low) * uniforms[:SHAPE_DIM]
  ratio = prior.broad_ratio_low + (prior.broad_ratio_high - prior.broad_ratio_low) * uniforms[
      SHAPE_DIM:SHAPE_DIM + NUM_OPS]
  tie = uniforms[SHAPE_DIM + NUM_OPS] < prior.broad_tie_none_skip
  ratio = ratio.at[_NONE].set(jnp.where(tie, ratio[_SKIP], ratio[_NONE]))
  broad = broad.at[2:7].set(jnp.log(ratio / jnp.sum(ratio) + SHARE_FLOOR))
  return jnp.where(uniforms[SHAPE_DIM + NUM_OPS + 1] < fitted_weight, fitted, broad)


@functools.partial(jax.jit, static_argnames=("num", "component"))
def sample_devices(key: jax.Array, prior: Prior, num: int, component: str = "mixture") -> SyntheticDevice:
  """`num` devices (leading axis) from the prior; component 'fitted' or 'broad' draws one part only."""
  weight = jnp.asarray({"mixture": prior.fitted_weight, "fitted": 1.0, "broad": 0.0}[component],
                       jnp.float32)
  k_normal, k_uniform, k_seed = jax.random.split(key, 3)
  normals = jax.random.normal(k_normal, (num, SHAPE_DIM + NUM_EDGES * NUM_OPS))
  uniforms = jax.random.uniform(k_uniform, (num, _NUM_UNIFORMS))
  seeds = jax.random.bits(k_seed, (num,), jnp.uint32)

  def one(normal, uniform, seed):
    shape = _sample_shape(normal, uniform, prior, weight)
    low, high = prior.log_noise_range[0], prior.log_noise_range[1]
    noise = jnp.exp(low + (high - low) * uniform[SHAPE_DIM + NUM_OPS + 2])
    edge_eps = normal[SHAPE_DIM:].reshape(NUM_EDGES, NUM_OPS)
    step_low, step_high = prior.log_step_range[0], prior.log_step_range[1]
    step = jnp.exp(step_low + (step_high - step_low) * uniform[SHAPE_DIM + NUM_OPS + 4])
    step_rel = jnp.where(uniform[SHAPE_DIM + NUM_OPS + 3] < prior.stepped_share, step, 0.0)
    return decode_shape(shape, edge_eps, seed, noise, step_rel)

  return jax.vmap(one)(normals, uniforms, seeds)


# --- the paper-faithful prior --------------------------------------------------------------

@chex.dataclass(frozen=True)
class PaperPrior:
  """One truncated normal per operation (OPS order), bounds in milliseconds."""
  mean: jax.Array  # [5] ms
  std: jax.Array   # [5] ms
  low: jax.Array   # [5] ms, lower truncation bound
  high: jax.Array  # [5] ms, upper truncation bound


# The authors' intended bounds (TruncatedNormalDistribution(lower_bound=1e-3, upper_bound=1e3));
# they passed them to scipy.stats.truncnorm as standard deviations, so every draw lay above
# mean + 1e-3 sd. Here they are milliseconds.
PAPER_BOUNDS_MS = (1e-3, 1e3)


def op_latencies(latency_ms: np.ndarray) -> np.ndarray:
  """(5,) per-op latency as in op_latency_ms.json: the cell with all six edges = op, over 6."""
  latency_ms = np.asarray(latency_ms, np.float64)
  return np.array([latency_ms[searchspace.ops_to_index([op] * NUM_EDGES)] / NUM_EDGES
                   for op in range(NUM_OPS)])


def fit_paper_prior(latency_tables: Mapping[str, np.ndarray],
                    bounds_ms: tuple[float, float] = PAPER_BOUNDS_MS) -> PaperPrior:
  """The paper's prior (per-op mean and sd over devices), fitted on these tables only."""
  _refuse_validation(latency_tables)
  if not latency_tables:
    raise ValueError("fit_paper_prior needs at least one latency table")
  per_op = np.stack([op_latencies(latency_tables[n]) for n in sorted(latency_tables)])
  low, high = bounds_ms
  if not 0 <= low < high:
    raise ValueError(f"truncation bounds must satisfy 0 <= low < high (ms), got {bounds_ms}")
  return PaperPrior(mean=jnp.asarray(per_op.mean(0), jnp.float32),
                    std=jnp.asarray(np.maximum(per_op.std(0), 1e-6), jnp.float32),
                    low=jnp.full((NUM_OPS,), low, jnp.float32),
                    high=jnp.full((NUM_OPS,), high, jnp.float32))


def sample_paper_op_latencies(key: jax.Array, paper_prior: PaperPrior, num: int) -> jax.Array:
  """(num, 5) per-op latencies in ms, truncated to [low, high] ms."""
  lower = (paper_prior.low - paper_prior.mean) / paper_prior.std
  upper = (paper_prior.high - paper_prior.mean) / paper_prior.std
  z = jax.random.truncated_normal(key, lower, upper, (num, NUM_OPS))
  return jnp.clip(paper_prior.mean + paper_prior.std * z, paper_prior.low, paper_prior.high)


@functools.partial(jax.jit, static_argnames=("num",))
def sample_paper_devices(key: jax.Array, paper_prior: PaperPrior, num: int) -> SyntheticDevice:
  """`num` additive devices: per-op cost on every edge, no overhead, no jitter, no noise."""
  per_op = sample_paper_op_latencies(key, paper_prior, num)
  zeros = jnp.zeros((num,), jnp.float32)
  return SyntheticDevice(overhead=zeros, edge_cost=jnp.repeat(per_op[:, None, :], NUM_EDGES, axis=1),
                         curvature=zeros, dead_discount=zeros, arch_jitter=zeros,
                         seed=jnp.zeros((num,), jnp.uint32), noise=zeros, resolution=zeros)
