r"""Choose the default accuracy proxy on the training devices, without peeking.

  python -m experiments.proxy_study --output=proxy_study.json --plot=proxy_study.png \
    [--proxy_dirs=FOLDER]

Every candidate combination of `aggregate` (`aggregate.CANDIDATES`: `paper`, each term
alone, rank and log-rank sums over every subset of 2 or more fresh-clone terms; with
`--proxy_dirs`, the lab's terms alone and in subsets with others) is scored by its
proxy-oracle accuracy: the test accuracy of the best-proxy architecture among those within
budget (`protocol.proxy_oracle`), on PROTOCOL.md's cells (cifar10, cifar100,
ImageNet16-120; budgets at the 10/25/50th latency percentile of each device). The choice
reads the 15 training devices only, per family (GPUs at batch 1, 32, 256; CPUs; phones;
`tables.DEVICE_FAMILIES`); the validation devices (eyeriss, fpga, gold_6226,
titan_rtx_256) are reported and never read by the rule. Leaving one family out shows how a
pick made on the other families does on it. Spearman correlations with test accuracy over
the space are printed for context; the rule does not read them.

The rule (`proxy_choice.RULE`), written down and committed on 2026-12-07 before the study
ran on the 19-device bundle; the version before it (0.2.0, 13 training devices, four
families) took the mean over the 117 training cells, where eleven GPUs outvote everything
else:
  "Candidates are the combinations computable on a fresh clone (the bundle's proxies and
  the architecture string). The default is the candidate with the highest family-balanced
  proxy-oracle accuracy on the training devices (the mean over the training families, GPUs
  at batch 1, 32 and 256, CPUs and phones, of each family's mean over its cells: 3 datasets
  x q in {10, 25, 50}) among those that are not worse than `paper` on any training family,
  ties broken by fewer terms. Lab proxies are studied and reported, and selectable by name,
  but cannot be the default, since the main job must run on a fresh clone."
In code: the candidates are `aggregate.CANDIDATES`, single terms included (a combination
of one term; the rule does not set them apart); a family's score is the mean over its
cells; "not worse" is >= paper's score (to 1e-9); a tie left after the number of terms
goes to the earlier candidate of the registry's order. It runs in seconds: argmax over
precomputed arrays.
"""

from __future__ import annotations

import json
from typing import Mapping, Sequence

from absl import flags
import numpy as np

from experiments import cli
from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import tables
from hwnas_jax.search import proxy_choice
from hwnas_jax.search.proxy_choice import RULE  # the rule lives in the library

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """Flags of the command; defined only when run as a program, so the module imports
  cleanly (tests define them on a FlagValues of their own)."""
  flags.DEFINE_string("data_dir", None, "Benchmark bundle folder (default: $HWNAS_DATA_DIR).",
                      flag_values=fv)
  flags.DEFINE_list("proxy_dirs", [], "Folders of a proxy lab's proxies_<dataset>.npz.",
                    flag_values=fv)
  flags.DEFINE_list("budgets", ["10", "25", "50"], "Budget percentiles q, each in (0, 100].",
                    flag_values=fv)
  flags.DEFINE_integer("max_lab_terms", 4, "Largest subset holding a lab term.", flag_values=fv)
  flags.DEFINE_integer("top", 15, "Candidates shown in the table, best first.", flag_values=fv)
  flags.DEFINE_string("output", None, "Where to write the study as JSON.", flag_values=fv)
  flags.DEFINE_string("plot", None, "Where to draw training vs validation accuracy (.png).",
                      flag_values=fv)


def spearman(a: np.ndarray, b_ranks: np.ndarray) -> float:
  """Rank correlation of `a` with a table whose ranks (`aggregate.ranks`) are `b_ranks`."""
  return float(np.corrcoef(aggregate.ranks(a), b_ranks)[0, 1])


def lab_terms(benchmark: tables.Benchmark) -> list[str]:
  """Terms beyond a fresh clone's that every dataset's proxy tables carry."""
  terms = [set(benchmark.proxy_terms(d)) - set(aggregate.FRESH_TERMS) for d in benchmark.datasets]
  return sorted(set.intersection(*terms)) if terms else []


def candidates(lab: Sequence[str], max_lab_terms: int) -> list[str]:
  """The registry's fresh-clone candidates, then each lab term alone and in subsets."""
  if not lab:
    return list(aggregate.CANDIDATES)
  return [*aggregate.CANDIDATES, *aggregate.candidate_names(lab, min_terms=1, max_terms=1,
                                                            hows=("rank",)),
          *aggregate.candidate_names([*aggregate.FRESH_TERMS, *lab], max_terms=max_lab_terms,
                                     must_use=lab)]


def study(benchmark: tables.Benchmark, names: Sequence[str],
          percentiles: Sequence[float] = (10, 25, 50)) -> dict:
  """Every number of the study, as plain Python for JSON; the pick by `proxy_choice.pick`."""
  datasets = list(benchmark.datasets)
  training = list(benchmark.training_devices)
  validation = [d for d in benchmark.devices if d not in training]
  devices = training + validation
  scores = {s: benchmark.named_proxies(s, names) for s in datasets}
  acc = proxy_choice.proxy_oracle_accuracy(benchmark, names, devices, datasets, percentiles,
                                           scores)
  ceiling = proxy_choice.oracle_accuracy(benchmark, devices, datasets, percentiles)[None]
  families = tables.family_members(training)
  by_family = proxy_choice.group_means(acc, devices, families)
  groups = {"training": training, "validation": validation,
            **{f"validation:{d}": [d] for d in validation}}
  means = proxy_choice.group_means(acc, devices, groups)
  ceilings = {k: float(v[0])
              for k, v in proxy_choice.group_means(ceiling, devices, {**families, **groups}).items()}
  fresh = proxy_choice.fresh_clone(names)
  balanced = proxy_choice.balanced(by_family)
  pick = proxy_choice.pick(names, by_family)

  held_out = []
  for family in families:
    pick_without = proxy_choice.pick(names, by_family, without=family)
    value = {n: float(by_family[family][names.index(n)])
             for n in (pick_without, pick, aggregate.PAPER)}
    held_out.append(dict(held_out=family, pick=pick_without, same_pick=pick_without == pick,
                         pick_on_held_out=value[pick_without], full_pick_on_held_out=value[pick],
                         paper_on_held_out=value[aggregate.PAPER],
                         oracle_on_held_out=ceilings[family]))

  accuracy_ranks = {s: aggregate.ranks(benchmark.accuracy(s)) for s in datasets}
  rows = {}
  for c, name in enumerate(names):
    how, terms = aggregate.parse(name, None)
    rows[name] = dict(
        how=how, terms=list(terms), fresh_clone=fresh[c],
        families={f: float(v[c]) for f, v in by_family.items()},
        balanced=float(balanced[c]), training=float(means["training"][c]), validation=float(means["validation"][c]),
        validation_devices={d: float(means[f"validation:{d}"][c]) for d in validation},
        training_datasets={s: float(acc[c, :len(training), k].mean())
                           for k, s in enumerate(datasets)},
        not_worse_than_paper=bool(all(v[c] >= v[names.index(aggregate.PAPER)] - 1e-9
                                      for v in by_family.values())),
        spearman={s: spearman(scores[s][c], accuracy_ranks[s]) for s in datasets},
        cells=acc[c].round(4).tolist())
  return dict(rule=RULE, pick=pick, families=families, validation_devices=validation,
              datasets=datasets, budget_percentiles=list(percentiles), oracle=ceilings,
              leave_one_family_out=held_out, candidates=rows,
              cells_layout="cells[device][dataset][budget], devices = training then validation: "
                           + ", ".join(devices))


# --- report -------------------------------------------------------------------------------

_SHORT = {"cifar10": "c10", "cifar100": "c100", "ImageNet16-120": "IN16"}


def _row(name: str, r: Mapping, marks: str = "") -> str:
  fam = "".join(f"{r['families'][f]:>9.2f}" for f in r["families"])
  rho = "".join(f"{v:>10.3f}" for v in r["spearman"].values())
  ok = "yes" if r["not_worse_than_paper"] else "-"
  return (f"{marks:<2}{name:<54}{len(r['terms']):>2}{fam}{r['balanced']:>9.2f}"
          f"{r['training']:>9.2f}{ok:>5}"
          f"{r['validation']:>9.2f}{rho}")


def format_report(result: Mapping, top: int = 15) -> str:
  rows, pick = result["candidates"], result["pick"]
  fams = list(result["families"])
  header = (f"{'':<2}{'candidate':<54}{'k':>2}" + "".join(f"{f:>9}" for f in fams)
            + f"{'balanced':>9}{'train':>9}{'ok':>5}{'valid':>9}" + "".join(
                f"{'rho ' + _SHORT.get(s, s[:4]):>10}" for s in result["datasets"]))
  line = "-" * len(header)
  fresh = [n for n in rows if rows[n]["fresh_clone"]]
  combos = sorted([n for n in fresh if n != aggregate.PAPER and len(rows[n]["terms"]) > 1],
                  key=lambda n: -rows[n]["balanced"])
  shown = list(dict.fromkeys([*combos[:top], pick]))
  singles = [n for n in fresh if len(rows[n]["terms"]) == 1]
  out = ["Proxy-oracle test accuracy (%), mean over cells: training families "
         + ", ".join(f"{f} ({', '.join(m)})" for f, m in result["families"].items()),
         "balanced = the mean over those families (what the rule reads); "
         f"train = {sum(map(len, result['families'].values()))} training devices x "
         f"{len(result['datasets'])} datasets x q in {result['budget_percentiles']}; "
         "ok = not worse than paper on any family; valid = validation devices "
         f"({', '.join(result['validation_devices'])}), reported only; rho = Spearman with "
         "test accuracy over the space (context only); * = the pick. "
         f"Best {top} of {len(combos)} combinations by balanced, then paper and single terms.",
         "", header, line]
  out += [_row(n, rows[n], "*" if n == pick else "") for n in shown]
  out += [line, *[_row(n, rows[n], "*" if n == pick else "")
                  for n in [aggregate.PAPER, *singles]]]
  oracle = result["oracle"]
  out += [f"{'':<2}{'oracle (best accuracy within budget)':<54}{'':>2}"
          + "".join(f"{oracle[f]:>9.2f}" for f in fams)
          + f"{float(np.mean([oracle[f] for f in fams])):>9.2f}{oracle['training']:>9.2f}{'':>5}{oracle['validation']:>9.2f}", "",
          f"rule: {result['rule']}", f"pick: {pick}", ""]
  out += ["Leave one family out (the rule on the other training families):",
          f"{'held out':<10}{'pick without it':<52}{'same':>5}{'pick':>8}{'full pick':>10}"
          f"{'paper':>8}{'oracle':>8}"]
  for r in result["leave_one_family_out"]:
    out.append(f"{r['held_out']:<10}{r['pick']:<52}{'yes' if r['same_pick'] else 'no':>5}"
               f"{r['pick_on_held_out']:>8.2f}{r['full_pick_on_held_out']:>10.2f}"
               f"{r['paper_on_held_out']:>8.2f}{r['oracle_on_held_out']:>8.2f}")
  valid = result["validation_devices"]
  picks = list(dict.fromkeys([aggregate.PAPER, pick,
                              *[r["pick"] for r in result["leave_one_family_out"]]]))
  out += ["", "Validation devices (reported, never used to choose):",
          f"{'candidate':<52}" + "".join(f"{d:>14}" for d in valid) + f"{'mean':>9}"]
  for name in picks:
    out.append(f"{name:<52}" + "".join(f"{rows[name]['validation_devices'][d]:>14.2f}"
                                       for d in valid) + f"{rows[name]['validation']:>9.2f}")
  out.append(f"{'oracle':<52}" + "".join(f"{oracle['validation:' + d]:>14.2f}" for d in valid)
             + f"{oracle['validation']:>9.2f}")
  lab = [n for n in rows if not rows[n]["fresh_clone"]]
  if lab:
    best_lab = sorted(lab, key=lambda n: -rows[n]["balanced"])[:top]
    singles = [n for n in lab if len(rows[n]["terms"]) == 1]
    out += ["", "Lab proxies (studied and reported; not eligible as the default):", header, line]
    out += [_row(n, rows[n]) for n in dict.fromkeys([*best_lab, *singles])]
  return "\n".join(out)


def plot(result: Mapping, path: str) -> None:
  """`study_figure` written to `path` (PNG)."""
  import matplotlib.pyplot as plt
  fig = study_figure(result)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def study_figure(result: Mapping):
  """Training vs validation proxy-oracle accuracy of every candidate, and y = x: a candidate
  below the line did worse on the validation cells than on the training cells."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = result["candidates"]
  fig, ax = plt.subplots(figsize=(7, 5))
  for fresh, color, label in ((True, "tab:blue", "fresh clone"), (False, "tab:orange", "lab")):
    names = [n for n in rows if rows[n]["fresh_clone"] == fresh]
    if names:
      ax.scatter([rows[n]["training"] for n in names], [rows[n]["validation"] for n in names],
                 s=10, alpha=0.6, color=color, label=label)
  for name, marker in ((aggregate.PAPER, "s"), (result["pick"], "*")):
    ax.scatter(rows[name]["training"], rows[name]["validation"], s=150, marker=marker,
               color="black", label=name)
  ax.set_xlabel("proxy-oracle accuracy, training cells (%)")
  ax.set_ylabel("proxy-oracle accuracy, validation cells (%)")
  ax.axline((0, 0), slope=1, color="0.5", lw=0.8, ls="--", label="y = x", zorder=0)
  ax.set_title("Proxy candidates: best-proxy architecture within budget, training vs "
               "validation cells", fontsize=10)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  return fig


def main(argv, fv: flags.FlagValues = FLAGS):
  del argv
  output = cli.checked_output(fv.output)
  plot_path = cli.checked_output(fv.plot, flag="--plot")
  percentiles = cli.numbers("--budgets", fv.budgets, 0.0, 100.0)
  max_lab_terms, top = cli.whole("--max_lab_terms", fv.max_lab_terms), cli.whole("--top", fv.top)
  benchmark = tables.load_benchmark(fv.data_dir, proxy_dirs=fv.proxy_dirs)
  lab = lab_terms(benchmark)
  names = candidates(lab, max_lab_terms)
  print(f"benchmark: {benchmark.source}; {len(names)} candidates"
        + (f"; lab terms: {', '.join(lab)}" if lab else ""))
  result = study(benchmark, names, percentiles)
  print(format_report(result, top))
  if output:
    with open(output, "w") as f:
      json.dump(result, f, indent=1)
    print(f"wrote {output}")
  if plot_path:
    plot(result, plot_path)
    print(f"wrote {plot_path}")


if __name__ == "__main__":
  cli.run(main, define_flags)
