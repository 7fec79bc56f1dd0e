r"""The validation grid of PROTOCOL.md swept over the number of probes K or the probe noise.

  python -m experiments.sweep --sweep=probes --values=3,5,10,20 --checkpoint=runs/default \
    --methods=controller,lsq,random --output=results/probe_curve.json
  python -m experiments.sweep --sweep=noise --values=0,0.02,0.05,0.1,0.2 --checkpoint=... \
    --methods=controller,lsq,random,oracle --output=results/noise_curve.json

Prints mean accuracy and feasible rate per method and value (mean +- std over seeds for a
multi-seed checkpoint), writes the table as JSON and a PNG beside it (same stem).
"""

import json
import os

from absl import flags
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from tqdm import tqdm

from experiments import cli
from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import checks
from hwnas_jax.benchmark import tables
from hwnas_jax.search import protocol
from hwnas_jax.search import registry

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """Flags of the command; defined only when run as a program, so the module imports
  cleanly (tests define them on a FlagValues of their own)."""
  flags.DEFINE_enum("sweep", "probes", ["probes", "noise"],
                    "What varies: the probes K, or the probe noise sigma.", flag_values=fv)
  flags.DEFINE_list("values", ["3", "5", "10", "20"], "Values of K or of sigma.",
                    flag_values=fv)
  flags.DEFINE_integer("probes", 10, "K when sweeping the noise.", flag_values=fv)
  flags.DEFINE_float("noise", 0.0, "Sigma when sweeping K.", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "Benchmark bundle (default: $HWNAS_DATA_DIR).",
                      flag_values=fv)
  flags.DEFINE_string("checkpoint", None, "meta_train --workdir(s) of the controllers.",
                      flag_values=fv)
  flags.DEFINE_list("methods", ["controller", "lsq", "random"], "Methods.", flag_values=fv)
  flags.DEFINE_integer("episodes", 25, "Episodes per cell.", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the episodes.", flag_values=fv)
  flags.DEFINE_string("proxy", aggregate.DEFAULT_PROXY,
                      "How proxies combine (paper: PROTOCOL.md's).", flag_values=fv)
  flags.DEFINE_string("output", "results/probe_curve.json", "JSON path; PNG beside it.",
                      flag_values=fv)


def parse_values(sweep: str, values) -> list:
  """--values as K (whole numbers >= 1) or sigma (numbers in [0, 5)), each given once."""
  parse = int if sweep == "probes" else float
  if not values:
    raise ValueError(f"--values is empty; give values of {'K' if sweep == 'probes' else 'sigma'}")
  try:
    parsed = [parse(v) for v in values]
  except ValueError as error:
    raise ValueError(f"--values for --sweep={sweep} must be {parse.__name__}s: {error}") from None
  bad = [v for v in parsed if (v < 1 if sweep == "probes" else not 0 <= v < 5)]
  if bad or not parsed:
    allowed = "whole numbers >= 1" if sweep == "probes" else "numbers in [0, 5)"
    raise ValueError(f"--values {','.join(values)} for --sweep={sweep}: give one or more "
                     f"{allowed}")
  return checks.names("--values", parsed)


def format_curve(curve: dict, label: str) -> str:
  values = list(next(iter(curve.values())))
  header = f"{'method':<22}" + "".join(f"{label + '=' + str(v):>24}" for v in values)
  lines = [header, "-" * len(header)]
  for name, by_value in curve.items():
    cells = []
    for s in by_value.values():
      std = s.get("mean_accuracy_seed_std")
      acc = f"{s['mean_accuracy']:.2f}" + (f"+-{std:.2f}" if std is not None else "")
      cells.append(f"{acc} ({s['feasible_rate']:.3f})")
    lines.append(f"{name:<22}" + "".join(f"{c:>24}" for c in cells))
  return "\n".join(lines)


def main(argv, fv: flags.FlagValues = FLAGS):
  del argv
  values = parse_values(fv.sweep, fv.values)
  output = cli.checked_output(fv.output)
  if not output:
    raise ValueError("--output is empty: the sweep writes its table there (JSON), a PNG beside")
  cli.checked_output(os.path.splitext(output)[0] + ".png", flag="--output's PNG")
  probes, noise = cli.whole("--probes", fv.probes), cli.number("--noise", fv.noise)
  episodes, seed = cli.whole("--episodes", fv.episodes), cli.whole("--seed", fv.seed, 0)
  names = cli.names("--methods", fv.methods, registry.NAMES)
  benchmark = tables.load_benchmark(fv.data_dir).select_devices(tables.VALIDATION_DEVICES)
  cli.check_proxy(benchmark, fv.proxy, benchmark.datasets)
  budgets = lambda device: [protocol.percentile_budget(benchmark.latency(device), q)
                            for q in (10, 25, 50)]
  protocol.grid_cells(benchmark, dict.fromkeys(names), benchmark.devices, benchmark.datasets,
                      budgets, fv.proxy)
  cli.note_unused_checkpoint(fv.checkpoint, names)
  methods = {name: registry.make_methods(name, fv.checkpoint, fv.proxy) for name in names}
  curve = {name: {} for name in methods}
  label = "K" if fv.sweep == "probes" else "sigma"
  for value in tqdm(values, desc=label):
    results = protocol.evaluate(
        benchmark, methods, benchmark.devices, benchmark.datasets, budgets,
        value if fv.sweep == "probes" else probes, episodes, seed,
        noise=value if fv.sweep == "noise" else noise, proxy=fv.proxy)
    for name, summary in results["summary"].items():
      curve[name][value] = summary
  print(format_curve(curve, label))
  with open(output, "w") as f:
    json.dump({"sweep": fv.sweep, "devices": list(benchmark.devices),
               "episodes": episodes, "seed": seed, "probes": probes,
               "noise": noise, "proxy": fv.proxy, "curve": curve}, f, indent=1)
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
  for name, by_value in curve.items():
    xs = list(by_value)
    for ax, key in zip(axes, ("mean_accuracy", "feasible_rate")):
      ys = [s[key] for s in by_value.values()]
      errors = [s.get(f"{key}_seed_std", 0.0) for s in by_value.values()]
      ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=name)
  for ax, ylabel in zip(axes, ("mean accuracy (%), 36 cells", "feasible rate")):
    ax.set_xlabel("latency probes K" if label == "K" else "probe noise sigma")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if label == "K":
      ax.set_xscale("log", base=2)
      ax.set_xticks(values, [str(v) for v in values])
  axes[0].legend(fontsize=8)
  fig.suptitle(f"Validation devices: {'accuracy vs probe budget' if label == 'K' else 'accuracy vs probe noise'}")
  fig.tight_layout()
  png = os.path.splitext(output)[0] + ".png"
  fig.savefig(png, dpi=120)
  print(f"wrote {output} and {png}")


if __name__ == "__main__":
  cli.run(main, define_flags)
