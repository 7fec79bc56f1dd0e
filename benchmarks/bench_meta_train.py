r"""Meta-training throughput: probe-steps per second of one PPO update, per batch and shard count.

  python -m benchmarks.bench_meta_train [--batch_sizes=64,256,1024,4096] [--shards=1,2,4] \
      [--repeats=3] [--config=experiments/configs/default.py] [--config.num_epochs=2] ...

Each (shards, batch) runs in its own subprocess: the forced CPU device count
(`--xla_force_host_platform_device_count`) must be set before JAX starts, and the peak
resident memory (getrusage maxrss) is then that configuration's own. One shard is the
plain path of `train.py` (`jax.jit(ppo.make_update)`); more shards are
`sharding.make_sharded_update` over a mesh of that many devices. On a GPU host the same
command runs unchanged; shard counts beyond the local accelerators are reported as skipped.
Seconds per update are the median of `--repeats` calls after the compiling one.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT = "RESULT "

if __name__ == "__main__" and "--worker_shards" in " ".join(sys.argv):
  # A worker: force the CPU device count before JAX is imported (no effect on a GPU).
  _shards = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--worker_shards="))
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_force_host_platform_device_count={_shards}")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(ROOT, "experiments/configs/default.py"),
    "Meta-training configuration (the controller's); num_devices and num_shards are set here.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["64", "256", "1024", "4096"],
                                 "Synthetic-device episodes per update.")
_SHARDS = flags.DEFINE_list("shards", ["1", "2", "4"], "Shard counts (devices) to run.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed updates after the compiling one.")
_DATA_DIR = flags.DEFINE_string("data_dir", None,
                                "Benchmark bundle (default $HWNAS_DATA_DIR, else embedded prior).")
_TIMEOUT = flags.DEFINE_integer("timeout", 1800, "Seconds allowed to one configuration.")
_WORKER_SHARDS = flags.DEFINE_integer("worker_shards", None, "Internal: run one configuration.")
_WORKER_BATCH = flags.DEFINE_integer("worker_batch", None, "Internal: run one configuration.")


def peak_memory_mib() -> dict[str, float]:
  """Peak host RSS of this process and, where the backend reports it, device memory."""
  import jax  # pylint: disable=import-outside-toplevel
  peak = {"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
  stats = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    peak["device_mib"] = stats["peak_bytes_in_use"] / 2**20
  return peak


def build_update(config, data_dir):
  """(jitted update of one seed, state, data, where the data came from), as train.py builds it."""
  import jax  # pylint: disable=import-outside-toplevel
  from hwnas_jax.metatrain import sharding, train  # pylint: disable=import-outside-toplevel

  data, source = train.training_data(config, data_dir)
  sharded = int(config.num_shards) > 1
  trainer = train.make_train(config, sharding.AXIS if sharded else None)
  state = jax.jit(trainer.init)(jax.random.key(config.seed))
  state = jax.tree.map(lambda x: jax.numpy.asarray(x, x.dtype), state)
  if sharded:
    update = sharding.make_sharded_update(trainer.update, config)
    replicated = jax.sharding.NamedSharding(update.mesh, jax.sharding.PartitionSpec())
    state, data = sharding.replicate((state, data), replicated)
    return update.jitted, state, data, source
  return jax.jit(trainer.update), state, data, source


def run_worker(config, data_dir, repeats: int) -> dict:
  """Compile, one untimed call, then `repeats` timed updates of this configuration."""
  import jax  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  jitted, state, data, source = build_update(config, data_dir)
  setup_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = jitted.lower(state, data).compile()  # one XLA executable for the whole update
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  state, metrics = jax.block_until_ready(compiled(state, data))
  first_s = time.perf_counter() - start
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(compiled(state, data))
    seconds.append(time.perf_counter() - start)
  per_update = statistics.median(seconds) if seconds else first_s
  probe_steps = config.num_devices * config.num_probes
  return {"shards": int(config.num_shards), "num_devices": int(config.num_devices),
          "probe_steps": probe_steps, "setup_s": setup_s, "compile_s": compile_s,
          "first_call_s": first_s, "s_per_update": per_update, "timed_calls": len(seconds),
          "probe_steps_per_s": probe_steps / per_update,
          "score": float(metrics["score"]), "backend": jax.default_backend(),
          "device": jax.devices()[0].device_kind, "local_devices": jax.local_device_count(),
          "data": "bundle" if source.startswith("bundle") else "embedded prior (no bundle)",
          **peak_memory_mib()}


def run_configuration(shards: int, batch: int) -> dict:
  """One worker subprocess; its RESULT line, or why it gave none."""
  argv = [a for a in sys.argv[1:] if not a.startswith(("--batch_sizes", "--shards"))]
  command = [sys.executable, "-m", "benchmarks.bench_meta_train", *argv,
             f"--worker_shards={shards}", f"--worker_batch={batch}"]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
  try:
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=_TIMEOUT.value)
  except subprocess.TimeoutExpired:
    return {"shards": shards, "num_devices": batch, "skipped": f"over {_TIMEOUT.value} s"}
  for line in run.stdout.splitlines():
    if line.startswith(RESULT):
      return json.loads(line[len(RESULT):])
  errors = [line for line in run.stderr.splitlines()
             if line.strip() and not re.match(r"[IW]\d{4} ", line)]  # not absl INFO/WARNING
  return {"shards": shards, "num_devices": batch,
          "skipped": f"exit {run.returncode}: {(errors or ['no error output'])[-1]}"}


def format_row(r: dict) -> str:
  head = f"{r['shards']:>6} {r['num_devices']:>7}"
  if "skipped" in r:
    return f"{head}  skipped: {r['skipped']}"
  device = f" {r['device_mib']:>9.0f}" if "device_mib" in r else ""
  return (f"{head} {r['probe_steps']:>8} {r['compile_s']:>9.1f} {r['s_per_update']:>9.2f} "
          f"{r['probe_steps_per_s']:>12.0f} {r['rss_mib']:>9.0f}{device}")


def main(argv):
  del argv
  config = _CONFIG.value
  if _WORKER_SHARDS.value is not None:
    config.num_shards = _WORKER_SHARDS.value
    config.num_devices = _WORKER_BATCH.value
    try:
      result = run_worker(config, _DATA_DIR.value, _REPEATS.value)
    except ValueError as error:  # e.g. more shards than local accelerators
      result = {"shards": config.num_shards, "num_devices": config.num_devices,
                "skipped": str(error)}
    print(RESULT + json.dumps(result), flush=True)
    return
  print(f"meta-training throughput: config {config.name}, K={config.num_probes}, "
        f"hidden {config.hidden_size}, {config.num_epochs} epochs x {config.num_minibatches} "
        f"minibatches; s/update: " + (f"median of {_REPEATS.value} updates after the first"
                                        if _REPEATS.value else "the first call after compiling"))
  print(f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
  print(f"{'shards':>6} {'devices':>7} {'steps':>8} {'compile s':>9} {'s/update':>9} "
        f"{'steps/s':>12} {'RSS MiB':>9}")
  results = []
  for shards in map(int, _SHARDS.value):
    for batch in map(int, _BATCH_SIZES.value):
      results.append(run_configuration(shards, batch))
      print(format_row(results[-1]), flush=True)
  done = [r for r in results if "skipped" not in r]
  if done:
    print(f"backend {done[0]['backend']} ({done[0]['device']}), data: {done[0]['data']}; "
          f"load average {os.getloadavg()[0]:.2f} at end")
  for r in done:
    if r["num_devices"] == 4096:
      print(f"one update over 4,096 synthetic devices ({r['probe_steps']:,} probe-steps, "
            f"{r['shards']} shard(s)) ran as one jitted call: one XLA executable, compiled in "
            f"{r['compile_s']:.1f} s, {r['s_per_update']:.2f} s per call")
  print("JSON " + json.dumps(results))


if __name__ == "__main__":
  app.run(main)
