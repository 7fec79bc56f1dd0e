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
from hwnas_jax import bench
from hwnas_jax import search
from hwnas_jax import searchspace
from hwnas_jax.devices import ProbeBudget, TableDevice

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Flags of the command; defined only when run as a program, so the module imports cleanly."""
  flags.DEFINE_string("device", "host", "host, table:PATH.npz:NAME or table:NAME.")
  flags.DEFINE_enum("dataset", "cifar10", list(searchspace.DATASETS), "Dataset.")
  flags.DEFINE_float("budget_ms", None, "Latency budget in ms.", required=True)
  flags.DEFINE_integer("probes", 10, "Latency probes K.")
  flags.DEFINE_string("method", "lsq", "A method of hwnas_jax.search (search.make_method).")
  flags.DEFINE_string("checkpoint", None, "Trained controller (controller methods).")
  flags.DEFINE_integer("seed", 0, "Seed of the method.")
  flags.DEFINE_string("output", None, "JSON record; the plot goes beside it (.png).")
  flags.DEFINE_string("data_dir", None, "Benchmark bundle (default: $HWNAS_DATA_DIR).")
  flags.DEFINE_integer("host_batch_size", 1, "Host: images per forward pass.")
  flags.DEFINE_integer("host_image_size", None, "Host: image side (default: the dataset's).")
  flags.DEFINE_integer("host_channels", 16, "Host: channels C of the network.")
  flags.DEFINE_integer("host_num_cells", 5, "Host: cells N per stage.")
  flags.DEFINE_integer("host_repeats", 20, "Host: timed forward passes per probe.")
  flags.DEFINE_integer("host_warmup", 3, "Host: untimed passes before timing.")


class SearchError(ValueError):
  """A readable reason the search could not give an answer (`cli.run` prints it, no traceback)."""


def resolve_method(name: str, checkpoint: str | None = None) -> search.Method:
  """`search.make_method` when the registry has it, else `search.METHODS`."""
  make_method = getattr(search, "make_method", None)
  if make_method is not None:
    try:
      method = make_method(name, checkpoint=checkpoint)
    except (ValueError, KeyError, ImportError) as error:
      raise SearchError(f"method {name!r} is not available: {error}") from error
    if method is None:
      raise SearchError(f"{name!r} is a reference that reads the whole latency table, "
                        "not a search method")
    return method
  if name not in search.METHODS:
    raise SearchError(f"unknown method {name!r}; known: {', '.join(search.METHODS)}")
  return search.METHODS[name]


def make_device(spec: str, dataset: str, host_kwargs: dict[str, Any] | None = None,
                data_dir: str | None = None):
  """The device named by --device, and its latency table (None for the host)."""
  if spec == "host":
    from hwnas_jax import host  # pylint: disable=import-outside-toplevel
    return host.HostDevice(dataset=dataset, **(host_kwargs or {})), None
  if not spec.startswith("table:"):
    raise SearchError(f"--device={spec!r}: expected host, table:PATH.npz:NAME or table:NAME")
  rest = spec[len("table:"):]
  path, _, name = rest.rpartition(":")
  if name.endswith(".npz"):
    raise SearchError(f"--device={spec!r}: name the device too, table:PATH.npz:NAME")
  if not path:
    path = os.path.join(bench.data_dir(data_dir), "latency_ms.npz")
  tables = bench.load_latency_file(path)
  if name not in tables:
    raise SearchError(f"no device {name!r} in {path}; it has {', '.join(tables)}")
  return TableDevice(name, tables[name]), tables[name]


def check_table_budget(name: str, latency_ms: np.ndarray, budget_ms: float) -> None:
  """Refuse, before spending any probe, a budget below every architecture of a table."""
  fastest = int(np.nanargmin(latency_ms))
  if budget_ms < latency_ms[fastest]:
    raise SearchError(
        f"budget {budget_ms:.4g} ms is below every architecture on {name!r}: the fastest, "
        f"index {fastest} {searchspace.index_to_string(fastest)}, takes "
        f"{latency_ms[fastest]:.4g} ms")


def no_feasible_probe_message(record: dict) -> str:
  fastest = min(record["probes"], key=lambda p: p["latency_ms"])
  return (f"no probed architecture was within the budget of {record['budget_ms']:.4g} ms on "
          f"{record['device']!r} ({len(record['probes'])} probes): the fastest probe measured, "
          f"index {fastest['index']} {fastest['arch']}, took {fastest['latency_ms']:.4g} ms")


def run_search(device, method: search.Method, task: search.Task, seed: int,
               accuracy: np.ndarray | None = None, method_name: str = "") -> dict:
  """One search through `ProbeBudget`, then a re-measurement of the answer; the record."""
  budgeted = ProbeBudget(device, task.num_probes)
  host_records = getattr(device, "records", None)
  first_record = len(host_records) if host_records is not None else 0
  start = time.perf_counter()
  answer = method(task, budgeted, np.random.default_rng(seed))
  search_s = time.perf_counter() - start
  answer = None if answer is None else int(answer)
  valid = budgeted.is_valid(answer, task.budget_ms)
  details = host_records[first_record:] if host_records is not None else []
  probes = []
  for step, probe in enumerate(budgeted.probes):
    row = {"step": step + 1, "index": probe.index, "arch": searchspace.index_to_string(probe.index),
           "latency_ms": probe.latency_ms, "proxy": float(task.proxy[probe.index]),
           "within_budget": bool(probe.latency_ms <= task.budget_ms)}
    if step < len(details) and details[step].index == probe.index:
      d = details[step]
      row.update(iqr_ms=d.iqr_ms, std_ms=d.std_ms, compile_s=d.compile_s, build_s=d.build_s,
                 wall_s=d.wall_s)
    probes.append(row)
  record = {
      "device": device.name, "dataset": task.dataset, "method": method_name, "seed": seed,
      "budget_ms": task.budget_ms, "num_probes": task.num_probes, "probes": probes,
      "search_s": search_s, "time_per_probe_s": search_s / max(len(probes), 1),
      "answer": None, "valid": valid, "check": None,
  }
  if answer is not None:
    probed = [p["latency_ms"] for p in probes if p["index"] == answer]
    record["answer"] = {
        "index": answer, "arch": searchspace.index_to_string(answer),
        "latency_ms": probed[-1] if probed else None, "proxy": float(task.proxy[answer]),
        "test_accuracy": None if accuracy is None else float(accuracy[answer]),
        "test_accuracy_note": "from the benchmark, for information only; the search never saw it"}
    record["check"] = remeasure(device, answer, task.budget_ms)
  return record


def remeasure(device, index: int, budget_ms: float) -> dict:
  """The answer measured again, outside the K probes: how noisy was the probe?"""
  if hasattr(device, "records"):  # a live device: a real second measurement
    latency_ms = device.measure(index, tag="check")
    note = ("re-measured on the live device after the search, outside the K probes "
            "(same compiled executable, timed again)")
  else:
    latency_ms = device.measure(index)
    note = "re-read from the latency table after the search (a table has no noise)"
  return {"latency_ms": float(latency_ms), "within_budget": bool(latency_ms <= budget_ms),
          "note": note}


def pareto_front(latency_ms: np.ndarray, proxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Best proxy reachable with latency <= x, as the steps (x, best) of a staircase."""
  ok = np.isfinite(latency_ms)
  order = np.argsort(latency_ms[ok], kind="stable")
  lat, best = latency_ms[ok][order], np.maximum.accumulate(proxy[ok][order])
  steps = np.r_[True, best[1:] > best[:-1]]
  return lat[steps], best[steps]


def plot_search(record: dict, proxy: np.ndarray, path: str, background: np.ndarray | None = None,
                background_label: str = "all architectures (table)",
                extra_answers: list[dict] | None = None) -> None:
  """Proxy versus latency: the probes, the budget, the answer; the space behind if known."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, ax = plt.subplots(figsize=(7.5, 5))
  if background is not None:
    indices = np.flatnonzero(np.isfinite(background))
    sparse = indices.size < 2000  # a measured sample rather than a whole table
    ax.scatter(background[indices], proxy[indices], s=10 if sparse else 3,
               c="0.6" if sparse else "0.75", alpha=0.6 if sparse else 0.35, lw=0,
               label=background_label, rasterized=True)
    front_x, front_y = pareto_front(background[indices], proxy[indices])
    ax.step(front_x, front_y, where="post", c="0.35", lw=1, label="front (max proxy, latency <= x)")
  probes = record["probes"]
  if probes:
    x = np.array([p["latency_ms"] for p in probes])
    y = np.array([p["proxy"] for p in probes])
    inside = np.array([p["within_budget"] for p in probes])
    ax.scatter(x[inside], y[inside], s=36, c="tab:blue", label="probe, within budget", zorder=3)
    ax.scatter(x[~inside], y[~inside], s=36, c="tab:red", marker="x",
               label="probe, over budget", zorder=3)
    for p in probes:
      ax.annotate(str(p["step"]), (p["latency_ms"], p["proxy"]), textcoords="offset points",
                  xytext=(4, 3), fontsize=7)
  ax.axvline(record["budget_ms"], c="k", ls="--", lw=1,
             label=f"budget {record['budget_ms']:.3g} ms")
  answer = record["answer"]
  if answer is not None and answer["latency_ms"] is not None:
    status = "valid" if record["valid"] else "INVALID"
    ax.scatter([answer["latency_ms"]], [answer["proxy"]], s=260, marker="*", c="gold",
               edgecolors="k", zorder=4, label=f"answer #{answer['index']} ({status})")
    check = record.get("check")
    if check is not None and check["latency_ms"] != answer["latency_ms"]:
      ax.scatter([check["latency_ms"]], [answer["proxy"]], s=90, marker="*", facecolors="none",
                 edgecolors="k", zorder=4, label=f"answer re-measured {check['latency_ms']:.3g} ms")
      ax.plot([answer["latency_ms"], check["latency_ms"]], [answer["proxy"]] * 2, c="k", lw=0.8)
  for extra in extra_answers or []:
    ax.scatter([extra["latency_ms"]], [extra["proxy"]], s=70, marker=extra.get("marker", "D"),
               c=extra.get("color"), edgecolors="k", zorder=4, label=extra.get("label"))
  ax.set_xlabel(f"latency on {record['device']} (ms)")
  ax.set_ylabel(f"accuracy proxy ({record['dataset']}, naswot+logsynflow+skip)")
  ax.set_title(f"{record['method'] or 'search'} on {record['device']}, K={record['num_probes']}, "
               f"seed {record['seed']}")
  handles, labels = ax.get_legend_handles_labels()
  unique = dict(zip(labels, handles))
  ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)


def format_record(record: dict) -> str:
  """The probes, the answer and its check, as printed lines."""
  lines = [f"{'step':>4} {'index':>6} {'latency ms':>11} {'proxy':>7} {'budget':>7}  arch"]
  for p in record["probes"]:
    noise = f" (iqr {p['iqr_ms']:.3g})" if "iqr_ms" in p else ""
    lines.append(f"{p['step']:>4} {p['index']:>6} {p['latency_ms']:>11.4g} {p['proxy']:>7.4f} "
                 f"{'ok' if p['within_budget'] else 'over':>7}  {p['arch']}{noise}")
  answer, check = record["answer"], record["check"]
  if answer is None:
    lines.append("answer: none")
    return "\n".join(lines)
  accuracy = answer["test_accuracy"]
  lines.append(
      f"answer: index {answer['index']} {answer['arch']}, probed "
      f"{'never' if answer['latency_ms'] is None else format(answer['latency_ms'], '.4g')} ms, "
      f"budget {record['budget_ms']:.4g} ms, {'VALID' if record['valid'] else 'INVALID'}"
      + ("" if accuracy is None else f"; test accuracy {accuracy:.2f} % (information only)"))
  lines.append(f"check (outside the {record['num_probes']} probes): {check['latency_ms']:.4g} ms, "
               f"{'still within' if check['within_budget'] else 'NOW OVER'} budget; "
               f"{check['note']}")
  return "\n".join(lines)


def write_record(record: dict, output: str) -> str:
  """The JSON at `output`; returns the path of the PNG that goes beside it."""
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output, "w") as f:
    json.dump(record, f, indent=1)
  return os.path.splitext(output)[0] + ".png"


def main(argv):
  del argv
  benchmark = bench.load_benchmark(FLAGS.data_dir)
  dataset, budget_ms = FLAGS.dataset, FLAGS.budget_ms
  if FLAGS.probes < 1:
    raise SearchError(f"--probes must be >= 1, got {FLAGS.probes}")
  method = resolve_method(FLAGS.method, FLAGS.checkpoint)
  host_kwargs = {"batch_size": FLAGS.host_batch_size, "image_size": FLAGS.host_image_size,
                 "channels": FLAGS.host_channels, "num_cells": FLAGS.host_num_cells,
                 "repeats": FLAGS.host_repeats, "warmup": FLAGS.host_warmup}
  device, table = make_device(FLAGS.device, dataset, host_kwargs, FLAGS.data_dir)
  if table is not None:
    check_table_budget(device.name, table, budget_ms)
  proxy = benchmark.proxy(dataset)
  task = search.Task(dataset, budget_ms, FLAGS.probes, proxy)
  print(f"searching {device.name!r} ({FLAGS.device}) for {dataset} within {budget_ms:.4g} ms, "
        f"method {FLAGS.method}, K={task.num_probes}, seed {FLAGS.seed}")
  record = run_search(device, method, task, FLAGS.seed, benchmark.accuracy(dataset),
                      FLAGS.method)
  record.update(device_spec=FLAGS.device, checkpoint=FLAGS.checkpoint)
  if table is not None:
    record["table"] = {"fastest_ms": float(np.nanmin(table)),
                       "budget_percentile": float(100 * np.mean(table <= budget_ms))}
  if hasattr(device, "settings"):
    record["host"] = device.settings()
    record["host_measurements"] = [m.to_dict() for m in device.records]
  print(format_record(record))
  if FLAGS.output:
    png = write_record(record, FLAGS.output)
    plot_search(record, proxy, png, background=table)
    print(f"wrote {FLAGS.output} and {png}")
  if not any(p["within_budget"] for p in record["probes"]):
    raise SearchError(no_feasible_probe_message(record))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
