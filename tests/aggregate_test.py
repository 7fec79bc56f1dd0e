"""Tests of hwnas_jax.benchmark.aggregate: proxy names, ranks, combinations, structural terms.

The aggregations are checked on hand-made columns where the answer can be written down
(ties, log-ranks); `paper` against the combination PROTOCOL.md's numbers were made with.
"""

import numpy as np
import pytest

from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import searchspace
from hwnas_jax.benchmark import tables

N = searchspace.NUM_ARCHS


@pytest.fixture(scope="module")
def bundle(data_dir):
  return tables.load_benchmark(data_dir)


# --- ranks and combinations on hand-made columns -----------------------------------------

def test_ranks_ascending_with_ties_averaged():
  np.testing.assert_array_equal(aggregate.ranks([0.3, 0.1, 0.2]), [3, 1, 2])
  # Two values tie for ranks 2 and 3: both get 2.5; three tie for 4..6: all get 5.
  np.testing.assert_array_equal(aggregate.ranks([1.0, 5.0, 2.0, 5.0, 2.0, 5.0]),
                                [1, 5, 2.5, 5, 2.5, 5])
  np.testing.assert_array_equal(aggregate.ranks(np.full(4, 7.0)), [2.5] * 4)
  ranked = aggregate.ranks([2.0, np.nan, 1.0])
  assert np.isnan(ranked[1]) and ranked[0] == 2 and ranked[2] == 1


def test_rank_and_logrank_sums_by_hand():
  a = np.array([4.0, 3.0, 2.0, 1.0])
  b = np.array([10.0, 30.0, 20.0, 20.0])  # ranks 1, 4, 2.5, 2.5
  np.testing.assert_array_equal(aggregate.combine("rank", [a, b]), [4 + 1, 3 + 4, 2 + 2.5, 1 + 2.5])
  expected = np.log(np.array([4, 3, 2, 1]) / 4) + np.log(np.array([1, 4, 2.5, 2.5]) / 4)
  np.testing.assert_allclose(aggregate.combine("logrank", [a, b]), expected)
  # The best on every term scores log(1) = 0, the largest a log-rank sum can be.
  assert aggregate.combine("logrank", [a, -b])[0] == 0.0
  # Rank and log-rank sums disagree where it matters: a balanced architecture (ranks 2, 3
  # of 4) beats a lopsided one (ranks 4, 1) by log-rank, not by rank sum.
  x, y = np.array([4.0, 2.0, 1.0, 3.0]), np.array([1.0, 3.0, 2.0, 4.0])
  rank_sum, logrank_sum = aggregate.combine("rank", [x, y]), aggregate.combine("logrank", [x, y])
  assert rank_sum[0] == rank_sum[1] == 5 and logrank_sum[1] > logrank_sum[0]


def test_mean_of_minmax_with_constant_and_nan_values():
  proxies = {"a": np.arange(5.0), "b": np.full(5, 3.0), "c": np.array([1.0, np.nan, 3, 3, 5])}
  np.testing.assert_allclose(aggregate.combine("mean", [proxies["a"], proxies["b"]]),
                             [0.0, 0.125, 0.25, 0.375, 0.5])
  combined = aggregate.combine("mean", [proxies["a"], proxies["c"]])
  assert np.isnan(combined[1]) and 0.0 <= np.nanmin(combined) <= np.nanmax(combined) <= 1.0
  with pytest.raises(ValueError, match="unknown aggregation 'sum'; known: mean, rank, logrank"):
    aggregate.combine("sum", [proxies["a"]])


def test_combination_is_order_invariant_in_scale():
  # Rank-based combinations see only the order: a monotone transform of a term changes nothing.
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=50), rng.normal(size=50)
  for how in ("rank", "logrank"):
    np.testing.assert_array_equal(aggregate.combine(how, [a, b]),
                                  aggregate.combine(how, [np.exp(3 * a), b]))


# --- names -------------------------------------------------------------------------------

def test_parse_names():
  assert aggregate.parse("paper") == ("mean", ("naswot", "logsynflow", "skip"))
  assert aggregate.parse("rank:naswot+logsynflow") == ("rank", ("naswot", "logsynflow"))
  assert aggregate.parse("logrank:naswot+logsynflow+live_params") == (
      "logrank", ("naswot", "logsynflow", "live_params"))
  assert aggregate.parse("rank:zico+naswot", terms=["naswot", "zico"]) == (
      "rank", ("zico", "naswot"))
  assert aggregate.make_name("mean", ("naswot", "logsynflow", "skip")) == "paper"
  assert aggregate.make_name("rank", ("naswot", "skip")) == "rank:naswot+skip"


@pytest.mark.parametrize("name, message", [
    ("zico", "bad proxy name 'zico': expected paper or '<how>:<term>"),
    ("sum:naswot+skip", "how in {mean, rank, logrank}"),
    ("rank:", "bad proxy name 'rank:'"),
    ("rank:naswot+zico",
     r"unknown terms \['zico'\].*terms among \{naswot, logsynflow, skip, flops"),
    ("rank:naswot+naswot", "a term appears twice"),
    ("rank:naswot++skip", r"unknown terms \[''\]"),
    (None, "proxy name must be a string"),
])
def test_bad_names_say_what_is_known(name, message):
  with pytest.raises(ValueError, match=message):
    aggregate.parse(name)


def test_candidates_registry():
  candidates = aggregate.CANDIDATES
  assert candidates[0] == "paper" and len(set(candidates)) == len(candidates)
  terms = aggregate.FRESH_TERMS
  subsets = 2 ** len(terms) - 1 - len(terms)  # every subset of 2 or more terms
  assert len(candidates) == 1 + len(terms) + 2 * subsets
  for name in candidates:  # every name parses on a fresh clone
    aggregate.parse(name)
  assert "logrank:naswot+logsynflow+live_params" in candidates
  lab = aggregate.candidate_names(["naswot", "zico", "meco"], max_terms=2,
                                  must_use=["zico", "meco"])
  assert lab == ["rank:naswot+zico", "rank:naswot+meco", "rank:zico+meco",
                 "logrank:naswot+zico", "logrank:naswot+meco", "logrank:zico+meco"]


def test_default_proxy_is_a_fresh_clone_candidate():
  assert aggregate.DEFAULT_PROXY in aggregate.CANDIDATES


# --- on the space ------------------------------------------------------------------------

def test_structural_terms():
  terms = aggregate.structural_terms("cifar10")
  assert tuple(terms) == aggregate.STRUCTURAL_TERMS
  empty = searchspace.ops_to_index([0] * 6)
  assert terms["live_flops"][empty] == terms["live_params"][empty] == 0.0
  assert terms["flops"][empty] > 0.0  # stem, reductions and head
  np.testing.assert_array_equal(terms["flops"], searchspace.flops_params_table("cifar10")[0])


def test_proxy_on_a_bare_dict_rejects_a_proxy_named_like_a_structural_term():
  proxies = {"naswot": np.arange(N, dtype=float), "flops": np.zeros(N)}
  with pytest.raises(ValueError, match=r"carry \['flops'\], names of structural terms"):
    aggregate.proxy("rank:naswot+flops", proxies, "cifar10")


@pytest.mark.parametrize("dataset", searchspace.DATASETS)
def test_paper_is_the_old_combination(bundle, dataset):
  proxies = bundle.proxies[dataset]
  old = np.mean([aggregate.minmax(np.asarray(proxies[name], dtype=np.float64))
                 for name in ("naswot", "logsynflow", "skip")], axis=0)
  np.testing.assert_array_equal(bundle.proxy(dataset, "paper"), old)
  np.testing.assert_array_equal(tables.combined_proxy(proxies), old)


def test_every_candidate_on_the_bundle(bundle):
  """Every candidate through `named_proxies` (each term ranked once), and every eighth, the
  paper's and the default through `proxy` one at a time: the same arrays."""
  terms_of = aggregate.term_tables(bundle.proxies["cifar100"], "cifar100")
  together = bundle.named_proxies("cifar100", aggregate.CANDIDATES)
  singly = set(aggregate.CANDIDATES[::8]) | {"paper", aggregate.DEFAULT_PROXY}
  for name, values in zip(aggregate.CANDIDATES, together):
    if name in singly:
      np.testing.assert_array_equal(bundle.proxy("cifar100", name), values, err_msg=name)
    assert values.shape == (N,) and values.dtype == np.float64 and np.all(np.isfinite(values))
    assert values.min() >= 0.0 and values.max() <= 1.0  # as the paper's, 0 at the worst
    if name != "paper":
      assert values.min() == 0.0 and values.max() == 1.0
      how, terms = aggregate.parse(name)  # the same order as the raw sum
      raw = aggregate.combine(how, [terms_of[t] for t in terms])
      np.testing.assert_allclose(values, aggregate.minmax(raw))
  # A single term's rank orders the space as the term does.
  live = aggregate.structural_terms("cifar100")["live_params"]
  ranked = bundle.proxy("cifar100", "rank:live_params")
  assert np.all(np.diff(ranked[np.argsort(live, kind="stable")]) >= 0)


def test_lab_proxies_with_minus_inf_load_and_rank_worst(tmp_path, data_dir):
  """A lab proxy scores a network whose output is always zero -inf (AZ-NAS does): such a
  file loads, its -inf ranks last, and a mean of min-max terms treats it as the minimum."""
  rng = np.random.default_rng(0)
  values = rng.normal(size=searchspace.NUM_ARCHS)
  values[[3, 7]] = -np.inf
  for dataset in searchspace.DATASETS:
    np.savez(tmp_path / f"proxies_{dataset}.npz", index=np.arange(searchspace.NUM_ARCHS),
             labx=values)
  bundle = tables.load_benchmark(data_dir, proxy_dirs=[str(tmp_path)])
  ranked = bundle.proxy("cifar10", "rank:labx+naswot")
  assert np.isfinite(ranked).all()
  assert aggregate.ranks(values)[3] == aggregate.ranks(values)[7] == 1.5
  np.testing.assert_allclose(aggregate.minmax(values)[[3, 7]], 0.0)
  plus_inf = values.copy()
  plus_inf[5] = np.inf
  np.savez(tmp_path / "proxies_cifar10.npz", index=np.arange(searchspace.NUM_ARCHS), labx=plus_inf)
  with pytest.raises(tables.BenchmarkDataError, match="infinite values at index 5"):
    tables.load_benchmark(data_dir, proxy_dirs=[str(tmp_path)])
