r"""Evaluate search methods on the latency-budgeted task of PROTOCOL.md.

  python -m experiments.evaluate --latency_file=PATH.npz --devices=eyeriss,fpga \
    --datasets=cifar10,cifar100,ImageNet16-120 --budgets=10,25,50 --probes=10 \
    --episodes=25 --seed=0 --methods=random,rea,lsq,oracle,proxy_oracle --output=results.json

`--budget_ms=5,7,9` gives absolute budgets for every device instead of percentiles, and
`--budget_ms=eyeriss:5:7:9,fpga:4:5:6` per device.
"""

import glob
import json
import os

from absl import flags

from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import progress
from hwnas_jax.benchmark import searchspace
from hwnas_jax.benchmark import tables
from hwnas_jax.search import protocol
from hwnas_jax.search import registry
from hwnas_jax.search import resume
from experiments import cli

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """Flags of the command; defined only when run as a program, so the module imports
  cleanly (tests define them on a FlagValues of their own)."""
  flags.DEFINE_string("data_dir", None, "Benchmark bundle folder (default: $HWNAS_DATA_DIR).",
                      flag_values=fv)
  flags.DEFINE_string("latency_file", None, "Latency .npz (default: the bundle's).",
                      flag_values=fv)
  flags.DEFINE_list("proxy_files", [], "dataset:PATH.npz proxy tables replacing the bundle's.",
                    flag_values=fv)
  flags.DEFINE_list("proxy_dirs", [], "Folders of extra proxies_<dataset>.npz (score_proxies).",
                    flag_values=fv)
  flags.DEFINE_string("proxy", aggregate.DEFAULT_PROXY,
                      "How proxies combine (benchmark/aggregate.py); paper: PROTOCOL.md's "
                      "reference.", flag_values=fv)
  flags.DEFINE_list("devices", None, "Devices (keys of the latency file); default: all.",
                    flag_values=fv)
  flags.DEFINE_list("datasets", list(searchspace.DATASETS), "Datasets.", flag_values=fv)
  flags.DEFINE_list("budgets", ["10", "25", "50"], "Budget percentiles q, each in (0, 100].",
                    flag_values=fv)
  flags.DEFINE_list("budget_ms", [], "Absolute budgets in ms (overrides --budgets): 5,7,9 "
                    "for every device, or eyeriss:5:7:9,fpga:4:5:6 per device.", flag_values=fv)
  flags.DEFINE_integer("probes", 10, "Latency probes K per episode.", flag_values=fv)
  flags.DEFINE_integer("episodes", 25, "Episodes per cell.", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the episodes.", flag_values=fv)
  flags.DEFINE_float("noise", 0.0, "Probe noise sigma: a probe is table x exp(sigma x N(0, 1)) "
                     "(PROTOCOL.md, noisy devices); 0 = the exact table.", flag_values=fv)
  flags.DEFINE_string("noise_prior", None, "What every method is told of the probe noise: a "
                      "sigma (0.05), a range LOW:HIGH (0.02:0.1), or 'known' (the simulated "
                      "sigma of each cell). Default: nothing, the headline protocol.",
                      flag_values=fv)
  flags.DEFINE_list("methods", ["random", "rea", "lsq", "oracle", "proxy_oracle"],
                    "Methods and references to evaluate.", flag_values=fv)
  flags.DEFINE_string("checkpoint", None, "meta_train --workdir(s), comma-separated "
                      "(controller methods).", flag_values=fv)
  flags.DEFINE_string("output", None, "Where to write results.json.", flag_values=fv)
  flags.DEFINE_bool("isolate", True, "Run each method in a process of its own that reaches "
                    "the harness only through `measure`; --noisolate runs them in-process "
                    "(trusted code only).", flag_values=fv)


def parse_budgets(percentiles, absolute, devices):
  """A function (latency, device) -> list of Budget, from --budgets or --budget_ms, every
  entry checked here: numbers, in range, each device given its budgets once."""
  if not absolute:
    qs = cli.numbers("--budgets", percentiles, 0.0, 100.0)
    return lambda latency, device: [protocol.percentile_budget(latency, q) for q in qs]
  if not any(":" in item for item in absolute):
    common = [protocol.Budget(v) for v in cli.numbers("--budget_ms", absolute)]
    return lambda latency, device: common
  per_device = {}
  for item in absolute:
    device, sep, values = item.partition(":")
    if not sep:
      raise ValueError(f"--budget_ms mixes per-device entries (DEVICE:MS:MS...) with {item!r}; "
                       "give each device its own entry, or common budgets only")
    if device not in devices:
      raise ValueError(f"--budget_ms names device {device!r}, not among --devices "
                       f"{', '.join(devices)}")
    if device in per_device:
      raise ValueError(f"--budget_ms gives device {device!r} twice")
    per_device[device] = [protocol.Budget(v) for v in
                          cli.numbers(f"--budget_ms for {device!r}", values.split(":"))]
  missing = [d for d in devices if d not in per_device]
  if missing:
    raise ValueError(f"--budget_ms gives no budget for {', '.join(missing)}")
  return lambda latency, device: per_device[device]


def main(argv, fv: flags.FlagValues = FLAGS):
  del argv
  output = cli.checked_output(fv.output)
  bundle = fv.data_dir or os.environ.get(tables.DATA_DIR_ENV) or ""
  inputs = [fv.latency_file, *(item.partition(":")[2] for item in fv.proxy_files),
            *(glob.glob(os.path.join(bundle, "*.npz")) if bundle else ()),
            *(fv.checkpoint.split(",") if fv.checkpoint else ())]
  cli.check_not_an_input(output, inputs)
  probes, episodes = cli.whole("--probes", fv.probes), cli.whole("--episodes", fv.episodes)
  seed, noise = cli.whole("--seed", fv.seed, minimum=0), cli.number("--noise", fv.noise)
  protocol.check_settings(probes, episodes, seed, noise)
  noise_prior = protocol.task_noise_prior(fv.noise_prior, noise)
  names = cli.names("--methods", fv.methods, registry.NAMES)
  datasets = cli.names("--datasets", fv.datasets, searchspace.DATASETS)
  benchmark = tables.load_benchmark(fv.data_dir, fv.latency_file,
                                    cli.proxy_files(fv.proxy_files), fv.proxy_dirs)
  cli.check_proxy(benchmark, fv.proxy, datasets)
  devices = (list(benchmark.devices) if fv.devices is None
             else cli.names("--devices", fv.devices, benchmark.devices))
  benchmark = benchmark.select_devices(devices)
  budgets_of = parse_budgets(fv.budgets, fv.budget_ms, devices)
  budgets = lambda device: budgets_of(benchmark.latency(device), device)
  # Every cell's budget checked before a controller is loaded or a cell runs.
  protocol.grid_cells(benchmark, dict.fromkeys(names), devices, datasets, budgets, fv.proxy)
  cli.note_unused_checkpoint(fv.checkpoint, names)
  methods = {name: registry.make_methods(name, fv.checkpoint, fv.proxy) for name in names}
  print(f"benchmark: {benchmark.source}; latency file: "
        f"{fv.latency_file or 'bundle latency_ms.npz'}; devices: {', '.join(devices)}; "
        f"proxy {fv.proxy}; noise sigma {noise:g}; methods told of the noise: "
        f"{'nothing' if noise_prior is None else 'sigma %g to %g' % noise_prior}")
  cell_log = None
  if output:  # every finished cell kept as it finishes; a rerun resumes them
    settings = {name: fv[name].value for name in RESULT_FLAGS}
    settings.update(benchmark=benchmark.source, inputs=cli.file_stamps(inputs))
    cell_log = resume.CellLog(resume.partial_path(output), settings)
  results = protocol.evaluate(
      benchmark, methods, devices, datasets, budgets, probes, episodes, seed, noise=noise,
      proxy=fv.proxy, progress=lambda cells: progress.bar(cells, desc="cells", unit="cell"),
      isolated=fv.isolate, cell_log=cell_log, noise_prior=fv.noise_prior,
      episode_progress=lambda e: progress.bar(e, desc="episodes", unit="episode", leave=False,
                                              delay=EPISODE_BAR_DELAY_S))
  print(protocol.format_table(results["rows"], results["summary"]))
  if output:
    cli.write_atomic(output, json.dumps(results, indent=1))
    cell_log.remove()
    print(f"wrote {output}")


# The flags that decide a results file's numbers: a partial file of other values is not resumed.
RESULT_FLAGS = ("data_dir", "latency_file", "proxy_files", "proxy_dirs", "proxy", "devices",
                "datasets", "budgets", "budget_ms", "probes", "episodes", "seed", "noise",
                "noise_prior", "methods", "checkpoint")
EPISODE_BAR_DELAY_S = 60.0  # a cell shows its episodes once it has run this long


if __name__ == "__main__":
  cli.run(main, define_flags)
