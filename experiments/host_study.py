r"""The machine itself as the target device: search it with K probes, against a measured sample.

  python -m experiments.host_study --methods=controller,lsq,random --seeds=20 --probes=10

1. Measures `--num_archs` random architectures (seed `--sample_seed`) on this machine
   (`hwnas_jax.host.HostDevice`) as a ground-truth sample; saved to an .npz in `--out_dir`
   and reused by reruns with the same settings.
2. Sets the budget to the sample's median latency.
3. Runs each method of `--methods` (a controller without `--checkpoint` is skipped with a
   note; an unknown name or a broken `--checkpoint` is an error) for
   `--seeds` seeds, K probes each, each run on a fresh HostDevice (so every probe compiles).
4. Reports each answer's test accuracy (bundle, for information), its latency re-measured
   after the search, where that lies in the sample (percentile rank), and the time per probe;
   then measures every answer once more `--late_after_s` seconds after its search ended
   (`late_ms`: whether it still holds a minute later), between later runs or at the end.
`--device=onnxruntime` does all of it through onnxruntime (the exported model) instead of
XLA; `--timing=reference` times each probe of the runs against a reference network
(`hwnas_jax.devices.drift`); every probe of the runs goes into the `--store`.
Writes `host_study.json`, `host_study.png` (sample, budget, answers) and one PNG per run.
"""

from __future__ import annotations

import json
import os
import time

from absl import flags
import numpy as np

from experiments import cli
from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import progress
from hwnas_jax.benchmark import tables
from hwnas_jax.devices import host
from hwnas_jax.search import interface
from hwnas_jax.search import plots
from hwnas_jax.search import registry
from hwnas_jax.search import session
from hwnas_jax.benchmark import searchspace

FLAGS = flags.FLAGS
SAMPLE_FIELDS = ("latency_ms", "iqr_ms", "std_ms", "build_s", "compile_s", "wall_s")


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """Flags of the command; defined only when run as a program, so the module imports
  cleanly (tests define them on a FlagValues of their own)."""
  flags.DEFINE_enum("dataset", "cifar10", list(searchspace.DATASETS), "Dataset.", flag_values=fv)
  flags.DEFINE_integer("num_archs", 200, "Architectures in the ground-truth sample.",
                       flag_values=fv)
  flags.DEFINE_integer("sample_seed", 0, "Seed of the sampled architectures.", flag_values=fv)
  flags.DEFINE_list("methods", ["controller", "lsq", "random"], "Search methods.", flag_values=fv)
  flags.DEFINE_integer("seeds", 20, "Runs per method, seeds 0..seeds-1.", flag_values=fv)
  flags.DEFINE_integer("probes", 10, "Latency probes K per run.", flag_values=fv)
  flags.DEFINE_string("checkpoint", None, "Trained controller (controller methods).",
                      flag_values=fv)
  flags.DEFINE_string("proxy", aggregate.DEFAULT_PROXY,
                      "How proxies combine (paper: PROTOCOL.md's).", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "Benchmark bundle (default: $HWNAS_DATA_DIR).",
                      flag_values=fv)
  flags.DEFINE_string("out_dir", "results/host_study", "Where the sample, JSON and PNGs go.",
                      flag_values=fv)
  flags.DEFINE_integer("batch_size", 1, "Images per forward pass.", flag_values=fv)
  flags.DEFINE_integer("image_size", None, "Image side (default: the dataset's).",
                       flag_values=fv)
  flags.DEFINE_integer("channels", 16, "Channels C of the network.", flag_values=fv)
  flags.DEFINE_integer("num_cells", 5, "Cells N per stage.", flag_values=fv)
  flags.DEFINE_integer("repeats", 20, "Timed forward passes per measurement.", flag_values=fv)
  flags.DEFINE_integer("warmup", 3, "Untimed passes before timing.", flag_values=fv)
  flags.DEFINE_enum("device", "host", ["host", "onnxruntime"], "This machine through XLA "
                    "(host) or through onnxruntime (the exported model).", flag_values=fv)
  flags.DEFINE_integer("threads", 1, "onnxruntime: intra-op threads.", flag_values=fv)
  flags.DEFINE_enum("statistic", "median", ["median", "min"], "A probe is the median or "
                    "the fastest of its timed runs (host, onnxruntime, command).", flag_values=fv)
  flags.DEFINE_enum("timing", "direct", ["direct", "reference"], "Probes timed directly, or "
                    "against a reference network before and after each (devices.drift).",
                    flag_values=fv)
  flags.DEFINE_float("late_after_s", 60.0, "Each answer is measured once more at least "
                     "this long after its search ended (the late check).", flag_values=fv)
  flags.DEFINE_string("store", None, "The SQLite measurement store (default: the user's "
                      "cache folder; '' for none); a rerun reads back the probes it took.",
                      flag_values=fv)


def sample_indices(num_archs: int, seed: int) -> np.ndarray:
  return np.sort(np.random.default_rng(seed).choice(searchspace.NUM_ARCHS, num_archs,
                                                    replace=False))


def measure_sample(device: host.HostDevice, indices: np.ndarray, path: str) -> dict:
  """Latencies of `indices` on `device`, from `path` if it holds them for the same settings."""
  settings = json.dumps(device.settings(), sort_keys=True)
  if os.path.isfile(path):
    try:
      with np.load(path) as saved:
        if str(saved["settings"]) == settings and np.array_equal(saved["index"], indices):
          print(f"reusing the measured sample {path}")
          return {key: saved[key] for key in saved.files} | {"reused": True}
      print(f"note: {path} was measured with other settings or architectures: measuring "
            "again and replacing it")
    except Exception as error:  # pylint: disable=broad-except  # a damaged or foreign file
      print(f"note: cannot read the sample {path} ({error}): measuring again and replacing it")
  start = time.perf_counter()
  for index in progress.bar(indices, desc="host sample", unit="arch"):
    device.measure(int(index))
  total_s = time.perf_counter() - start
  sample = {"index": indices, "settings": np.array(settings), "total_s": np.array(total_s)}
  for field in SAMPLE_FIELDS:
    sample[field] = np.array([getattr(r, field) for r in device.records])
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, **sample)
  print(f"measured {len(indices)} architectures in {total_s:.0f} s; saved {path}")
  return sample | {"reused": False}


def available_methods(names, checkpoint):
  """{name: method} for `names`. A controller without --checkpoint is skipped with a note
  (the default --methods names one); anything else that cannot be made, a broken
  --checkpoint or a reference, is an error: skipping it would hide the mistake."""
  methods = {}
  for name in names:
    if name.removeprefix(registry.UNTRAINED) in registry.CONTROLLERS and not checkpoint:
      print(f"note: skipping {name}: it needs --checkpoint (a meta_train --workdir)")
      continue
    methods[name] = session.resolve_method(name, checkpoint)
  return methods


def percentile_rank(sample_ms: np.ndarray, latency_ms: float) -> float:
  """Share (%) of the sample at or below `latency_ms`."""
  return float(100 * np.mean(sample_ms <= latency_ms))


def study_row(record: dict, sample_ms: np.ndarray) -> dict:
  """One run's line of the table; an invalid answer scores 0 (PROTOCOL.md)."""
  answer, check = record["answer"], record["check"]
  probes = record["probes"]
  row = {"method": record["method"], "seed": record["seed"],
         "index": None if answer is None else answer["index"],
         "arch": None if answer is None else answer["arch"], "valid": record["valid"],
         "test_accuracy": None if answer is None else answer["test_accuracy"],
         "score": answer["test_accuracy"] if record["valid"] else 0.0,
         "probe_ms": None if answer is None else answer["latency_ms"],
         "check_ms": None if check is None else check["latency_ms"],
         "check_within_budget": bool(check and check["within_budget"]),
         "check_percentile": None if check is None else percentile_rank(sample_ms,
                                                                         check["latency_ms"]),
         "s_per_probe": record["time_per_probe_s"],
         "compile_s_per_probe": float(np.mean([p.get("compile_s", 0.0) for p in probes])),
         "median_iqr_ms": float(np.median([p.get("iqr_ms", np.nan) for p in probes]))}
  return row


def summarize(rows: list[dict]) -> dict:
  by_method: dict[str, list[dict]] = {}
  for row in rows:
    by_method.setdefault(row["method"], []).append(row)
  return {name: {"runs": len(r), "mean_score": float(np.mean([x["score"] for x in r])),
                 "feasible_rate": float(np.mean([x["valid"] for x in r])),
                 "check_feasible_rate": float(np.mean([x["check_within_budget"] for x in r])),
                 "mean_s_per_probe": float(np.mean([x["s_per_probe"] for x in r]))}
          for name, r in by_method.items()}


def _fmt(value, spec: str) -> str:
  return "-" if value is None else format(value, spec)


def format_table(rows: list[dict], summary: dict) -> str:
  header = (f"{'method':<11}{'seed':>5}{'index':>7}{'valid':>6}{'acc %':>7}{'probe ms':>10}"
            f"{'check ms':>10}{'in B':>6}{'pct':>6}{'s/probe':>9}{'iqr ms':>8}")
  lines = [header, "-" * len(header)]
  for r in rows:
    lines.append(f"{r['method']:<11}{r['seed']:>5}{_fmt(r['index'], 'd'):>7}"
                 f"{'yes' if r['valid'] else 'no':>6}{_fmt(r['test_accuracy'], '.2f'):>7}"
                 f"{_fmt(r['probe_ms'], '.3f'):>10}{_fmt(r['check_ms'], '.3f'):>10}"
                 f"{'yes' if r['check_within_budget'] else 'no':>6}"
                 f"{_fmt(r['check_percentile'], '.0f'):>6}{r['s_per_probe']:>9.2f}"
                 f"{r['median_iqr_ms']:>8.3f}")
  lines += ["", f"{'method':<11}{'runs':>5}{'score':>8}{'feasible':>10}{'check ok':>10}"
            f"{'s/probe':>9}", "-" * 53]
  for name, s in summary.items():
    lines.append(f"{name:<11}{s['runs']:>5}{s['mean_score']:>8.2f}{s['feasible_rate']:>10.2f}"
                 f"{s['check_feasible_rate']:>10.2f}{s['mean_s_per_probe']:>9.2f}")
  return "\n".join(lines)


def sample_references(sample: dict, budget_ms: float, accuracy: np.ndarray,
                      proxy: np.ndarray) -> dict:
  """Best test accuracy and best-proxy accuracy among the sampled architectures within budget."""
  index, latency_ms = sample["index"], sample["latency_ms"]
  within = index[latency_ms <= budget_ms]
  return {"sample_oracle_accuracy": float(accuracy[within].max()),
          "sample_proxy_oracle_accuracy": float(accuracy[within[np.argmax(proxy[within])]]),
          "within_budget": int(within.size)}


def main(argv, fv: flags.FlagValues = FLAGS):
  del argv
  out_dir = cli.checked_folder(fv.out_dir, "--out_dir")
  output = cli.checked_output(os.path.join(out_dir, "host_study.json"), flag="--out_dir's JSON")
  num_archs = cli.whole("--num_archs", fv.num_archs)
  if num_archs > searchspace.NUM_ARCHS:
    raise ValueError(f"--num_archs must be at most {searchspace.NUM_ARCHS} (the whole space), "
                     f"got {num_archs}")
  sample_seed = cli.whole("--sample_seed", fv.sample_seed, minimum=0)
  seeds, probes = cli.whole("--seeds", fv.seeds), cli.whole("--probes", fv.probes)
  late_after_s = float(fv.late_after_s)
  if not np.isfinite(late_after_s) or late_after_s < 0:
    raise ValueError(f"--late_after_s must be a number of seconds >= 0, got {fv.late_after_s}")
  host_kwargs = cli.host_settings(fv, prefix="")
  names = cli.names("--methods", fv.methods, registry.NAMES)
  benchmark = tables.load_benchmark(fv.data_dir)
  dataset = fv.dataset
  accuracy = benchmark.accuracy(dataset)
  proxy = benchmark.proxy(dataset, cli.check_proxy(benchmark, fv.proxy, [dataset]))
  methods = available_methods(names, fv.checkpoint)
  if not methods:
    raise ValueError(f"none of --methods ({', '.join(names)}) can run here; nothing to study")
  runtime_kwargs = {"statistic": fv.statistic, "threads": cli.whole("--threads", fv.threads)}

  def new_device():  # fresh: no executable or session carried between runs
    return session.make_device(fv.device, dataset, host_kwargs, runtime_kwargs=runtime_kwargs)[0]

  load_start = list(os.getloadavg())
  sampler = new_device()
  print("host:", json.dumps(sampler.settings()))
  indices = sample_indices(num_archs, sample_seed)
  sample_path = os.path.join(out_dir, f"{fv.device}_sample_{dataset}_n{num_archs}_"
                                            f"seed{sample_seed}.npz")
  sample = measure_sample(sampler, indices, sample_path)
  sample_ms = sample["latency_ms"]
  budget_ms = float(np.median(sample_ms))
  references = sample_references(sample, budget_ms, accuracy, proxy)
  print(f"sample: {len(indices)} architectures (seed {sample_seed}), latency "
        f"{sample_ms.min():.3f} .. {sample_ms.max():.3f} ms, median {budget_ms:.3f} ms = budget; "
        f"median IQR of the repeats {np.median(sample['iqr_ms']):.3f} ms; "
        f"{np.mean(sample['wall_s']):.2f} s per measurement "
        f"({np.mean(sample['compile_s']):.2f} s of it compiling)")
  background = np.full(searchspace.NUM_ARCHS, np.nan)
  background[indices] = sample_ms
  task = interface.Task(dataset, budget_ms, probes, proxy)
  records, rows, pending = [], [], []
  for name, method in methods.items():
    for seed in range(seeds):
      device = session.live_device(new_device(), fv.store, dict(
          study="host_study", device=fv.device, dataset=dataset, budget_ms=budget_ms,
          probes=probes, seed=seed, method=name, checkpoint=fv.checkpoint, proxy=fv.proxy),
          fv.timing)
      record = session.run_search(device, method, task, seed, accuracy, name,
                                  proxy_name=fv.proxy)
      record["host_measurements"] = [m.to_dict() for m in device.records]
      records.append(record)
      rows.append(study_row(record, sample_ms))
      pending.append((time.monotonic(), device, rows[-1]))
      for line in session.format_record(record).splitlines():
        if line.startswith(("answer", "check")):
          print(f"{name} seed {seed}: {line}")
      plots.plot_search(record, proxy, os.path.join(out_dir, f"{name}_seed{seed}.png"),
                             background=background,
                             background_label=f"{len(indices)} sampled architectures (host)")
      pending = run_late_checks(pending, late_after_s, budget_ms)
  run_late_checks(pending, late_after_s, budget_ms, wait=True)
  summary = summarize(rows)
  print(format_table(rows, summary))
  for name, s in summary.items():
    held = round(s["check_feasible_rate"] * s["runs"])
    late = sum(r["late_within_budget"] for r in rows if r["method"] == name)
    loads = [r["late_load"] for r in rows if r["method"] == name and "late_load" in r]
    load_range = f", load {min(loads):.1f}-{max(loads):.1f}" if loads else ""
    print(f"{name}: {held} of {s['runs']} answers hold on re-measurement, {late} when measured "
          f"again at least {late_after_s:.0f} s after their search ({fv.device}, {fv.timing} "
          f"timing{load_range})")
  load = {"load_average_start": load_start, "load_average_end": list(os.getloadavg())}
  print(f"load average (1/5/15 min) at start {load_start}, at end {load['load_average_end']}")
  print(f"within the budget, sample oracle {references['sample_oracle_accuracy']:.2f} %, "
        f"sample proxy oracle {references['sample_proxy_oracle_accuracy']:.2f} % "
        f"({references['within_budget']} sampled architectures within budget)")
  result = {"host": sampler.settings(), "device": fv.device, "timing": fv.timing,
            "sample_seed": sample_seed,
            "num_archs": num_archs, "sample_file": sample_path,
            "sample_total_s": float(sample["total_s"]), "sample_reused": sample["reused"],
            "sample_median_iqr_ms": float(np.median(sample["iqr_ms"])),
            "sample_mean_s_per_arch": float(np.mean(sample["wall_s"])),
            **load, "late_after_s": late_after_s, "budget_ms": budget_ms, "probes": probes,
            "seeds": list(range(seeds)),
            "percentile_note": "check_percentile = share (%) of the sample at or below the "
                               "re-measured latency of the answer",
            **references, "rows": rows, "summary": summary, "runs": records}
  with open(output, "w") as f:
    json.dump(result, f, indent=1)
  if records:
    plot_study(records, rows, proxy, background, budget_ms, os.path.join(out_dir,
                                                                       "host_study.png"))
  print(f"wrote {output} and the PNGs in {out_dir}")


def late_check(device, row: dict, budget_ms: float, age_s: float | None = None) -> dict:
  """The answer of a run measured once more (through the run's own device and timing) a
  while after its search, with the age and the load: a check after the load had time to
  change."""
  if row["index"] is None:
    return {"late_ms": None, "late_within_budget": False, "late_interval_ms": None,
            "late_age_s": age_s}
  latency_ms = float(device.measure(row["index"], tag="check"))
  intervals = getattr(device, "intervals_ms", None)
  return {"late_ms": latency_ms, "late_within_budget": bool(latency_ms <= budget_ms),
          "late_interval_ms": list(intervals[-1]) if intervals else None,
          "late_load": os.getloadavg()[0], "late_age_s": age_s}


def run_late_checks(pending: list, after_s: float, budget_ms: float, wait: bool = False,
                    clock=time.monotonic, sleep=time.sleep) -> list:
  """Late-checks every (ended_at, device, row) of `pending` at least `after_s` old, oldest
  first; with `wait`, sleeps until each is due. Returns those still pending."""
  still = []
  for ended_at, device, row in pending:
    age_s = clock() - ended_at
    if age_s < after_s and wait:
      sleep(after_s - age_s)
      age_s = clock() - ended_at
    if age_s >= after_s:
      row.update(late_check(device, row, budget_ms, age_s))
    else:
      still.append((ended_at, device, row))
  return still


def plot_study(records, rows, proxy, background, budget_ms, path):
  """The sample, the budget and every run's answer at its re-measured latency."""
  extras = [{"latency_ms": r["check_ms"], "proxy": float(proxy[r["index"]]),
             "color": plots.method_color(r["method"]),
             "label": f"{r['method']} answers (re-measured)",
             "marker": "o" if r["valid"] else "X"}
            for r in rows if r["index"] is not None]
  summary_record = {"probes": [], "answer": None, "budget_ms": budget_ms, "valid": False,
                    "device": records[0]["device"], "dataset": records[0]["dataset"],
                    "method": "answers of every run", "num_probes": records[0]["num_probes"],
                    "proxy": records[0].get("proxy"),
                    "seed": f"{rows[0]['seed']}..{rows[-1]['seed']}"}
  plots.plot_search(summary_record, proxy, path, background=background,
                         background_label="sampled architectures (host)", extra_answers=extras)


if __name__ == "__main__":
  cli.run(main, define_flags)
