"""One search on one device, as the `search` and `host_study` commands run it.

`run_search` wraps the device in a `ProbeBudget`, lets the method spend its K probes,
then measures the answer once more outside the K probes (a check of the noise), and
returns the whole record as plain data (JSON-ready), with each probe's spread where the
device records one.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from hwnas_jax.benchmark import searchspace
from hwnas_jax.benchmark import tables
from hwnas_jax.devices.table import TableDevice
from hwnas_jax.search import interface
from hwnas_jax.search import isolation
from hwnas_jax.search import registry


class SearchError(ValueError):
  """A readable reason the search could not give an answer (`cli.run` prints it, no traceback)."""


def resolve_method(name: str, checkpoint: str | None = None,
                   proxy: str | None = None) -> interface.Method:
  """A search method by name (a controller's first trained seed)."""
  try:
    methods = registry.make_methods(name, checkpoint=checkpoint, proxy=proxy)
  except (ValueError, FileNotFoundError) as error:
    raise SearchError(f"method {name!r} is not available: {error}") from error
  if methods is None:
    raise SearchError(f"{name!r} is a reference that reads the whole latency table, "
                      "not a search method")
  return methods[0]


def make_device(spec: str, dataset: str, host_kwargs: dict[str, Any] | None = None,
                data_dir: str | None = None, runtime_kwargs: dict[str, Any] | None = None):
  """The device named by --device, and its latency table (None for a live device).
  `runtime_kwargs` (threads, timeout_s, model_dir, statistic) go to the onnxruntime and command
  devices; the host reads `statistic` of them."""
  if spec == "host":
    from hwnas_jax.devices import host  # pylint: disable=import-outside-toplevel
    statistic = (runtime_kwargs or {}).get("statistic", "median")
    return host.HostDevice(dataset=dataset, statistic=statistic, **(host_kwargs or {})), None
  if spec == "onnxruntime" or spec.startswith("command:"):
    return make_runtime_device(spec, dataset, host_kwargs or {}, runtime_kwargs or {}), None
  if not spec.startswith("table:"):
    raise SearchError(f"--device={spec!r}: expected host, onnxruntime, command:'... {{model}} "
                      "...', table:PATH.npz:NAME or table:NAME")
  rest = spec[len("table:"):]
  path, _, name = rest.rpartition(":")
  if name.endswith(".npz"):
    raise SearchError(f"--device={spec!r}: name the device too, table:PATH.npz:NAME")
  if not path:
    path = os.path.join(tables.data_dir(data_dir), "latency_ms.npz")
  latency_tables = tables.load_latency_file(path)
  if name not in latency_tables:
    raise SearchError(f"no device {name!r} in {path}; it has {', '.join(latency_tables)}")
  return TableDevice(name, latency_tables[name]), latency_tables[name]


def make_runtime_device(spec: str, dataset: str, host_kwargs: dict[str, Any],
                        runtime_kwargs: dict[str, Any]):
  """An exported-model device: `onnxruntime`, or `command:TEMPLATE` with {model} in it."""
  from hwnas_jax.benchmark import onnx_export  # pylint: disable=import-outside-toplevel
  from hwnas_jax.devices import runtime  # pylint: disable=import-outside-toplevel
  network = onnx_export.NetworkSpec(
      dataset=dataset, **{k: host_kwargs[k] for k in ("batch_size", "image_size", "channels",
                                                      "num_cells") if k in host_kwargs})
  model_dir, statistic = runtime_kwargs.get("model_dir"), runtime_kwargs.get("statistic", "median")
  if spec == "onnxruntime":
    return runtime.OnnxRuntimeDevice(
        spec=network, threads=runtime_kwargs.get("threads", 1), model_dir=model_dir,
        statistic=statistic,
        **{k: host_kwargs[k] for k in ("repeats", "warmup") if k in host_kwargs})
  template = spec[len("command:"):]
  if runtime.MODEL_PLACEHOLDER not in template:
    raise SearchError(f"--device={spec!r}: the command needs {runtime.MODEL_PLACEHOLDER} where "
                      "the exported model's path goes")
  return runtime.CommandDevice(template, spec=network, model_dir=model_dir, statistic=statistic,
                               timeout_s=runtime_kwargs.get("timeout_s", 300.0))


TIMINGS = ("direct", "reference")


def live_device(device, store_path: str | None, run_fields: dict[str, Any],
                timing: str = "direct", reference: int | None = None):
  """A live device as a search uses it: every measurement into the store at `store_path`
  (the default file when None; "" for none) under a key of `run_fields` and the device's
  settings, so a rerun replays what was measured; with `timing="reference"`, each probe
  timed against a reference network (`devices.drift`)."""
  from hwnas_jax.devices import drift  # pylint: disable=import-outside-toplevel
  from hwnas_jax.devices import store  # pylint: disable=import-outside-toplevel
  if timing not in TIMINGS:
    raise SearchError(f"--timing={timing!r}: expected one of {', '.join(TIMINGS)}")
  if store_path != "":
    settings = device.settings() if hasattr(device, "settings") else {}
    run = store.run_key(**run_fields, timing=timing, reference=reference, settings=settings)
    device = store.StoredDevice(device, store.MeasurementStore(store_path), run)
  if timing == "reference":
    device = drift.ReferenceTimedDevice(
        device, drift.DEFAULT_REFERENCE if reference is None else reference)
  return device


def check_table_budget(name: str, latency_ms: np.ndarray, budget_ms: float) -> None:
  """Refuse, before spending any probe, a budget below every architecture of a table."""
  budget_ms = interface.checked_budget_ms(budget_ms)
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


def run_search(device, method: interface.Method, task: interface.Task, seed: int,
               accuracy: np.ndarray | None = None, method_name: str = "",
               isolated: bool = True, proxy_name: str | None = None) -> dict:
  """One search through `ProbeBudget`, then a re-measurement of the answer; the record.

  `isolated`: the method runs in a process of its own (`isolation.Runner`); False runs it
  in-process (trusted code only). Validity is judged against the harness's task, and on a
  table device against the answer's true latency too, as `protocol.run_episode` does.
  """
  budget_ms, num_probes = task.budget_ms, task.num_probes  # the harness's, whatever happens
  budgeted = interface.ProbeBudget(device, num_probes)
  host_records = getattr(device, "records", None)
  first_record = len(host_records) if host_records is not None else 0
  runner = isolation.Runner(isolated)
  runner.start({method_name or "method": [method]})  # its process ready before the clock
  start = time.perf_counter()
  answer = runner.run(method, task, budgeted, np.random.default_rng(seed), method_name or "method")
  search_s = time.perf_counter() - start
  if budgeted.exceeded:
    raise interface.ProbeLimitExceeded(
        f"the method asked for more than {num_probes} probes (and went on after being "
        "refused)")
  answer = interface.checked_answer(answer)
  valid = budgeted.is_valid(answer, budget_ms) and (
      not hasattr(device, "true_latency_ms") or device.true_latency_ms(answer) <= budget_ms)
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
      "proxy": proxy_name,  # the name of task.proxy (benchmark/aggregate.py's grammar)
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
