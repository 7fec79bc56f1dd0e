"""Tests of experiments.proxy_study and the rule it applies (search.proxy_choice), and the study on a few candidates.

The rule is checked on hand-made scores where the right pick is plain; the study runs on
three candidates only, and its `paper` row must reproduce PROTOCOL.md's proxy oracle.
"""

import numpy as np
import pytest

from experiments import proxy_study
from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import tables
from hwnas_jax.search import proxy_choice

N = 15625


@pytest.fixture(scope="module")
def bundle(data_dir):
  return tables.load_benchmark(data_dir)


def test_choose_follows_the_rule():
  names = ["paper", "rank:naswot+skip", "rank:naswot+logsynflow+skip", "rank:a+b", "rank:c+d"]
  fam = {"x": np.array([70.0, 71.0, 71.0, 80.0, 60.0]),
         "y": np.array([60.0, 60.0, 61.0, 70.0, 70.0])}
  overall = np.array([65.0, 66.0, 66.0, 75.0, 80.0])
  eligible = [True, True, True, False, True]
  # rank:a+b is best but not eligible (a lab combination); rank:c+d is worse than paper on
  # family x; of the two left, tied overall, the one with fewer terms wins.
  assert proxy_choice.choose(names, overall, fam, eligible) == "rank:naswot+skip"
  # Nothing better than paper: paper itself.
  worse = np.array([65.0, 64.0, 64.0, 0.0, 99.0])
  assert proxy_choice.choose(names, worse, fam, eligible) == "paper"
  # Worse on a family by a hair is worse; equal (to rounding) is not.
  fam["y"][1] = 60.0 - 1e-6
  assert proxy_choice.choose(names, overall, fam, eligible) == "rank:naswot+logsynflow+skip"
  fam["y"][1] = 60.0 - 1e-12
  assert proxy_choice.choose(names, overall, fam, eligible) == "rank:naswot+skip"


def test_candidates_with_lab_terms():
  assert proxy_study.candidates([], 4) == list(aggregate.CANDIDATES)
  names = proxy_study.candidates(["zico"], 3)
  extra = names[len(aggregate.CANDIDATES):]
  assert extra[0] == "rank:zico" and "logrank:naswot+live_params+zico" in extra
  assert all("zico" in n for n in extra) and len(set(names)) == len(names)
  assert max(len(aggregate.parse(n, None)[1]) for n in extra) == 3


def test_lab_terms_need_every_dataset(data_dir, tmp_path):
  for dataset in ("cifar10", "cifar100", "ImageNet16-120"):
    arrays = {"zico": np.arange(N, dtype=float)}
    if dataset == "cifar10":
      arrays["meco"] = np.arange(N, dtype=float)[::-1]
    np.savez(tmp_path / f"proxies_{dataset}.npz", index=np.arange(N), **arrays)
  loaded = tables.load_benchmark(data_dir, proxy_dirs=[tmp_path])
  assert proxy_study.lab_terms(loaded) == ["zico"]


def test_study_on_three_candidates_reproduces_the_protocol(bundle):
  names = ["paper", "rank:naswot+logsynflow", "rank:live_params"]
  result = proxy_study.study(bundle, names)
  paper = result["candidates"]["paper"]
  assert paper["validation"] == pytest.approx(66.37, abs=0.01)  # PROTOCOL.md's proxy oracle
  assert result["oracle"]["validation"] == pytest.approx(68.27, abs=0.01)
  assert result["pick"] in names and paper["not_worse_than_paper"]
  assert list(result["families"]) == ["gpu_b1", "gpu_b32", "gpu_b256", "cpu", "phone"]
  assert len(result["leave_one_family_out"]) == 5
  assert np.array(paper["cells"]).shape == (len(bundle.devices), 3, 3)
  for row in result["candidates"].values():  # a proxy oracle never beats the oracle
    assert all(row["families"][f] <= result["oracle"][f] + 1e-9 for f in result["families"])
  report = proxy_study.format_report(result, top=2)
  assert f"pick: {result['pick']}" in report and proxy_study.RULE in report


def test_default_proxy_is_the_studys_pick(bundle):
  # The whole study (a few seconds): if the candidates or terms change, so may the pick.
  result = proxy_study.study(bundle, list(aggregate.CANDIDATES))
  assert result["pick"] == aggregate.DEFAULT_PROXY
  assert result["candidates"]["paper"]["validation"] == pytest.approx(66.37, abs=0.01)


def test_rule_weighs_families_equally_and_can_leave_one_out():
  names = ["paper", "rank:naswot+skip", "rank:naswot+logsynflow"]
  # Four GPU devices would outvote one phone in a mean over cells; by family they tie in
  # weight: paper 60, the first 68, the second 66.5.
  by_family = {"gpu_b1": np.array([60.0, 70.0, 71.0]), "phone": np.array([60.0, 66.0, 62.0])}
  assert proxy_choice.pick(names, by_family) == "rank:naswot+skip"
  assert proxy_choice.pick(names, by_family, without="phone") == "rank:naswot+logsynflow"
  # Worse than paper on one family: out, whatever its balanced score.
  by_family["phone"][1] = 59.0
  assert proxy_choice.pick(names, by_family) == "rank:naswot+logsynflow"
