"""The controller's policy over all candidates, scored without materialising per-candidate features.

The action space is the N = 15,625 candidate architectures plus E extra actions per
observation (E = 0 today; e.g. one "measure it again" action per probe later):

  * action i < N: candidate i (its NATS-Bench index);
  * action N + e: extra action e, e < E.

`Scores` holds one observation's logits in factorised form. With p the proxy in standard
units (one row per dataset, shared by every observation of that dataset) and g(i) the
operation-count group of candidate i (210 groups, `count_groups`),

  logit(i)     = proxy_weight * p_i + gain_weight[g] * relu(p_i - best) + group_term[g]
  logit(N + e) = extras[e]

and probed candidates have probability 0 (`dense_logits` writes them as MASKED). A
candidate whose proxy is at or below `floor` (the proxy of an answer already confirmed)
cannot improve the answer: its logit is lowered by DOMINATED, so it is chosen only when no
other candidate is left. Everything
that is a property of a group is computed once per group; only `a * p + B_g * relu(p - b)`
is per candidate.

Layout (`Layout`). Candidates are stored group by group in 3 blocks of rows 16, 32 and 64
lanes wide (groups of 1 to 15, 20 to 30, and 60 to 360 candidates; a group larger than 64
spans several rows): 325 rows, 17,360 positions for 15,625 candidates. Group terms enter
as per-row terms (`Layout.expand`: a permutation and repeats), so within a block they
broadcast along lanes and their gradients are lane sums; the padding is masked like a
probed candidate. Few blocks means few XLA kernels per pass (each costs a launch).

Cost. PPO needs log pi(a|s) = logit(a) - logsumexp(logits) and its gradient, which is a
softmax-weighted sum per row (of 1 and of relu(p - best)) and one of p. `log_prob` computes
the logsumexp and those sums in ONE pass over the candidates (`_stats`, a `jax.custom_vjp`
whose backward only scales the saved sums), a few observations at a time (`chunk` rows,
so a chunk's logits and weights live in cache and nothing of size [batch, 15,625] is
written to memory). The probed candidates are masked inside the pass, never subtracted
from a full sum (a probed candidate can hold most of the mass). The sampler draws a row of
the layout by its total mass, then a candidate within the row by the rest of the same
uniform (`sample`): inverse-CDF sampling over the layout's order, without a cumulative
sum over 17,360 values. Greedy is the argmax with the first index winning ties, as
`jnp.argmax(dense_logits(...))`. The entropy is computed only where asked: in the loss
when `entropy=True` (its gradient from the same pass), and as a metric by the sampler.

`dense_logits` is the straightforward formulation: the reference of the tests and what
deployment (one observation at a time) uses.
"""

from __future__ import annotations

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from hwnas_jax.benchmark import searchspace

MASKED = -1e9  # logit of a probed candidate in `dense_logits`
# Lowers the logit of a candidate that cannot improve a confirmed answer; finite, so that a
# policy with nothing better left still has a distribution (and the order among them).
DOMINATED = 1e3
LANES = 16     # block rows are padded to a multiple of this (one AVX-512 vector of float32)
# Observations per chunk of the one-pass kernels on CPU: the chunk's logits and weights
# (chunk x ~17,000 floats each) stay in the L2 cache. Elsewhere (GPU) the whole batch.
CPU_CHUNK = 16


@functools.lru_cache(maxsize=None)
def count_groups() -> tuple[np.ndarray, np.ndarray]:
  """(210, 5) distinct operation shares and (15625,) the group of each architecture.

  Latency is close to linear in the operation counts on most devices, so the in-context
  model predicts per group: 210 predictions instead of 15,625.
  """
  shares = searchspace.op_counts() / searchspace.NUM_EDGES
  groups, group_of = np.unique(shares, axis=0, return_inverse=True)
  return groups.astype(np.float32), group_of.reshape(-1).astype(np.int32)


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a static argument
class Layout:
  """Where each candidate sits in the block layout (numpy constants, built once).

  A group of size s goes to the narrowest block of width >= s, or, beyond the widest
  width, spans ceil(s / width) rows of the widest block. Each row holds one group's
  members (in candidate order) then padding; block rows are ordered by group size, then
  group id. Flattened block after block, row after row, that is a row of `size`
  positions. Group terms enter as per-row terms (`expand`), so within a block they
  broadcast along lanes and their gradients are lane sums.
  """
  group_of: np.ndarray                   # (N,) canonical group of each candidate
  widths: tuple[int, ...]                # per block: lanes per row
  block_members: tuple[np.ndarray, ...]  # per block: (rows, width) candidates, padding -> 0
  block_pad: tuple[np.ndarray, ...]      # per block: (rows, width) bool, True on padding
  classes: tuple[tuple[np.ndarray, int], ...]  # (canonical groups, rows per group), row order
  position: np.ndarray                   # (N,) flat position of each candidate
  member_at: np.ndarray                  # (size,) candidate at each flat position (N: padding)
  row_start: np.ndarray                  # (rows,) flat start of each row
  row_width: np.ndarray                  # (rows,) lanes of each row
  size: int                              # flat positions, padding included

  @property
  def num_candidates(self) -> int:
    return self.group_of.shape[0]

  @property
  def num_groups(self) -> int:
    return int(self.group_of.max()) + 1

  @property
  def num_rows(self) -> int:
    return self.row_start.shape[0]

  @property
  def max_width(self) -> int:
    return max(self.widths)

  @classmethod
  def from_groups(cls, group_of, widths=(16, 32, 64)) -> "Layout":
    group_of = np.asarray(group_of, np.int32)
    n, widths = group_of.shape[0], tuple(sorted(widths))
    counts = np.bincount(group_of)
    block_of_size = {int(s): next((k for k, w in enumerate(widths) if s <= w), len(widths) - 1)
                     for s in np.unique(counts)}
    used = sorted(set(block_of_size.values()))
    block_members, block_pad, classes, row_start, row_width, member_at = [], [], [], [], [], []
    offset = 0
    for k in used:
      width = widths[k]
      rows = []
      for s in sorted(s for s, b in block_of_size.items() if b == k):
        groups = np.flatnonzero(counts == s).astype(np.int32)
        per_group = -(-s // width)
        classes.append((groups, per_group))
        for g in groups:
          members = np.flatnonzero(group_of == g)
          padded = np.full(per_group * width, -1)
          padded[:s] = members
          rows.extend(padded.reshape(per_group, width))
      rows = np.stack(rows)
      block_members.append(np.maximum(rows, 0).astype(np.int32))
      block_pad.append(rows < 0)
      for row in rows:
        row_start.append(offset)
        row_width.append(width)
        member_at.extend(np.where(row < 0, n, row))
        offset += width
    member_at = np.asarray(member_at, np.int32)
    position = np.zeros(n, np.int32)
    real = member_at < n
    position[member_at[real]] = np.flatnonzero(real)
    return cls(group_of=group_of, widths=tuple(widths[k] for k in used),
               block_members=tuple(block_members), block_pad=tuple(block_pad),
               classes=tuple(classes), position=position, member_at=member_at,
               row_start=np.asarray(row_start, np.int32),
               row_width=np.asarray(row_width, np.int32), size=int(offset))

  @functools.cached_property
  def group_order(self) -> np.ndarray:
    """(G,) canonical group ids in row order (each group once)."""
    return np.concatenate([groups for groups, _ in self.classes]).astype(np.int32)

  def expand(self, x):
    """(..., G) per-group values -> (..., rows) per-row values: a permutation of the groups
    (whose gradient is the inverse permutation, not a scatter-add) and repeats (whose
    gradient is a sum over each group's rows)."""
    x = _permute(x, self.group_order)
    parts, start = [], 0
    for groups, per_group in self.classes:
      part = x[..., start:start + groups.shape[0]]
      start += groups.shape[0]
      if per_group > 1:
        part = jnp.repeat(part, per_group, axis=-1, total_repeat_length=part.shape[-1] * per_group)
      parts.append(part)
    return jnp.concatenate(parts, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _permute(x, order: np.ndarray):
  """x[..., order] for a permutation `order` (a numpy constant)."""
  return x[..., jnp.asarray(order)]


def _permute_fwd(x, order):
  return _permute(x, order), None


def _permute_bwd(order, _, g):
  return (g[..., jnp.asarray(np.argsort(order))],)


_permute.defvjp(_permute_fwd, _permute_bwd)


@functools.lru_cache(maxsize=None)
def nb201_layout() -> Layout:
  """The layout of the NAS-Bench-201 space by operation-count group."""
  return Layout.from_groups(count_groups()[1])


@chex.dataclass(frozen=True)
class Scores:
  """One observation's logits, factorised (see the module docstring); a pytree, so a batch
  of observations is the same dataclass with a leading axis on every field."""
  proxy_weight: jax.Array  # () a
  gain_weight: jax.Array   # (G,) B_g, per canonical group
  group_term: jax.Array    # (G,) t_g
  best: jax.Array          # () the gain threshold; enters as a constant (no gradient)
  probed: jax.Array        # (K,) int32 candidates to mask
  probed_valid: jax.Array  # (K,) bool: which slots of `probed` hold a probe
  extras: jax.Array        # (E,) logits of the extra actions
  dataset: jax.Array       # () int32 row of the proxy table
  floor: jax.Array | None = None  # () proxies <= floor are dominated (-inf or None: none)


@chex.dataclass(frozen=True)
class ProxyTable:
  """Proxies in standard units, one row per dataset, in candidate order and in block layout.

  Build it once per jitted call (`proxy_table`), never per observation: every observation
  reads its dataset's row in place.
  """
  values: jax.Array               # (D, N)
  blocks: tuple[jax.Array, ...]   # per block (D, G_s, width); padding holds any finite value
  floor: jax.Array                # (D,) the minimum, the gain threshold before any valid probe


def dominated(p, floor):
  """The logit offset of candidates of proxy `p` under `floor` (0 or -DOMINATED)."""
  return jnp.where(p <= floor, -DOMINATED, 0.0)


def _floor(scores: Scores):
  return jnp.full_like(scores.best, -jnp.inf) if scores.floor is None else scores.floor


def proxy_table(proxies_std, layout: Layout | None = None) -> ProxyTable:
  """`ProxyTable` of (D, N) or (N,) proxies in standard units (`controller.standardize`)."""
  layout = layout or nb201_layout()
  values = jnp.atleast_2d(jnp.asarray(proxies_std, jnp.float32))
  blocks = tuple(values[:, jnp.asarray(members)] for members in layout.block_members)
  return ProxyTable(values=values, blocks=blocks, floor=jnp.min(values, axis=1))


def dense_logits(scores: Scores, proxy_std, layout: Layout | None = None) -> jax.Array:
  """(N + E,) logits of one observation, the straightforward way: the reference formulation
  (and deployment's). Probed candidates are MASKED."""
  layout = layout or nb201_layout()
  group_of = jnp.asarray(layout.group_of)
  p = jnp.asarray(proxy_std, jnp.float32)
  logits = (scores.proxy_weight * p
            + scores.gain_weight[group_of] * jax.nn.relu(p - scores.best)
            + scores.group_term[group_of] + dominated(p, _floor(scores)))
  probed = jnp.zeros(p.shape[0], bool).at[scores.probed].max(scores.probed_valid)
  return jnp.concatenate([jnp.where(probed, MASKED, logits), scores.extras])


def action_logit(scores: Scores, table: ProxyTable, action, layout: Layout | None = None):
  """logit(action) of one observation (MASKED for a probed candidate), as `dense_logits`."""
  layout = layout or nb201_layout()
  n = layout.num_candidates
  index = jnp.minimum(action, n - 1)
  group = jnp.asarray(layout.group_of)[index]
  p = table.values[scores.dataset, index]
  logit = (scores.proxy_weight * p
           + scores.gain_weight[group] * jax.nn.relu(p - jax.lax.stop_gradient(scores.best))
           + scores.group_term[group] + dominated(p, _floor(scores)))
  logit = jnp.where(jnp.any(scores.probed_valid & (scores.probed == action)), MASKED, logit)
  num_extras = scores.extras.shape[-1]
  if num_extras == 0:
    return logit
  extra = scores.extras[jnp.clip(action - n, 0, num_extras - 1)]
  return jnp.where(action >= n, extra, logit)


# --- one observation's pass over its candidates ---------------------------------------
# The kernels see one observation as a tuple of arrays, its group terms per row:
# (proxy_weight, gain_row (rows,), term_row (rows,), extras (E,), best, probed, probed_valid,
#  dataset, floor); `_map_rows` runs them on a batch, a chunk of observations at a time.

def _row_inputs(scores: Scores, layout: Layout):
  return (scores.proxy_weight, layout.expand(scores.gain_weight),
          layout.expand(scores.group_term), scores.extras, scores.best, scores.probed,
          scores.probed_valid, scores.dataset, _floor(scores))


def _row_pass(x, table: ProxyTable, layout: Layout):
  """Per block: (logits, proxy, relu(p - best), masked) of one observation, (rows, width)."""
  proxy_weight, gain_row, term_row, _, best, probed, probed_valid, dataset, floor = x
  best = jax.lax.stop_gradient(best)
  masked = jnp.zeros(layout.size, bool).at[jnp.asarray(layout.position)[probed]].max(
      probed_valid)
  blocks = []
  row = start = 0
  for k, (width, pad) in enumerate(zip(layout.widths, layout.block_pad)):
    rows = pad.shape[0]
    p = jax.lax.stop_gradient(table.blocks[k][dataset])
    relu = jax.nn.relu(p - best)
    logits = (proxy_weight * p + gain_row[row:row + rows, None] * relu
              + term_row[row:row + rows, None] + dominated(p, floor))
    mask = masked[start:start + rows * width].reshape(rows, width) | pad
    blocks.append((logits, p, relu, mask))
    row += rows
    start += rows * width
  return blocks


def _row_max(blocks, extras):
  m = jnp.max(jnp.stack([jnp.max(jnp.where(mask, -jnp.inf, logits))
                         for logits, _, _, mask in blocks]))
  if extras.shape[-1]:
    m = jnp.maximum(m, jnp.max(extras))
  return m


def _row_stats(x, table: ProxyTable, layout: Layout, entropy: bool):
  """logsumexp over the actions, the entropy, and what their gradients need, in one pass.

  Returns (lse, entropy, sums) where sums (softmax-weighted, per row of the layout) are
  pi_r = sum pi, r_r = sum pi relu(p - best), p_sum = sum pi p over all candidates,
  pi_x (E,), and with `entropy` also the same sums weighted by the logit (l_r, lr_r, lp_sum).
  """
  extras = x[3]
  blocks = _row_pass(x, table, layout)
  m = _row_max(blocks, extras)
  weights = [jnp.where(mask, 0.0, jnp.exp(logits - m)) for logits, _, _, mask in blocks]
  extras_w = jnp.exp(extras - m)
  per_row = jnp.concatenate([jnp.sum(w, axis=1) for w in weights])
  total = jnp.sum(per_row) + jnp.sum(extras_w)
  lse = m + jnp.log(total)
  inv = 1.0 / total
  sums = {"pi_r": per_row * inv,
          "r_r": jnp.concatenate([jnp.sum(w * relu, axis=1)
                                  for w, (_, _, relu, _) in zip(weights, blocks)]) * inv,
          "p_sum": sum(jnp.sum(w * p) for w, (_, p, _, _) in zip(weights, blocks)) * inv,
          "pi_x": extras_w * inv}
  if not entropy:
    return lse, jnp.zeros(()), sums
  wl = [w * logits for w, (logits, _, _, _) in zip(weights, blocks)]  # w = 0 where masked
  sums["l_r"] = jnp.concatenate([jnp.sum(v, axis=1) for v in wl]) * inv
  sums["lr_r"] = jnp.concatenate([jnp.sum(v * relu, axis=1)
                                  for v, (_, _, relu, _) in zip(wl, blocks)]) * inv
  sums["lp_sum"] = sum(jnp.sum(v * p) for v, (_, p, _, _) in zip(wl, blocks)) * inv
  mean_logit = jnp.sum(sums["l_r"]) + jnp.sum(sums["pi_x"] * extras)
  return lse, lse - mean_logit, sums


def _map_rows(fn, xs, chunk: int | None, table: ProxyTable):
  """`vmap(fn)(xs, table)` over the rows of `xs`, computed `chunk` rows at a time (all at
  once when None). Under a further vmap with the table shared (seeds), the batch is folded
  into the rows: one call on all of them, not a batched version of every kernel (which on
  CPU costs 2-3x)."""

  def plain(xs, table):
    rows = jax.tree.leaves(xs)[0].shape[0]
    row_fn = jax.vmap(fn, in_axes=(0, None))
    if chunk is None or chunk >= rows:
      return row_fn(xs, table)
    steps, main = rows // chunk, rows // chunk * chunk
    chunks = jax.tree.map(lambda x: x[:main].reshape((steps, chunk) + x.shape[1:]), xs)
    out = jax.tree.map(lambda y: y.reshape((main,) + y.shape[2:]),
                       jax.lax.map(lambda c: row_fn(c, table), chunks))
    if main == rows:
      return out
    rest = row_fn(jax.tree.map(lambda x: x[main:], xs), table)
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), out, rest)

  @jax.custom_batching.custom_vmap
  def folded(xs, table):
    return plain(xs, table)

  @folded.def_vmap
  def _fold(axis_size, in_batched, xs, table):
    xs_batched, table_batched = in_batched
    if any(jax.tree.leaves(table_batched)):  # a table per batch element: no folding
      axes = jax.tree.map(lambda b: 0 if b else None, (xs_batched, table_batched))
      out = jax.vmap(plain, in_axes=axes)(xs, table)
      return out, jax.tree.map(lambda _: True, out)
    xs = jax.tree.map(lambda x, b: x if b else jnp.broadcast_to(x, (axis_size,) + x.shape),
                      xs, xs_batched)
    rows = axis_size * jax.tree.leaves(xs)[0].shape[1]  # explicit sizes: E may be 0
    out = folded(jax.tree.map(lambda x: x.reshape((rows,) + x.shape[2:]), xs), table)
    out = jax.tree.map(lambda y: y.reshape((axis_size, rows // axis_size) + y.shape[1:]), out)
    return out, jax.tree.map(lambda _: True, out)

  return folded(xs, table)


def default_chunk() -> int | None:
  return CPU_CHUNK if jax.default_backend() == "cpu" else None


# --- log-probabilities and entropy (differentiable) -------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _stats(coefs, rest, layout, chunk, entropy):
  return _stats_fwd(coefs, rest, layout, chunk, entropy)[0]


def _stats_fwd(coefs, rest, layout, chunk, entropy):
  *rest, table = rest
  lse, ent, sums = _map_rows(lambda x, t: _row_stats(x, t, layout, entropy),
                             (*coefs, *rest), chunk, table)
  return (lse, ent), (sums, coefs[3], lse, ent)


def _stats_bwd(layout, chunk, entropy, residuals, cotangents):
  del layout, chunk
  sums, extras, lse, ent = residuals
  g_lse, g_ent = cotangents
  # d lse / d(a, gain_r, term_r, x_e) = (sum pi p, sum_r pi relu, sum_r pi, pi_e)
  d_a = g_lse * sums["p_sum"]
  d_gain = g_lse[:, None] * sums["r_r"]
  d_term = g_lse[:, None] * sums["pi_r"]
  d_extras = g_lse[:, None] * sums["pi_x"]
  if entropy:
    # H = lse - E_pi[l]: dH/dtheta = -E_pi[(l - E_pi[l]) dl/dtheta].
    mean = (lse - ent)[:, None]
    d_a = d_a - g_ent * (sums["lp_sum"] - mean[:, 0] * sums["p_sum"])
    d_gain = d_gain - g_ent[:, None] * (sums["lr_r"] - mean * sums["r_r"])
    d_term = d_term - g_ent[:, None] * (sums["l_r"] - mean * sums["pi_r"])
    d_extras = d_extras - g_ent[:, None] * sums["pi_x"] * (extras - mean)
  return (d_a, d_gain, d_term, d_extras), None


_stats.defvjp(_stats_fwd, _stats_bwd)


def logsumexp_and_entropy(scores: Scores, table: ProxyTable, layout: Layout | None = None,
                          chunk: int | None = -1, entropy: bool = False):
  """(logsumexp of the logits, entropy (0 unless `entropy`)) of a batch of observations.

  Differentiable in proxy_weight, gain_weight, group_term and extras; `best` and the table
  enter as constants. `chunk`: rows per pass (-1: `default_chunk()`; None: all at once).
  """
  layout = layout or nb201_layout()
  chunk = default_chunk() if chunk == -1 else chunk
  x = _row_inputs(scores, layout)
  return _stats(x[:4], (*x[4:], table), layout, chunk, bool(entropy))


def log_prob(scores: Scores, table: ProxyTable, actions, layout: Layout | None = None,
             chunk: int | None = -1, entropy: bool = False):
  """(log pi(action), entropy) of a batch of observations; see `logsumexp_and_entropy`."""
  layout = layout or nb201_layout()
  lse, ent = logsumexp_and_entropy(scores, table, layout, chunk, entropy)
  logits = jax.vmap(action_logit, in_axes=(0, None, 0, None))(scores, table, actions, layout)
  return logits - lse, ent


# --- sampling and greedy (rollouts: no gradient) ----------------------------------------

def _row_sample(u, x, table: ProxyTable, layout: Layout):
  """(action, entropy, lse) of one observation for a uniform u in [0, 1): a row of the
  layout (or an extra action) by its mass, then a candidate within the row by the rest of u:
  inverse-CDF sampling over the layout's order, without a cumulative sum over all of it."""
  extras = x[3]
  blocks = _row_pass(x, table, layout)
  m = _row_max(blocks, extras)
  weights = [jnp.where(mask, 0.0, jnp.exp(logits - m)) for logits, _, _, mask in blocks]
  extras_w = jnp.exp(extras - m)
  cdf = jnp.cumsum(jnp.concatenate([jnp.sum(w, axis=1) for w in weights] + [extras_w]))
  total = cdf[-1]
  target = jnp.minimum(u * total, jnp.nextafter(total, 0.0))
  choice = jnp.searchsorted(cdf, target, side="right")  # first entry with cdf > target
  num_rows, width = layout.num_rows, layout.max_width
  row = jnp.minimum(choice, num_rows - 1)
  # The chosen row's weights, recomputed from the table (64 lanes) rather than sliced out of
  # a copy of every weight: the same arithmetic as `_row_pass`, so the same values.
  start = jnp.asarray(layout.row_start)[row]
  members = jnp.asarray(np.append(layout.member_at, [layout.num_candidates] * width))[
      start + jnp.arange(width)]
  pad = (members >= layout.num_candidates) | (jnp.arange(width) >= jnp.asarray(layout.row_width)[row])
  probed = jnp.any((members[:, None] == x[5][None, :]) & x[6][None, :], axis=1)
  p = jax.lax.stop_gradient(table.values[x[7], jnp.minimum(members, layout.num_candidates - 1)])
  relu = jax.nn.relu(p - jax.lax.stop_gradient(x[4]))
  logits = x[0] * p + x[1][row] * relu + x[2][row] + dominated(p, x[8])
  inside_cdf = jnp.cumsum(jnp.where(pad | probed, 0.0, jnp.exp(logits - m)))
  rest = target - jnp.where(choice > 0, cdf[jnp.maximum(choice - 1, 0)], 0.0)
  rest = jnp.clip(rest, 0.0, jnp.nextafter(inside_cdf[-1], 0.0))
  lane = jnp.minimum(jnp.searchsorted(inside_cdf, rest, side="right"), width - 1)
  candidate = jnp.asarray(layout.member_at)[start + lane]
  action = jnp.where(choice < num_rows, candidate, layout.num_candidates + choice - num_rows)
  lse = m + jnp.log(total)
  mean_logit = (sum(jnp.sum(w * logits) for w, (logits, _, _, _) in zip(weights, blocks))
                + jnp.sum(extras_w * extras)) / total
  return action.astype(jnp.int32), lse - mean_logit, lse


def _row_greedy(x, table: ProxyTable, layout: Layout):
  """(argmax action, lse) of one observation; the lowest action index wins ties."""
  extras = x[3]
  blocks = _row_pass(x, table, layout)
  m = _row_max(blocks, extras)
  n = layout.num_candidates
  best_candidate = n
  start = 0
  for logits, _, _, mask in blocks:
    index = jnp.asarray(layout.member_at[start:start + mask.size].reshape(mask.shape))
    best_candidate = jnp.minimum(best_candidate, jnp.min(
        jnp.where(~mask & (logits == m), index, n)))
    start += mask.size
  action = best_candidate
  if extras.shape[-1]:
    action = jnp.where(best_candidate < n, best_candidate, n + jnp.argmax(extras))
  total = sum(jnp.sum(jnp.where(mask, 0.0, jnp.exp(logits - m))) for logits, _, _, mask in blocks)
  lse = m + jnp.log(total + jnp.sum(jnp.exp(extras - m)))
  return jnp.asarray(action, jnp.int32), lse


def sample(keys, scores: Scores, table: ProxyTable, layout: Layout | None = None,
           chunk: int | None = -1):
  """(actions, log pi(action), entropy) of a batch of observations, one draw per key."""
  layout = layout or nb201_layout()
  chunk = default_chunk() if chunk == -1 else chunk
  u = jax.vmap(jax.random.uniform)(keys)
  action, ent, lse = _map_rows(lambda x, t: _row_sample(x[0], x[1:], t, layout),
                               (u, *_row_inputs(scores, layout)), chunk, table)
  logits = jax.vmap(action_logit, in_axes=(0, None, 0, None))(scores, table, action, layout)
  return action, logits - lse, ent


def greedy(scores: Scores, table: ProxyTable, layout: Layout | None = None,
           chunk: int | None = -1):
  """(argmax actions, their log pi) of a batch of observations (`jnp.argmax` of
  `dense_logits`: the lowest index wins ties)."""
  layout = layout or nb201_layout()
  chunk = default_chunk() if chunk == -1 else chunk
  action, lse = _map_rows(lambda x, t: _row_greedy(x, t, layout),
                          _row_inputs(scores, layout), chunk, table)
  logits = jax.vmap(action_logit, in_axes=(0, None, 0, None))(scores, table, action, layout)
  return action, logits - lse


def uniform_scores(obs, num_groups: int | None = None, num_extras: int = 0) -> Scores:
  """Scores of the uniform policy over the unprobed candidates (random search)."""
  num_groups = num_groups or nb201_layout().num_groups
  slots = obs.probe_index.shape[-1]
  return Scores(proxy_weight=jnp.zeros(()), gain_weight=jnp.zeros(num_groups),
                group_term=jnp.zeros(num_groups), best=jnp.zeros(()),
                probed=obs.probe_index, probed_valid=jnp.arange(slots) < obs.num_probed,
                extras=jnp.full(num_extras, -jnp.inf), dataset=obs.dataset,
                floor=jnp.full((), -jnp.inf))
