"""experiments.family_study: the held-out config, the rows per family and device, the plot.

The whole study meta-trains five controllers (minutes); here its pieces run on made-up
results, and `proxy_choice.pick` is checked to read only the families it is given.
"""

import numpy as np

from experiments import family_study
from experiments.configs import quick
from hwnas_jax.search import plots
from hwnas_jax.search import proxy_choice

METHODS = ["controller", "lsq", "oracle"]


def _result(family, devices, scores, probes=(10,)):
  """Made-up rows; at each further K every score is 1 lower."""
  rows = [dict(method=m, device=d, probes=num_probes,
               mean_accuracy=scores[m] + k - position, feasible_rate=1.0,
               oracle_accuracy=scores["oracle"] + k)
          for position, num_probes in enumerate(probes)
          for m in METHODS for k, d in enumerate(devices)]
  return dict(family=family, devices=devices, methods=METHODS, rows=rows)


def test_held_out_config_changes_only_the_family_and_proxy():
  config = quick.get_config()
  held = family_study.held_out_config(config, "phone", "rank:naswot")
  assert held.held_out_family == "phone" and held.proxy == "rank:naswot"
  assert config.held_out_family == "" and config.proxy != "rank:naswot"  # a copy
  assert {k: v for k, v in held.items() if k not in ("held_out_family", "proxy")} == {
      k: v for k, v in config.items() if k not in ("held_out_family", "proxy")}


def test_rows_per_family_and_device_and_the_plot():
  results = [_result("cpu", ["a", "b"], {"controller": 60.0, "lsq": 62.0, "oracle": 64.0}),
             _result("phone", ["c"], {"controller": 50.0, "lsq": 49.0, "oracle": 100.0})]
  rows = family_study.summary_rows(results)
  family = {(r["group"], r["method"]): r for r in rows}
  assert family[("cpu", "controller")]["mean_accuracy"] == 60.5  # the mean of devices a, b
  assert family[("b", "lsq")]["mean_accuracy"] == 63.0
  assert family[("phone", "controller")]["worst_cell_vs_oracle"] == 0.5
  table = family_study.format_table(rows, METHODS)
  assert table.splitlines()[1].split()[:2] == ["cpu", "(all)"] and "phone" in table
  fig = plots.family_bars(rows, METHODS)
  ax = fig.axes[0]
  assert [t.get_text() for t in ax.get_xticklabels()] == ["cpu", "phone"]
  assert "accuracy" in ax.get_ylabel() and ax.get_title()
  heights = sorted(round(p.get_height(), 2) for p in ax.patches)
  assert heights == sorted([60.5, 62.5, 64.5, 50.0, 49.0, 100.0])


def test_pick_reads_only_the_families_it_keeps():
  names = ["paper", "rank:naswot+skip"]
  by_family = {"cpu": np.array([60.0, 70.0]), "phone": np.array([60.0, -1.0])}
  assert proxy_choice.pick(names, by_family) == "paper"  # worse than paper on phones
  assert proxy_choice.pick(names, by_family, without="phone") == "rank:naswot+skip"


def test_every_k_has_its_rows_table_and_family_score():
  results = [_result("cpu", ["a", "b"], {"controller": 60.0, "lsq": 62.0, "oracle": 64.0},
                     probes=(3, 10)),
             _result("phone", ["c"], {"controller": 50.0, "lsq": 49.0, "oracle": 100.0},
                     probes=(3, 10))]
  rows = family_study.summary_rows(results)
  assert {r["probes"] for r in rows} == {3, 10}
  at = {(r["probes"], r["group"], r["method"]): r["mean_accuracy"] for r in rows}
  assert at[(3, "cpu", "controller")] == 60.5 and at[(10, "cpu", "controller")] == 59.5
  # families alike: cpu's two devices count as one family, as the phone's one device does
  assert family_study.family_score(rows) == {3: (60.5 + 50.0) / 2, 10: (59.5 + 49.0) / 2}
  blocks = family_study.format_table(rows, METHODS).split("\n\n")
  assert [b.splitlines()[0] for b in blocks] == ["K = 3", "K = 10"]
  assert blocks[1].splitlines()[2].split()[:3] == ["cpu", "(all)", "59.50"]
