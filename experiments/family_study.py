r"""How the method does on a device family it has never seen, measured without peeking.

  python -m experiments.family_study --workdir=runs/family_study \
    [--config=experiments/configs/quick.py] [--families=phone,cpu] [--episodes=5]

For each training family F (GPUs at batch 1, 32, 256; CPUs; phones: `tables.FAMILIES`):
  1. the accuracy proxy is chosen by `proxy_choice.RULE` on the other families' training
     devices only;
  2. the synthetic-device prior is fitted on those devices only (`config.held_out_family`);
  3. the config (quick.py by default) is meta-trained into WORKDIR/F, resumably;
  4. every method is evaluated on F's training devices (PROTOCOL.md's cells: 3 datasets x
     q in {10, 25, 50}, K = config.num_probes): the controller, its untrained start, `lsq`,
     the proxy oracle and the oracle.
Nothing is chosen on F and no test accuracy enters steps 1-3. Each family's results are
written as they finish (WORKDIR/F/results.json) and reused by a rerun; the table per family
and per device and a plot end the run (WORKDIR/family_study.{json,png}).
"""

from __future__ import annotations

import copy
import json
import os

from absl import flags
from ml_collections import config_flags
import numpy as np

from experiments import cli
from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import progress
from hwnas_jax.benchmark import tables
from hwnas_jax.metatrain import train
from hwnas_jax.search import plots
from hwnas_jax.search import protocol
from hwnas_jax.search import proxy_choice
from hwnas_jax.search import registry

FLAGS = flags.FLAGS
METHODS = ("controller", "untrained_controller", "lsq", "proxy_oracle", "oracle")
PERCENTILES = (10.0, 25.0, 50.0)
TRAINING_FAMILIES = tuple(f for f in tables.FAMILIES if f != "other")


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """Flags of the command; defined only when run as a program, so the module imports
  cleanly (tests define them on a FlagValues of their own)."""
  config_flags.DEFINE_config_file("config", "experiments/configs/quick.py",
                                  "Meta-training configuration of every held-out run.",
                                  flag_values=fv)
  flags.DEFINE_string("workdir", "runs/family_study", "One meta-training run per family.",
                      flag_values=fv)
  flags.DEFINE_string("data_dir", None, "Benchmark bundle (default: $HWNAS_DATA_DIR).",
                      flag_values=fv)
  flags.DEFINE_list("families", list(TRAINING_FAMILIES), "Families to hold out, one at a time.",
                    flag_values=fv)
  flags.DEFINE_list("methods", list(METHODS), "Methods and references evaluated.",
                    flag_values=fv)
  flags.DEFINE_integer("episodes", 5, "Episodes per cell (exact devices: the controller and "
                       "lsq are deterministic, so a few suffice).", flag_values=fv)
  flags.DEFINE_bool("fresh", False, "Start every family's run afresh.", flag_values=fv)
  flags.DEFINE_bool("isolated", False, "Run each method in a process of its own (the harness "
                    "no method can read; slower). The study's methods are the project's own, "
                    "so by default they run in process.", flag_values=fv)


def held_out_config(config, family: str, proxy: str):
  """`config` with `family` left out of the prior and the proxy chosen without it."""
  config = copy.deepcopy(config)
  config.held_out_family = family
  config.proxy = proxy
  return config


def study_family(benchmark: tables.Benchmark, config, workdir: str, methods: list[str],
                 episodes: int, data_dir: str | None, fresh: bool, isolated: bool) -> dict:
  """One held-out family (`config.held_out_family`, its proxy chosen without it): fit and
  train without it, then evaluate on it."""
  family, proxy = config.held_out_family, config.proxy
  members = tables.family_members(benchmark.training_devices)
  path = os.path.join(workdir, "results.json")
  if not fresh and os.path.isfile(path):
    with open(path) as f:
      saved = json.load(f)
    if saved.get("config") == config.to_dict() and saved.get("methods") == methods:
      print(f"{family}: results of an earlier run reused ({path})")
      return saved
  print(f"{family}: held out ({', '.join(members[family])}); proxy chosen on the other "
        f"families: {proxy}")
  train.train_and_evaluate(config, workdir, data_dir, fresh=fresh)
  target = benchmark.select_devices(members[family])
  made = {name: registry.make_methods(name, workdir, proxy) for name in methods}
  results = protocol.evaluate(
      target, made, target.devices, target.datasets,
      protocol.percentile_budgets(target, PERCENTILES),
      int(config.num_probes), episodes, seed=0, proxy=proxy, isolated=isolated,
      progress=lambda cells: progress.bar(cells, desc=f"evaluate {family}", unit="cell"))
  result = dict(family=family, devices=members[family], proxy=proxy, methods=methods,
                config=config.to_dict(), **results)
  with open(path + ".tmp", "w") as f:
    json.dump(result, f, indent=1)
  os.replace(path + ".tmp", path)
  return result


def summary_rows(results: list[dict]) -> list[dict]:
  """One row per (family or device, method): mean accuracy and feasible rate over its cells."""
  rows = []
  for result in results:
    groups = {result["family"]: result["devices"], **{d: [d] for d in result["devices"]}}
    for group, devices in groups.items():
      for method in result["methods"]:
        cells = [r for r in result["rows"] if r["method"] == method and r["device"] in devices]
        rows.append(dict(family=result["family"], group=group, method=method,
                         mean_accuracy=float(np.mean([c["mean_accuracy"] for c in cells])),
                         feasible_rate=float(np.mean([c["feasible_rate"] for c in cells])),
                         worst_cell_vs_oracle=float(min(
                             c["mean_accuracy"] / c["oracle_accuracy"] for c in cells))))
  return rows


def format_table(rows: list[dict], methods: list[str]) -> str:
  groups = list(dict.fromkeys((r["family"], r["group"]) for r in rows))
  width = max(len(m) for m in methods) + 2
  lines = [f"{'held out':<10}{'device':<14}" + "".join(f"{m:>{width}}" for m in methods)]
  for family, group in groups:
    cells = {r["method"]: r for r in rows if r["group"] == group and r["family"] == family}
    label = "(all)" if group == family else group
    lines.append(f"{family:<10}{label:<14}" + "".join(
        f"{cells[m]['mean_accuracy']:>{width}.2f}" for m in methods))
  return "\n".join(lines)


def main(argv, fv: flags.FlagValues = FLAGS):
  del argv
  config = cli.checked_config(fv.config)
  families = cli.names("--families", fv.families, TRAINING_FAMILIES)
  methods = registry.check_names(fv.methods)
  episodes = cli.whole("--episodes", fv.episodes)
  benchmark = tables.load_benchmark(fv.data_dir)
  members = tables.family_members(benchmark.training_devices)
  missing = [f for f in families if f not in members]
  if missing:
    raise ValueError(f"the bundle has no training device of family {', '.join(missing)}; "
                     f"it has {', '.join(members)}")
  scores = proxy_choice.family_scores(benchmark, aggregate.CANDIDATES,
                                     benchmark.training_devices, PERCENTILES)
  configs = {f: held_out_config(config, f, proxy_choice.pick(aggregate.CANDIDATES, scores, f))
             for f in families}
  for family in families:  # every workdir checked before any work
    cli.checked_workdir(os.path.join(fv.workdir, family), configs[family], fv.fresh)
  results = [study_family(benchmark, configs[f], os.path.join(fv.workdir, f), methods,
                          episodes, fv.data_dir, fv.fresh, fv.isolated) for f in families]
  rows = summary_rows(results)
  print(format_table(rows, methods))
  path = os.path.join(fv.workdir, "family_study.json")
  with open(path, "w") as f:
    json.dump(dict(rows=rows, families=results), f, indent=1)
  figure = plots.family_bars(rows, methods)
  figure.savefig(os.path.join(fv.workdir, "family_study.png"), dpi=120)
  print(f"wrote {path} and family_study.png")


if __name__ == "__main__":
  cli.run(main, define_flags)
