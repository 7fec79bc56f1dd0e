r"""Search one device for an architecture within a latency budget, with K latency probes.

  python -m experiments.search --device=host --dataset=cifar10 --budget_ms=3 --probes=10 \
    --method=lsq --seed=0 --output=results/search/host.json
  python -m experiments.search --device=table:PATH.npz:NAME --budget_ms=5 --method=random ...

`--device=host` measures on this machine (`hwnas_jax.host.HostDevice`);
`--device=table:PATH.npz:NAME` reads device NAME of a latency file (`table:NAME`: the
bundle's `latency_ms.npz`). Proxies and test accuracies come from the bundle (`--data_dir`
or $HWNAS_DATA_DIR); the test accuracy of the answer is reported for information only.
Every probe goes through `devices.ProbeBudget`, which enforces K and decides validity.
Afterwards the answer is measured once more, outside the K probes, as a check of noise.
Writes the JSON record to --output and a plot beside it (same stem, .png).
"""

from __future__ import annotations

import os

from absl import flags
import numpy as np

from experiments import cli
from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import tables
from hwnas_jax.search import interface
from hwnas_jax.search import plots
from hwnas_jax.search import session
from hwnas_jax.benchmark import searchspace

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """Flags of the command; defined only when run as a program, so the module imports
  cleanly (tests define them on a FlagValues of their own)."""
  flags.DEFINE_string("device", "host", "host, table:PATH.npz:NAME or table:NAME.",
                      flag_values=fv)
  flags.DEFINE_enum("dataset", "cifar10", list(searchspace.DATASETS), "Dataset.", flag_values=fv)
  flags.DEFINE_float("budget_ms", None, "Latency budget in ms.", required=True, flag_values=fv)
  flags.DEFINE_integer("probes", 10, "Latency probes K.", flag_values=fv)
  flags.DEFINE_string("method", "lsq", "A method of hwnas_jax.search (search.make_method).",
                      flag_values=fv)
  flags.DEFINE_string("checkpoint", None, "Trained controller (controller methods).",
                      flag_values=fv)
  flags.DEFINE_string("proxy", aggregate.DEFAULT_PROXY,
                      "How proxies combine (paper: PROTOCOL.md's).", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the method.", flag_values=fv)
  flags.DEFINE_string("output", None, "JSON record; the plot goes beside it (.png).",
                      flag_values=fv)
  flags.DEFINE_string("data_dir", None, "Benchmark bundle (default: $HWNAS_DATA_DIR).",
                      flag_values=fv)
  flags.DEFINE_integer("host_batch_size", 1, "Host: images per forward pass.", flag_values=fv)
  flags.DEFINE_integer("host_image_size", None, "Host: image side (default: the dataset's).",
                       flag_values=fv)
  flags.DEFINE_integer("host_channels", 16, "Host: channels C of the network.", flag_values=fv)
  flags.DEFINE_integer("host_num_cells", 5, "Host: cells N per stage.", flag_values=fv)
  flags.DEFINE_integer("host_repeats", 20, "Host: timed forward passes per probe.",
                       flag_values=fv)
  flags.DEFINE_integer("host_warmup", 3, "Host: untimed passes before timing.", flag_values=fv)


def main(argv, fv: flags.FlagValues = FLAGS):
  del argv
  output = cli.checked_output(fv.output)
  if output:
    cli.checked_output(os.path.splitext(output)[0] + ".png", flag="--output's PNG")
  budget_ms = cli.number("--budget_ms", fv.budget_ms, inclusive=False)
  probes, seed = cli.whole("--probes", fv.probes), cli.whole("--seed", fv.seed, minimum=0)
  host_kwargs = cli.host_settings(fv, prefix="host_")
  dataset = fv.dataset
  benchmark = tables.load_benchmark(fv.data_dir)
  proxy = benchmark.proxy(dataset, cli.check_proxy(benchmark, fv.proxy, [dataset]))
  task = interface.Task(dataset, budget_ms, probes, proxy)
  method = session.resolve_method(fv.method, fv.checkpoint)
  device, table = session.make_device(fv.device, dataset, host_kwargs, fv.data_dir)
  if table is not None:
    session.check_table_budget(device.name, table, budget_ms)
  print(f"searching {device.name!r} ({fv.device}) for {dataset} within {budget_ms:.4g} ms, "
        f"method {fv.method}, K={task.num_probes}, seed {seed}")
  record = session.run_search(device, method, task, seed, benchmark.accuracy(dataset),
                              fv.method)
  record.update(device_spec=fv.device, checkpoint=fv.checkpoint)
  if table is not None:
    record["table"] = {"fastest_ms": float(np.nanmin(table)),
                       "budget_percentile": float(100 * np.mean(table <= budget_ms))}
  if hasattr(device, "settings"):
    record["host"] = device.settings()
    record["host_measurements"] = [m.to_dict() for m in device.records]
  print(session.format_record(record))
  if output:
    png = session.write_record(record, output)
    plots.plot_search(record, proxy, png, background=table)
    print(f"wrote {output} and {png}")
  if not any(p["within_budget"] for p in record["probes"]):
    raise session.SearchError(session.no_feasible_probe_message(record))


if __name__ == "__main__":
  cli.run(main, define_flags)
