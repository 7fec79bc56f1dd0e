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

import json
import os
import time
from typing import Any

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


def define_flags() -> None:
  """Flags of the command; defined only when run as a program, so the module imports cleanly."""
  flags.DEFINE_string("device", "host", "host, table:PATH.npz:NAME or table:NAME.")
  flags.DEFINE_enum("dataset", "cifar10", list(searchspace.DATASETS), "Dataset.")
  flags.DEFINE_float("budget_ms", None, "Latency budget in ms.", required=True)
  flags.DEFINE_integer("probes", 10, "Latency probes K.")
  flags.DEFINE_string("method", "lsq", "A method of hwnas_jax.search (search.make_method).")
  flags.DEFINE_string("checkpoint", None, "Trained controller (controller methods).")
  flags.DEFINE_string("proxy", aggregate.DEFAULT_PROXY, "How proxies combine (paper: PROTOCOL.md's).")
  flags.DEFINE_integer("seed", 0, "Seed of the method.")
  flags.DEFINE_string("output", None, "JSON record; the plot goes beside it (.png).")
  flags.DEFINE_string("data_dir", None, "Benchmark bundle (default: $HWNAS_DATA_DIR).")
  flags.DEFINE_integer("host_batch_size", 1, "Host: images per forward pass.")
  flags.DEFINE_integer("host_image_size", None, "Host: image side (default: the dataset's).")
  flags.DEFINE_integer("host_channels", 16, "Host: channels C of the network.")
  flags.DEFINE_integer("host_num_cells", 5, "Host: cells N per stage.")
  flags.DEFINE_integer("host_repeats", 20, "Host: timed forward passes per probe.")
  flags.DEFINE_integer("host_warmup", 3, "Host: untimed passes before timing.")


def main(argv):
  del argv
  benchmark = tables.load_benchmark(FLAGS.data_dir)
  dataset, budget_ms = FLAGS.dataset, FLAGS.budget_ms
  if FLAGS.probes < 1:
    raise session.SearchError(f"--probes must be >= 1, got {FLAGS.probes}")
  method = session.resolve_method(FLAGS.method, FLAGS.checkpoint)
  host_kwargs = {"batch_size": FLAGS.host_batch_size, "image_size": FLAGS.host_image_size,
                 "channels": FLAGS.host_channels, "num_cells": FLAGS.host_num_cells,
                 "repeats": FLAGS.host_repeats, "warmup": FLAGS.host_warmup}
  device, table = session.make_device(FLAGS.device, dataset, host_kwargs, FLAGS.data_dir)
  if table is not None:
    session.check_table_budget(device.name, table, budget_ms)
  proxy = benchmark.proxy(dataset, cli.check_proxy(benchmark, FLAGS.proxy, [dataset]))
  task = interface.Task(dataset, budget_ms, FLAGS.probes, proxy)
  print(f"searching {device.name!r} ({FLAGS.device}) for {dataset} within {budget_ms:.4g} ms, "
        f"method {FLAGS.method}, K={task.num_probes}, seed {FLAGS.seed}")
  record = session.run_search(device, method, task, FLAGS.seed, benchmark.accuracy(dataset),
                      FLAGS.method)
  record.update(device_spec=FLAGS.device, checkpoint=FLAGS.checkpoint)
  if table is not None:
    record["table"] = {"fastest_ms": float(np.nanmin(table)),
                       "budget_percentile": float(100 * np.mean(table <= budget_ms))}
  if hasattr(device, "settings"):
    record["host"] = device.settings()
    record["host_measurements"] = [m.to_dict() for m in device.records]
  print(session.format_record(record))
  if FLAGS.output:
    png = session.write_record(record, FLAGS.output)
    plots.plot_search(record, proxy, png, background=table)
    print(f"wrote {FLAGS.output} and {png}")
  if not any(p["within_budget"] for p in record["probes"]):
    raise session.SearchError(session.no_feasible_probe_message(record))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
