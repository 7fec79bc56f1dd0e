"""The one-pass candidate scoring against the straightforward formulation (dense logits,
log_softmax), the sampler against inverse-CDF sampling, greedy against argmax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from hwnas_jax.metatrain import candidates

LAYOUT = candidates.nb201_layout()
N, G = LAYOUT.num_candidates, LAYOUT.num_groups
COEFS = ("proxy_weight", "gain_weight", "group_term", "extras")


def _scores(rng, rows, num_extras, num_datasets=3, num_groups=G, num_candidates=N, probes=10):
  return candidates.Scores(
      proxy_weight=jnp.asarray(rng.normal(size=rows) * 3, jnp.float32),
      gain_weight=jnp.asarray(rng.normal(size=(rows, num_groups)), jnp.float32),
      group_term=jnp.asarray(rng.normal(size=(rows, num_groups)) * 3, jnp.float32),
      best=jnp.asarray(rng.normal(size=rows), jnp.float32),
      probed=jnp.asarray(rng.integers(0, num_candidates, (rows, probes)), jnp.int32),
      probed_valid=jnp.asarray(rng.uniform(size=(rows, probes)) < 0.7),
      extras=jnp.asarray(rng.normal(size=(rows, num_extras)) * 3, jnp.float32),
      dataset=jnp.asarray(rng.integers(0, num_datasets, rows), jnp.int32),
      # Half the observations have a confirmed answer: candidates of proxy <= 0.5 dominated.
      floor=jnp.asarray(np.where(np.arange(rows) % 2, 0.5, -np.inf), jnp.float32))


def _dominated_by_a_probe(scores, proxies):
  """Row 0: its first probe's group gets a huge term and the probe the largest proxy, so
  the masked candidate would hold almost all the mass (exp(60) over the rest)."""
  probe = int(scores.probed[0, 0])
  group = int(LAYOUT.group_of[probe])
  proxies = proxies.copy()
  proxies[int(scores.dataset[0]), probe] = proxies.max() + 5.0
  return scores.replace(
      group_term=scores.group_term.at[0, group].set(60.0),
      proxy_weight=scores.proxy_weight.at[0].set(4.0),
      probed_valid=scores.probed_valid.at[0, 0].set(True)), proxies


def _reference(scores, values, actions, entropy):
  """Today's formulation: dense logits, log_softmax, take_along_axis."""
  logits = jax.vmap(lambda s: candidates.dense_logits(s, values[s.dataset]))(scores)
  log_probs = jax.nn.log_softmax(logits)
  probs = jnp.exp(log_probs)
  ent = -jnp.sum(jnp.where(probs > 0, probs * log_probs, 0.0), axis=-1)
  return jnp.take_along_axis(log_probs, actions[:, None], axis=-1)[:, 0], ent


def _loss(fn, scores, entropy):
  weights = jnp.linspace(-1.0, 1.0, scores.proxy_weight.shape[0])

  def loss(coefs):
    log_prob, ent = fn(scores.replace(**coefs))
    return jnp.sum(weights * log_prob) + (0.3 * jnp.sum(weights * ent) if entropy else 0.0)

  return loss


def test_layout_places_every_candidate_once():
  assert LAYOUT.widths == (16, 32, 64)
  positions = LAYOUT.position
  assert len(np.unique(positions)) == N
  np.testing.assert_array_equal(LAYOUT.member_at[positions], np.arange(N))
  assert (LAYOUT.member_at == N).sum() == LAYOUT.size - N
  row_group = np.asarray(LAYOUT.expand(jnp.arange(G)))
  row_of = np.searchsorted(LAYOUT.row_start, positions, side="right") - 1
  np.testing.assert_array_equal(row_group[row_of], LAYOUT.group_of)  # a row holds one group
  offset = 0
  for members, pad in zip(LAYOUT.block_members, LAYOUT.block_pad):
    flat = np.where(pad, N, members).reshape(-1)
    np.testing.assert_array_equal(flat, LAYOUT.member_at[offset:offset + flat.size])
    offset += flat.size


@pytest.mark.parametrize("num_extras", [0, 3])
@pytest.mark.parametrize("entropy", [False, True])
def test_log_prob_and_gradients_match_the_dense_formulation(num_extras, entropy):
  rng = np.random.default_rng(num_extras + 2 * entropy)
  rows = 37  # not a multiple of the chunk: the remainder path runs too
  scores = _scores(rng, rows, num_extras)
  proxies = rng.normal(size=(3, N)).astype(np.float32)
  scores, proxies = _dominated_by_a_probe(scores, proxies)
  table = candidates.proxy_table(proxies)
  actions = jnp.asarray(rng.integers(0, N + num_extras, rows), jnp.int32)

  def ours(s):
    return candidates.log_prob(s, table, actions, chunk=8, entropy=entropy)

  def reference(s):
    return _reference(s, table.values, actions, entropy)

  log_prob, ent = jax.jit(ours)(scores)
  ref_log_prob, ref_ent = jax.jit(reference)(scores)
  unmasked = np.asarray(ref_log_prob) > -1e8
  np.testing.assert_allclose(np.asarray(log_prob)[unmasked], np.asarray(ref_log_prob)[unmasked],
                             rtol=1e-5, atol=2e-5)
  if entropy:
    np.testing.assert_allclose(ent, ref_ent, rtol=1e-4, atol=1e-5)
  coefs = {k: scores[k] for k in COEFS}
  grads = jax.jit(jax.grad(_loss(ours, scores, entropy)))(coefs)
  ref_grads = jax.jit(jax.grad(_loss(reference, scores, entropy)))(coefs)
  for k in COEFS:
    scale = max(float(jnp.max(jnp.abs(ref_grads[k]))), 1e-3) if ref_grads[k].size else 1.0
    np.testing.assert_allclose(grads[k], ref_grads[k], atol=2e-5 * scale, err_msg=k)


def test_gradient_is_as_accurate_as_the_dense_one_against_float64():
  rng = np.random.default_rng(5)
  rows = 16
  scores = _scores(rng, rows, 2)
  proxies = rng.normal(size=(3, N)).astype(np.float32)
  scores, proxies = _dominated_by_a_probe(scores, proxies)
  actions = jnp.asarray(rng.integers(0, N + 2, rows), jnp.int32)
  table = candidates.proxy_table(proxies)
  coefs = {k: scores[k] for k in COEFS}
  ours = jax.jit(jax.grad(_loss(lambda s: candidates.log_prob(s, table, actions), scores,
                                False)))(coefs)
  dense = jax.jit(jax.grad(_loss(lambda s: _reference(s, table.values, actions, False),
                                 scores, False)))(coefs)
  with jax.enable_x64(True):
    scores64 = jax.tree.map(lambda x: jnp.asarray(np.asarray(x), jnp.float64)
                            if np.asarray(x).dtype == np.float32 else jnp.asarray(x), scores)
    values64 = jnp.asarray(proxies, jnp.float64)
    exact = jax.jit(jax.grad(_loss(lambda s: _reference(s, values64, actions, False),
                                   scores64, False)))({k: scores64[k] for k in COEFS})
    exact = jax.tree.map(np.asarray, exact)
  for k in COEFS:
    err_ours = np.max(np.abs(np.asarray(ours[k], np.float64) - exact[k]))
    err_dense = np.max(np.abs(np.asarray(dense[k], np.float64) - exact[k]))
    assert err_ours <= 2 * err_dense + 1e-7, (k, err_ours, err_dense)


def test_sampler_is_inverse_cdf_over_the_layout_order():
  """Given the same uniform, the draw is the inverse CDF of the dense probabilities listed
  in layout order, then the extras (up to rounding at the edges of the CDF)."""
  rng = np.random.default_rng(7)
  rows, num_extras, draws = 6, 2, 200
  scores = _scores(rng, rows, num_extras)
  scores = scores.replace(group_term=scores.group_term * 0.3)  # spread the mass
  table = candidates.proxy_table(rng.normal(size=(3, N)).astype(np.float32))
  order = np.concatenate([LAYOUT.member_at[LAYOUT.member_at < N], N + np.arange(num_extras)])
  keys = jax.random.split(jax.random.key(0), draws * rows).reshape(draws, rows)
  uniforms = np.asarray(jax.vmap(jax.vmap(jax.random.uniform))(keys), np.float64)
  draw = jax.jit(jax.vmap(lambda k: candidates.sample(k, scores, table)))
  actions, log_probs, entropy = (np.asarray(x) for x in draw(keys))
  logits = np.asarray(jax.vmap(lambda s: candidates.dense_logits(s, table.values[s.dataset]))(
      scores), np.float64)
  probs = np.exp(logits - logits.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  agree = 0
  for r in range(rows):
    cdf = np.cumsum(probs[r, order])
    expected = order[np.minimum(np.searchsorted(cdf, uniforms[:, r] * cdf[-1], side="right"),
                                len(order) - 1)]
    agree += np.sum(expected == actions[:, r])
    np.testing.assert_allclose(log_probs[:, r], np.log(probs[r, actions[:, r]]), atol=1e-4)
    ent = -np.sum(np.where(probs[r] > 0, probs[r] * np.log(np.maximum(probs[r], 1e-300)), 0))
    np.testing.assert_allclose(entropy[:, r], ent, rtol=1e-4)
  assert agree >= 0.99 * draws * rows
  for r in range(rows):  # each observation's own probes
    probed = np.asarray(scores.probed[r])[np.asarray(scores.probed_valid[r])]
    assert not np.isin(actions[:, r], probed).any()


def test_sampler_draws_the_right_distribution_on_a_small_space():
  """Chi-square on 40 candidates in 9 groups (one spanning 3 rows) plus 2 extras."""
  group_of = np.repeat(np.arange(9), [1, 2, 3, 4, 5, 6, 7, 2, 10])
  np.random.default_rng(0).shuffle(group_of)
  layout = candidates.Layout.from_groups(group_of, widths=(2, 4))
  n, g = len(group_of), 9
  rng = np.random.default_rng(1)
  table = candidates.proxy_table(rng.normal(size=(1, n)).astype(np.float32), layout)
  one = candidates.Scores(
      proxy_weight=jnp.array(1.5), gain_weight=jnp.asarray(rng.normal(size=g), jnp.float32),
      group_term=jnp.asarray(rng.normal(size=g), jnp.float32), best=jnp.array(0.2),
      probed=jnp.array([3, 17, 0], jnp.int32), probed_valid=jnp.array([True, True, False]),
      extras=jnp.array([0.5, -1.0]), dataset=jnp.array(0))
  draws = 40_000
  scores = jax.tree.map(lambda x: jnp.broadcast_to(x, (draws,) + x.shape), one)
  keys = jax.random.split(jax.random.key(2), draws)
  actions, _, _ = jax.jit(lambda k: candidates.sample(k, scores, table, layout, chunk=1000))(
      keys)
  logits = np.asarray(candidates.dense_logits(one, table.values[0], layout), np.float64)
  probs = np.exp(logits - logits.max())
  probs /= probs.sum()
  counts = np.bincount(np.asarray(actions), minlength=n + 2)
  assert counts[3] == counts[17] == 0  # probed
  support = probs > 0
  assert counts[~support].sum() == 0
  _, p_value = stats.chisquare(counts[support], draws * probs[support])
  assert p_value > 1e-3


def test_greedy_is_the_dense_argmax_with_ties_to_the_lowest_index():
  rng = np.random.default_rng(3)
  rows = 9
  scores = _scores(rng, rows, 2)
  proxies = rng.normal(size=(3, N)).astype(np.float32)
  # Ties: duplicate the top candidates' proxies within their group.
  for d in range(3):
    top = int(np.argmax(proxies[d]))
    mates = np.flatnonzero(LAYOUT.group_of == LAYOUT.group_of[top])
    proxies[d, mates[-1]] = proxies[d, top]
  scores = scores.replace(gain_weight=scores.gain_weight * 0.0, best=scores.best * 0 + 10.0,
                          extras=scores.extras.at[1, 0].set(60.0))  # row 1: an extra wins
  table = candidates.proxy_table(proxies)
  actions, log_probs = jax.jit(lambda s: candidates.greedy(s, table))(scores)
  logits = jax.vmap(lambda s: candidates.dense_logits(s, table.values[s.dataset]))(scores)
  np.testing.assert_array_equal(actions, jnp.argmax(logits, axis=-1))
  assert int(actions[1]) >= N
  np.testing.assert_allclose(log_probs, jnp.max(jax.nn.log_softmax(logits), axis=-1),
                             atol=1e-5)


def test_uniform_scores_are_uniform_over_unprobed():
  obs_probe = jnp.array([[5, 9, 0]], jnp.int32)
  from hwnas_jax.metatrain import env  # pylint: disable=import-outside-toplevel
  obs = env.Observation(probe_index=obs_probe[0], latency_rel=jnp.zeros(3),
                        num_probed=jnp.array(2), dataset=jnp.array(0), num_probes=jnp.array(3))
  scores = jax.tree.map(lambda x: x[None], candidates.uniform_scores(obs))
  table = candidates.proxy_table(np.zeros((1, N), np.float32))
  # Jitted: op by op, each of the kernels' operations would compile on its own (seconds).
  log_prob, _ = jax.jit(candidates.log_prob)(scores, table, jnp.array([7]))
  np.testing.assert_allclose(log_prob, -np.log(N - 2), rtol=1e-6)


@pytest.mark.parametrize("num_extras", [0, 2])
def test_a_vmap_over_seeds_equals_separate_calls(num_extras):
  """Seeds share the table: their vmap is folded into more rows (custom_vmap)."""
  rng = np.random.default_rng(11)
  seeds, rows = 3, 20
  batch = [_scores(rng, rows, num_extras) for _ in range(seeds)]
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *batch)
  table = candidates.proxy_table(rng.normal(size=(3, N)).astype(np.float32))
  actions = jnp.asarray(rng.integers(0, N + num_extras, (seeds, rows)), jnp.int32)
  keys = jax.random.split(jax.random.key(4), seeds * rows).reshape(seeds, rows)

  def one(scores, actions, keys):
    coefs = {k: scores[k] for k in COEFS}
    loss = _loss(lambda s: candidates.log_prob(s, table, actions, chunk=8, entropy=True),
                 scores, True)
    return (jax.value_and_grad(loss)(coefs), candidates.sample(keys, scores, table, chunk=8),
            candidates.greedy(scores, table, chunk=8))

  together = jax.jit(jax.vmap(one))(stacked, actions, keys)
  for s in range(seeds):
    alone = jax.jit(one)(batch[s], actions[s], keys[s])
    for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(together)):
      np.testing.assert_allclose(np.asarray(b)[s], a, rtol=1e-5, atol=1e-6)
