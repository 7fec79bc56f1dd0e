r"""The validation grid of PROTOCOL.md swept over the number of probes K or the probe noise.

  python -m experiments.sweep --sweep=probes --values=3,5,10,20 --checkpoint=runs/default \
    --methods=controller,lsq,random                      # results/probe_curve.json and .png
  python -m experiments.sweep --sweep=noise --values=0,0.02,0.05,0.1,0.2 --checkpoint=... \
    --methods=controller,lsq,random,oracle               # results/noise_curve.json and .png

Prints mean accuracy and feasible rate per method and value (mean +- std over seeds for a
multi-seed checkpoint), writes the table as JSON and a PNG beside it (same stem); without
--output the file is named by the sweep, so one sweep never overwrites the other's.
"""

import json
import os

from absl import flags
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from matplotlib import ticker  # pylint: disable=g-import-not-at-top

from experiments import cli
from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import checks
from hwnas_jax.benchmark import progress
from hwnas_jax.benchmark import tables
from hwnas_jax.benchmark import searchspace
from hwnas_jax.search import plots
from hwnas_jax.search import protocol
from hwnas_jax.search import registry

FLAGS = flags.FLAGS
# Without --output, each sweep writes its own files.
DEFAULT_OUTPUTS = {"probes": "results/probe_curve.json", "noise": "results/noise_curve.json"}


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
  flags.DEFINE_string("noise_prior", None, "What every method is told of the probe noise: a "
                      "sigma (0.05), a range LOW:HIGH (0.02:0.1), or 'known' (each value's "
                      "sigma when sweeping the noise). Default: nothing, the headline protocol.",
                      flag_values=fv)
  flags.DEFINE_list("methods", ["controller", "lsq", "random"], "Methods.", flag_values=fv)
  flags.DEFINE_integer("episodes", 25, "Episodes per cell.", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the episodes.", flag_values=fv)
  flags.DEFINE_string("proxy", aggregate.DEFAULT_PROXY,
                      "How proxies combine (paper: PROTOCOL.md's).", flag_values=fv)
  flags.DEFINE_list("devices", list(tables.VALIDATION_DEVICES),
                    "Devices (keys of the latency file); default: the validation devices.",
                    flag_values=fv)
  flags.DEFINE_list("datasets", list(searchspace.DATASETS), "Datasets.", flag_values=fv)
  flags.DEFINE_string("output", None, "JSON path; PNG beside it (default: "
                      + " or ".join(f"{path} for --sweep={kind}"
                                    for kind, path in DEFAULT_OUTPUTS.items()) + ").",
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
  width = max([22, *(len(name) + 2 for name in curve)])
  header = f"{'method':<{width}}" + "".join(f"{label + '=' + str(v):>24}" for v in values)
  lines = [header, "-" * len(header)]
  for name, by_value in curve.items():
    cells = []
    for s in by_value.values():
      std = s.get("mean_accuracy_seed_std")
      acc = f"{s['mean_accuracy']:.2f}" + (f"+-{std:.2f}" if std is not None else "")
      cells.append(f"{acc} ({s['feasible_rate']:.3f})")
    lines.append(f"{name:<{width}}" + "".join(f"{c:>24}" for c in cells))
  return "\n".join(lines)


def main(argv, fv: flags.FlagValues = FLAGS):
  del argv
  values = parse_values(fv.sweep, fv.values)
  output = cli.checked_output(DEFAULT_OUTPUTS[fv.sweep] if fv.output is None else fv.output)
  if not output:
    raise ValueError("--output is empty: the sweep writes its table there (JSON), a PNG beside")
  cli.checked_output(os.path.splitext(output)[0] + ".png", flag="--output's PNG")
  probes, noise = cli.whole("--probes", fv.probes), cli.number("--noise", fv.noise)
  episodes, seed = cli.whole("--episodes", fv.episodes), cli.whole("--seed", fv.seed, 0)
  for value in (values if fv.sweep == "noise" else [noise]):
    protocol.task_noise_prior(fv.noise_prior, value)  # refused before any cell runs
  names = cli.names("--methods", fv.methods, registry.NAMES)
  datasets = cli.names("--datasets", fv.datasets, searchspace.DATASETS)
  benchmark = tables.load_benchmark(fv.data_dir)
  devices = cli.names("--devices", fv.devices, benchmark.devices)
  benchmark = benchmark.select_devices(devices)
  cli.check_proxy(benchmark, fv.proxy, datasets)
  budgets = protocol.percentile_budgets(benchmark)
  protocol.grid_cells(benchmark, dict.fromkeys(names), devices, datasets, budgets, fv.proxy)
  cli.note_unused_checkpoint(fv.checkpoint, names)
  methods = {name: registry.make_methods(name, fv.checkpoint, fv.proxy) for name in names}
  curve = {name: {} for name in methods}
  label = "K" if fv.sweep == "probes" else "sigma"
  for value in progress.bar(values, desc=label):
    results = protocol.evaluate(
        benchmark, methods, devices, datasets, budgets,
        value if fv.sweep == "probes" else probes, episodes, seed,
        noise=value if fv.sweep == "noise" else noise, proxy=fv.proxy,
        noise_prior=fv.noise_prior)
    for name, summary in results["summary"].items():
      curve[name][value] = summary
  print(format_curve(curve, label))
  with open(output, "w") as f:
    json.dump({"sweep": fv.sweep, "devices": devices, "datasets": datasets,
               "episodes": episodes, "seed": seed, "probes": probes,
               "noise": noise, "noise_prior": fv.noise_prior, "proxy": fv.proxy,
               "curve": curve}, f, indent=1)
  fig = curve_figure(curve, fv.sweep, num_cells=len(devices) * len(datasets) * 3)
  png = os.path.splitext(output)[0] + ".png"
  fig.savefig(png, dpi=120)
  plt.close(fig)
  print(f"wrote {output} and {png}")


def curve_figure(curve: dict, sweep: str, num_cells: int):
  """Mean accuracy and feasible rate against K or sigma, a method in its colour of
  `plots.METHOD_COLORS`; x ticks at the swept K, or a few round sigmas."""
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
  values = list(next(iter(curve.values())))
  for name, by_value in curve.items():
    for ax, key in zip(axes, ("mean_accuracy", "feasible_rate")):
      ys = [s[key] for s in by_value.values()]
      errors = [s.get(f"{key}_seed_std", 0.0) for s in by_value.values()]
      ax.errorbar(list(by_value), ys, yerr=errors, marker="o", capsize=3, label=name,
                  color=plots.method_color(name))
  for ax, ylabel in zip(axes, (f"mean accuracy (%), {num_cells} cells", "feasible rate")):
    ax.set_xlabel("latency probes K" if sweep == "probes" else "probe noise sigma")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if sweep == "probes":
      ax.set_xscale("log", base=2)
      ax.minorticks_off()
      ax.set_xticks(values, [f"{v:g}" for v in values])
    else:  # sigma's values may crowd near 0: a few round ticks instead
      ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=4))
      ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
  axes[0].legend(fontsize=8)
  fig.suptitle("Validation devices: accuracy vs "
               + ("probe budget" if sweep == "probes" else "probe noise"))
  fig.tight_layout()
  return fig


if __name__ == "__main__":
  cli.run(main, define_flags)
