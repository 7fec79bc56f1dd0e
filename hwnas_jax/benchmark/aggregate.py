"""Accuracy proxies as a choice: named, equal-weight combinations of proxy terms.

A name is `paper` or `<how>:<term>+<term>...`, for example `rank:naswot+logsynflow` or
`logrank:naswot+logsynflow+live_params`. The hows:
  * `mean`: the mean of the min-max normalised terms (normalised over the space);
    `paper` is `mean:naswot+logsynflow+skip`, the paper's combination and the proxy of
    PROTOCOL.md's reference numbers.
  * `rank`: the sum of the terms' ranks over the space (1 = worst, N = best, ties
    averaged): each term counts by its order only, whatever its scale.
  * `logrank`: AZ-NAS's aggregation, the sum of log(rank / N): a bad rank on any term
    costs more than a good rank elsewhere earns, so it favours architectures that no
    term dislikes.
A term is a key of the dataset's proxy tables (the bundle's naswot, logsynflow and skip,
and whatever a lab file adds) or a structural term computed from the architecture
string (`STRUCTURAL_TERMS`). Nothing is fitted to accuracy: every term weighs the same.
Every named proxy is larger = better and lies in [0, 1] over the space, 0 at its worst
architecture, as the paper's does: rank and log-rank sums are min-max scaled (their order
unchanged), so any of them can stand where the paper's proxy stood (the episode's reward
takes 0 as "no valid answer yet" and divides by the best proxy within budget).
"""

from __future__ import annotations

import functools
import itertools
from typing import Iterable, Mapping, Sequence

import numpy as np

from hwnas_jax.benchmark import searchspace

HOWS = ("mean", "rank", "logrank")
BUNDLE_TERMS = ("naswot", "logsynflow", "skip")  # every bundle proxy file has them
# Computed from the architecture string: NATS-Bench's FLOPs and parameters of the whole
# network, and those of the cells' live convolutions only (`searchspace.dead_edges`).
STRUCTURAL_TERMS = ("flops", "params", "live_flops", "live_params")
FRESH_TERMS = BUNDLE_TERMS + STRUCTURAL_TERMS  # available on a fresh clone with the bundle
PAPER = "paper"
ALIASES = {PAPER: "mean:naswot+logsynflow+skip"}
# The project's default, chosen by experiments/proxy_study.py (run 2026-12-07 on the
# 19-device bundle) under `search.proxy_choice.RULE`, committed before it ran, on the 15
# training devices only: family-balanced proxy-oracle accuracy 67.69 % over GPUs at batch 1,
# 32, 256, CPUs and phones (paper 65.30), not worse than paper on any family; 67.78 % on the
# 36 validation cells, reported only (paper 66.37). BUILD_NOTES.md has the table. Version
# 0.2.0's default, `logrank:naswot+logsynflow+skip+flops+live_flops`, was chosen before the
# bundle had phones; on them it scores 63.96 against the pick's 67.84.
DEFAULT_PROXY = "logrank:naswot+skip+flops+live_flops"


def minmax(values: np.ndarray) -> np.ndarray:
  """`values` scaled to [0, 1] over the space (NaN stays NaN, -inf becomes 0; a constant
  becomes 0)."""
  values = np.asarray(values, np.float64)
  finite = values[np.isfinite(values)]
  values = np.where(np.isneginf(values), finite.min() if finite.size else 0.0, values)
  lo, hi = np.nanmin(values), np.nanmax(values)
  return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)


def ranks(values: np.ndarray) -> np.ndarray:
  """Ranks 1..N ascending (the largest value gets N), ties averaged; NaN gets NaN."""
  values = np.asarray(values, dtype=np.float64)
  result = np.full(values.shape, np.nan)
  finite = ~np.isnan(values)
  order = np.argsort(values[finite], kind="stable")
  _, first, counts = np.unique(values[finite][order], return_index=True, return_counts=True)
  sorted_ranks = np.repeat(first + (counts + 1) / 2.0, counts)  # mean of first+1 .. first+count
  ranked = np.empty(order.size)
  ranked[order] = sorted_ranks
  result[finite] = ranked
  return result


def _part(how: str, column: np.ndarray, ranked: np.ndarray | None = None) -> np.ndarray:
  """One term's share of a combination by `how`; `ranked`: its ranks, if already known."""
  if how == "mean":
    return minmax(column)
  if how not in ("rank", "logrank"):
    raise ValueError(f"unknown aggregation {how!r}; known: {', '.join(HOWS)}")
  ranked = ranks(column) if ranked is None else ranked
  return ranked if how == "rank" else np.log(ranked / column.size)


def combine(how: str, columns: Sequence[np.ndarray], ranked: Sequence | None = None) -> np.ndarray:
  """One score per architecture from the term columns, by `how` (see the module doc)."""
  columns = [np.asarray(c, dtype=np.float64) for c in columns]
  ranked = ranked or [None] * len(columns)
  parts = [_part(how, c, r) for c, r in zip(columns, ranked)]
  return np.mean(parts, axis=0) if how == "mean" else np.sum(parts, axis=0)


@functools.lru_cache(maxsize=None)
def structural_terms(dataset: str) -> dict[str, np.ndarray]:
  """The structural terms of a dataset's networks, larger = more capacity."""
  flops, params = searchspace.flops_params_table(dataset)
  live_flops, live_params = searchspace.live_flops_params_table(dataset)
  return dict(flops=flops, params=params, live_flops=live_flops, live_params=live_params)


def parse(name: str, terms: Iterable[str] | None = FRESH_TERMS) -> tuple[str, tuple[str, ...]]:
  """(how, terms) of a proxy name; ValueError naming the known hows and terms if bad.

  `terms`: the terms a name may use (besides the structural ones); None checks the
  grammar only (a name that may use a lab's terms).
  """
  known = None if terms is None else tuple(dict.fromkeys([*terms, *STRUCTURAL_TERMS]))
  grammar = (f"expected {' or '.join(ALIASES)} or '<how>:<term>+<term>...' with how in "
             f"{{{', '.join(HOWS)}}}" + ("" if known is None else
                                        f" and terms among {{{', '.join(known)}}}"))
  if not isinstance(name, str):
    raise ValueError(f"proxy name must be a string, got {name!r}; {grammar}")
  how, sep, rest = ALIASES.get(name, name).partition(":")
  parts = tuple(rest.split("+")) if rest else ()
  if not sep or how not in HOWS or not parts:
    raise ValueError(f"bad proxy name {name!r}: {grammar}")
  unknown = [t for t in parts if not t or known is not None and t not in known]
  if unknown:
    raise ValueError(f"bad proxy name {name!r}: unknown terms {unknown}; {grammar}")
  if len(set(parts)) < len(parts):
    raise ValueError(f"bad proxy name {name!r}: a term appears twice")
  return how, parts


def make_name(how: str, terms: Sequence[str]) -> str:
  name = f"{how}:{'+'.join(terms)}"
  return next((alias for alias, full in ALIASES.items() if full == name), name)


def term_tables(proxies: Mapping[str, np.ndarray], dataset: str) -> dict[str, np.ndarray]:
  """Every term of a dataset: its proxy tables and the structural terms."""
  clash = sorted(set(proxies) & set(STRUCTURAL_TERMS))
  if clash:
    raise ValueError(f"proxy tables of {dataset!r} carry {clash}, names of structural terms "
                     "(computed from the architecture): rename them")
  return {**proxies, **structural_terms(dataset)}


def proxy(name: str, proxies: Mapping[str, np.ndarray], dataset: str) -> np.ndarray:
  """The named combination for a dataset: (15625,) float64 in [0, 1], larger = better."""
  return proxies_of([name], proxies, dataset)[0]


def proxies_of(names: Sequence[str], proxies: Mapping[str, np.ndarray],
               dataset: str) -> list[np.ndarray]:
  """Several named combinations of a dataset (`proxy` of each), each term ranked once: a
  study of hundreds of candidates ranks the same dozen tables thousands of times otherwise."""
  available = term_tables(proxies, dataset)
  ranked = {}

  def ranks_of(term):
    if term not in ranked:
      ranked[term] = ranks(np.asarray(available[term], np.float64))
    return ranked[term]

  scores = []
  for name in names:
    how, terms = parse(name, available)
    score = combine(how, [available[t] for t in terms],
                    None if how == "mean" else [ranks_of(t) for t in terms])
    scores.append(score if how == "mean" else minmax(score))  # a mean of min-maxes is in [0, 1]
  return scores


def candidate_names(terms: Sequence[str] = FRESH_TERMS, hows: Sequence[str] = ("rank", "logrank"),
                    min_terms: int = 2, max_terms: int | None = None,
                    must_use: Sequence[str] = ()) -> list[str]:
  """`how:subset` for each how and each subset of `terms` of the given sizes, in order.

  `must_use`: keep only subsets holding at least one of these (e.g. a lab's terms).
  """
  sizes = range(min_terms, (max_terms or len(terms)) + 1)
  subsets = [s for k in sizes for s in itertools.combinations(terms, k)
             if not must_use or set(s) & set(must_use)]
  return [make_name(how, s) for how in hows for s in subsets]


# The candidates of the proxy study on a fresh clone: the paper's combination, each term
# alone (for reference), and rank and log-rank sums over every subset of 2 or more terms.
CANDIDATES = tuple([PAPER, *candidate_names(min_terms=1, max_terms=1, hows=("rank",)),
                    *candidate_names()])
