r"""Search one device for an architecture within a latency budget, with K latency probes.

  python -m experiments.search --device=host --dataset=cifar10 --budget_ms=3 --probes=10 \
    --method=lsq --seed=0 --output=results/search/host.json
  python -m experiments.search --device=table:PATH.npz:NAME --budget_ms=5 --method=random ...

`--device=host` measures on this machine (`hwnas_jax.host.HostDevice`), `--device=onnxruntime`
through onnxruntime, `--device=command:'... {model} ...'` with any timing command (every live
probe goes into the `--store`, and a rerun reads back what it measured);
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
  flags.DEFINE_bool("isolate", True, "Run the method in a process of its own that reaches "
                    "the device only through `measure`; --noisolate runs it in-process "
                    "(trusted code only).", flag_values=fv)
  flags.DEFINE_integer("threads", 1, "onnxruntime: intra-op threads.", flag_values=fv)
  flags.DEFINE_string("noise_prior", None, "The device's probe noise when it is known (from "
                      "earlier searches: experiments.store --noise): a sigma (0.05) or a range "
                      "LOW:HIGH. Default: unknown.", flag_values=fv)
  flags.DEFINE_enum("statistic", "median", ["median", "min"], "A probe is the median or "
                    "the fastest of its timed runs (host, onnxruntime, command).", flag_values=fv)
  flags.DEFINE_float("command_timeout_s", 300.0, "command: seconds before a probe fails.",
                     flag_values=fv)
  flags.DEFINE_string("model_dir", None, "onnxruntime, command: folder of the exported models "
                      "(default: one in the temporary folder per network setting).",
                      flag_values=fv)
  flags.DEFINE_string("store", None, "Live devices: the SQLite measurement store (default: "
                      "$XDG_CACHE_HOME/hwnas-jax/measurements.sqlite; '' for none). A rerun "
                      "of the same search reads back the probes it already took.",
                      flag_values=fv)
  flags.DEFINE_enum("timing", "direct", ["direct", "reference"], "Live devices: direct, or "
                    "each probe against a reference network timed before and after it (holds "
                    "under slow load changes; two more measurements per probe).",
                    flag_values=fv)


def main(argv, fv: flags.FlagValues = FLAGS):
  del argv
  output = cli.checked_output(fv.output)
  if output:
    png = os.path.splitext(output)[0] + ".png"
    if os.path.abspath(png) == os.path.abspath(output):
      raise ValueError(f"--output {output!r} is the JSON record, and the plot goes beside it "
                       "with the same stem and .png: give a .json path")
    cli.checked_output(png, flag="--output's PNG")
  budget_ms = cli.number("--budget_ms", fv.budget_ms, inclusive=False)
  probes, seed = cli.whole("--probes", fv.probes), cli.whole("--seed", fv.seed, minimum=0)
  host_kwargs = cli.host_settings(fv, prefix="host_")
  dataset = fv.dataset
  benchmark = tables.load_benchmark(fv.data_dir)
  proxy = benchmark.proxy(dataset, cli.check_proxy(benchmark, fv.proxy, [dataset]))
  task = interface.Task(dataset, budget_ms, probes, proxy, noise_prior=fv.noise_prior)
  method = session.resolve_method(fv.method, fv.checkpoint)
  runtime_kwargs = {"statistic": fv.statistic, "threads": cli.whole("--threads", fv.threads),
                    "model_dir": fv.model_dir,
                    "timeout_s": cli.number("--command_timeout_s", fv.command_timeout_s,
                                            inclusive=False)}
  device, table = session.make_device(fv.device, dataset, host_kwargs, fv.data_dir,
                                      runtime_kwargs)
  if table is not None:
    session.check_table_budget(device.name, table, budget_ms)
  else:
    device = session.live_device(device, fv.store, dict(
        device=fv.device, dataset=dataset, budget_ms=budget_ms, probes=probes, seed=seed,
        method=fv.method, checkpoint=fv.checkpoint, proxy=fv.proxy), fv.timing)
  print(f"searching {device.name!r} ({fv.device}) for {dataset} within {budget_ms:.4g} ms, "
        f"method {fv.method}, K={task.num_probes}, seed {seed}")
  record = session.run_search(device, method, task, seed, benchmark.accuracy(dataset),
                              fv.method, proxy_name=fv.proxy, isolated=fv.isolate)
  record.update(device_spec=fv.device, checkpoint=fv.checkpoint)
  if table is not None:
    record["table"] = {"fastest_ms": float(np.nanmin(table)),
                       "budget_percentile": float(100 * np.mean(table <= budget_ms))}
  if hasattr(device, "settings"):
    record["host"] = device.settings()
    record["host_measurements"] = [m.to_dict() for m in device.records]
    record.update(live_device_notes(device, record))
  print(session.format_record(record))
  if output:
    png = session.write_record(record, output)
    plots.plot_search(record, proxy, png, background=table)
    print(f"wrote {output} and {png}")
  if not any(p["within_budget"] for p in record["probes"]):
    raise session.SearchError(session.no_feasible_probe_message(record))


def live_device_notes(device, record: dict) -> dict:
  """The interval of the answer's probe and check (reference timing), and how many probes
  were read back from the store."""
  notes = {}
  intervals = getattr(device, "intervals_ms", None)
  if intervals and record["answer"] is not None:
    probed = [i for i, m in enumerate(device.records) if m.index == record["answer"]["index"]
              and m.tag == "probe"]
    if probed:
      record["answer"]["interval_ms"] = list(intervals[probed[-1]])
    record["check"]["interval_ms"] = list(intervals[-1])
    record["check"]["raw_ms"] = device.raw_ms[-1]
    print(f"answer within [{intervals[-1][0]:.4g}, {intervals[-1][1]:.4g}] ms at the check "
          f"(reference-timed; the raw timing was {device.raw_ms[-1]:.4g} ms)")
  stored = device  # the store's wrapper, under the reference timing's if there is one
  while stored is not None and not hasattr(stored, "replayed"):
    stored = getattr(stored, "device", None)
  if stored is not None:
    notes["store"] = {"path": stored.store.path, "run_key": stored.run,
                      "replayed_measurements": stored.replayed}
    print(f"store {stored.store.path}: {stored.replayed} measurements read back, the rest "
          "measured now")
  return notes


if __name__ == "__main__":
  cli.run(main, define_flags)
