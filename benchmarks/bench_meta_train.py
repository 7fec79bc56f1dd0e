r"""Meta-training throughput: probe-steps per second of one PPO update, beside a floor and,
optionally, beside another checkout of the code, interleaved.

  python -m benchmarks.bench_meta_train [--batch_sizes=256,1024] [--shards=1] [--seeds=1,4] \
      [--repeats=3] [--compare=/tmp/speed-base] [--rounds=2] [--floor] \
      [--config=experiments/configs/default.py] [--config.num_epochs=2] ...

Each (tree, shards, batch, seeds) runs in its own worker subprocess: the forced CPU device
count (`--xla_force_host_platform_device_count`) must be set before JAX starts, and the
peak resident memory (getrusage maxrss) is then that configuration's own. One shard is
the plain path of `train.py` (`jax.jit(vmap(update))` over seeds); more shards are
`sharding.make_sharded_update` over a mesh of that many devices (both through the tree's
own `train.make_update_fn`). A worker compiles the
update ahead of time (`jit(...).lower().compile()`: the compile time), calls it once, then
times `--repeats` calls: s/update is their median, CPU s/update the median process CPU
time (all threads) of the same calls. Probe-steps count every seed's episodes.

`--compare=PATH` runs every configuration also with `PYTHONPATH=PATH` (another checkout,
e.g. `git archive <commit> | tar -x -C PATH`), alternately with this tree, `--rounds`
times, so load from other processes hits both alike; the load average is printed before
and after each run, and the ratio of the two per round. Only the API both trees share is
used (`train.training_data`, `train.make_train`, `Trainer.init/update`, `sharding`).

`--floor` measures this machine (memory bandwidth from a large copy, exp/s and matmul
FLOP/s of XLA in cache) and prints, beside each measurement, the floor of the one-pass
candidate layout (`hwnas_jax.metatrain.candidates`): per probe-step, (1 + num_epochs)
passes over the padded candidates, one exp each (the rollout's and one per PPO epoch,
gradient included), plus the controller network's matmul FLOPs (a GRU over K slots per
observation, forward in the rollout, forward + backward per epoch).
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

if __name__ == "__main__" and any(a.startswith("--worker") for a in sys.argv):
  # A worker: force the CPU device count before JAX is imported (no effect on a GPU).
  _shards = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--worker_shards=")),
                 "1")
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_force_host_platform_device_count={_shards}")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(ROOT, "experiments/configs/default.py"),
    "Meta-training configuration (the controller's); num_devices, num_shards and "
    "num_seeds are set here.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["256", "1024"],
                                 "Synthetic-device episodes per update (per seed).")
_SHARDS = flags.DEFINE_list("shards", ["1"], "Shard counts (devices) to run.")
_SEEDS = flags.DEFINE_list("seeds", ["1"], "Seeds trained at once (vmapped update).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed updates after the first call.")
_COMPARE = flags.DEFINE_string("compare", None,
                               "Another checkout (its root) to run alternately with this one.")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Alternations per configuration with --compare.")
_FLOOR = flags.DEFINE_bool("floor", False, "Measure this machine and print the floor.")
_DATA_DIR = flags.DEFINE_string("data_dir", None,
                                "Benchmark bundle (default $HWNAS_DATA_DIR, else embedded prior).")
_TIMEOUT = flags.DEFINE_integer("timeout", 1800, "Seconds allowed to one configuration.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Also write every result to this file.")
_WORKER_SHARDS = flags.DEFINE_integer("worker_shards", None, "Internal: run one configuration.")
_WORKER_BATCH = flags.DEFINE_integer("worker_batch", None, "Internal: run one configuration.")
_WORKER_SEEDS = flags.DEFINE_integer("worker_seeds", 1, "Internal: run one configuration.")
_WORKER_FLOOR = flags.DEFINE_bool("worker_floor", False, "Internal: measure the machine.")


def peak_memory_mib() -> dict[str, float]:
  """Peak host RSS of this process and, where the backend reports it, device memory."""
  import jax  # pylint: disable=import-outside-toplevel
  peak = {"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
  stats = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    peak["device_mib"] = stats["peak_bytes_in_use"] / 2**20
  return peak


def build_update(config, data_dir, num_seeds: int):
  """(jitted update of `num_seeds` seeds, states, data, source), as train.py builds it
  (`train.make_update_fn`: the tree's own path for that many seeds and shards)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from hwnas_jax.metatrain import sharding, train  # pylint: disable=import-outside-toplevel

  config.num_seeds = num_seeds
  data, source = train.training_data(config, data_dir)
  sharded = int(config.num_shards) > 1
  trainer = train.make_train(config, sharding.AXIS if sharded else None)
  keys = jnp.stack([jax.random.key(config.seed + i) for i in range(num_seeds)])
  states = jax.jit(jax.vmap(trainer.init, in_axes=(0, None)))(keys, data)
  states = jax.tree.map(lambda x: jnp.asarray(x, x.dtype), states)
  update = train.make_update_fn(config, trainer)
  if sharded:
    replicated = jax.sharding.NamedSharding(update.mesh, jax.sharding.PartitionSpec())
    states, data = sharding.replicate((states, data), replicated)
    return update.jitted, states, data, source
  return update, states, data, source


def run_worker(config, data_dir, repeats: int, num_seeds: int) -> dict:
  """Compile, one untimed call, then `repeats` timed updates of this configuration."""
  import jax  # pylint: disable=import-outside-toplevel
  import hwnas_jax  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  jitted, states, data, source = build_update(config, data_dir, num_seeds)
  setup_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = jitted.lower(states, data).compile()  # one XLA executable for the whole update
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  states, metrics = jax.block_until_ready(compiled(states, data))
  first_s = time.perf_counter() - start
  seconds, cpu_seconds = [], []
  for _ in range(repeats):
    start, cpu = time.perf_counter(), time.process_time()
    states, metrics = jax.block_until_ready(compiled(states, data))
    seconds.append(time.perf_counter() - start)
    cpu_seconds.append(time.process_time() - cpu)
  per_update = statistics.median(seconds) if seconds else first_s
  probe_steps = config.num_devices * num_steps(config) * num_seeds
  return {"shards": int(config.num_shards), "num_devices": int(config.num_devices),
          "seeds": num_seeds, "probe_steps": probe_steps, "setup_s": setup_s,
          "compile_s": compile_s, "first_call_s": first_s, "s_per_update": per_update,
          "cpu_s_per_update": statistics.median(cpu_seconds) if cpu_seconds else None,
          "timed_calls": len(seconds), "probe_steps_per_s": probe_steps / per_update,
          "score": float(jax.numpy.mean(metrics["score"])), "backend": jax.default_backend(),
          "device": jax.devices()[0].device_kind, "local_devices": jax.local_device_count(),
          "package": os.path.dirname(os.path.dirname(os.path.abspath(hwnas_jax.__file__))),
          "data": "bundle" if source.startswith("bundle") else "embedded prior (no bundle)",
          **peak_memory_mib()}


def _best_of(fn, *args, repeats: int = 5) -> float:
  import jax  # pylint: disable=import-outside-toplevel
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return min(times)


def measure_machine() -> dict:
  """Memory bandwidth (a large copy), exp/s and matmul FLOP/s of XLA (in cache)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  big = jnp.ones(2**26, jnp.float32)  # 256 MiB
  add = jax.jit(lambda x: x + 1.0, donate_argnums=0)  # in place: read + write, no page faults
  state = {"x": big}

  def copy_once():
    state["x"] = add(state["x"])
    return state["x"]

  copy_s = _best_of(copy_once)
  read_s = _best_of(jax.jit(jnp.sum), state["x"])
  # exps in cache: a chunk of 16 rows of the candidate layout, 200 times.
  rows, width, iterations = 16, 16960, 200
  x = jax.random.normal(jax.random.key(0), (rows, width))

  def exps(x):
    return jax.lax.fori_loop(0, iterations, lambda i, acc: acc + jnp.sum(
        jnp.exp(x * (1.0 + i * 1e-4)), axis=1), jnp.zeros(rows))

  exp_s = _best_of(jax.jit(exps), x)
  # matmuls of the controller's shape: (rows, 64) @ (64, 192), in a loop.
  h = jax.random.normal(jax.random.key(1), (1280, 64))
  w = jax.random.normal(jax.random.key(2), (64, 192)) * 0.1

  def matmuls(h):
    return jax.lax.fori_loop(0, 50, lambda i, acc: acc + jnp.tanh(acc @ w)[:, :64], h)

  matmul_s = _best_of(jax.jit(matmuls), h)
  from hwnas_jax.metatrain import candidates  # pylint: disable=import-outside-toplevel
  return {"padded_candidates": candidates.nb201_layout().size,
          "bandwidth_gbs": 2 * big.nbytes / copy_s / 1e9,
          "read_gbs": big.nbytes / read_s / 1e9,
          "exp_per_s": rows * width * iterations / exp_s,
          "matmul_flops": 2 * 1280 * 64 * 192 * 50 / matmul_s,
          "backend": jax.default_backend()}


def num_steps(config) -> int:
  """Steps an episode plays: K, or the largest K of `num_probes_range` (written out here,
  as `config.num_slots` is, because a --compare tree may predate it)."""
  return max([int(config.num_probes),
              *(int(k) for k in tuple(config.get("num_probes_range", ()))[1:])])


def network_flops(config) -> tuple[float, float]:
  """(forward matmul FLOPs of the controller per observation, per probe-step of an update).

  The GRU (input 4, hidden H) over K slots, the summary (H + 4 -> H), the feature weights
  (H -> 7), the value head (H -> H -> 1); the backward is counted as twice the forward.
  """
  h, k = int(config.hidden_size), num_steps(config)
  forward = 2 * (k * (4 * 3 * h + h * 3 * h) + (h + 4) * h + h * 7 + h * h + h)
  return forward, forward * (1 + 3 * int(config.num_epochs))


def floor_estimate(config, machine: dict) -> dict:
  """Seconds per probe-step of the one-pass layout at this machine's rates, and parts."""
  padded = machine["padded_candidates"]  # candidates.nb201_layout().size
  passes = 1 + int(config.num_epochs)
  exp_s = passes * padded / machine["exp_per_s"]
  _, flops = network_flops(config)
  net_s = flops / machine["matmul_flops"]
  return {"floor_probe_steps_per_s": 1.0 / (exp_s + net_s),
          "floor_candidates_us": exp_s * 1e6, "floor_network_us": net_s * 1e6,
          "candidate_passes": passes, "padded_candidates": padded}


def _worker_command(shards: int, batch: int, seeds: int) -> list[str]:
  argv = [a for a in sys.argv[1:]
          if not a.startswith(("--batch_sizes", "--shards", "--seeds", "--compare", "--rounds",
                               "--floor", "--json_out", "--nofloor"))]
  argv = [f"--config={os.path.abspath(a.split('=', 1)[1])}" if a.startswith("--config=")
          else a for a in argv]
  if not any(a.startswith("--config=") for a in argv):
    argv.append(f"--config={os.path.join(ROOT, 'experiments/configs/default.py')}")
  # The file before its overrides (--config.x=...): absl reads a --config.x given first
  # against no config and refuses it.
  argv.sort(key=lambda a: not a.startswith("--config="))
  return [sys.executable, os.path.abspath(__file__), *argv, f"--worker_shards={shards}",
          f"--worker_batch={batch}", f"--worker_seeds={seeds}"]


def run_subprocess(command, tree: str) -> tuple[dict | None, str]:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [tree] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  try:
    run = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True,
                         timeout=_TIMEOUT.value)
  except subprocess.TimeoutExpired:
    return None, f"over {_TIMEOUT.value} s"
  for line in run.stdout.splitlines():
    if line.startswith(RESULT):
      return json.loads(line[len(RESULT):]), ""
  errors = [line for line in run.stderr.splitlines()
            if line.strip() and not re.match(r"[IW]\d{4} ", line)]  # not absl INFO/WARNING
  return None, f"exit {run.returncode}: {(errors or ['no error output'])[-1]}"


def run_configuration(tree: str, shards: int, batch: int, seeds: int) -> dict:
  """One worker subprocess on `tree`; its result with the load average around it."""
  load_before = os.getloadavg()
  result, error = run_subprocess(_worker_command(shards, batch, seeds), tree)
  load_after = os.getloadavg()
  result = result or {"shards": shards, "num_devices": batch, "seeds": seeds,
                      "skipped": error}
  result.update(tree=tree, load_before=load_before, load_after=load_after)
  return result


HEADER = (f"{'tree':>5} {'shards':>6} {'devices':>7} {'seeds':>5} {'steps':>7} {'compile s':>9} "
          f"{'s/update':>9} {'CPU s':>7} {'steps/s':>9} {'floor':>7} {'RSS MiB':>8} "
          f"{'load before -> after':>22}")


def format_row(r: dict, name: str, floor: dict | None = None) -> str:
  head = f"{name:>5} {r['shards']:>6} {r['num_devices']:>7} {r['seeds']:>5}"
  load = (f"{r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f}" if "load_before" in r
          else "")
  if "skipped" in r:
    return f"{head}  skipped: {r['skipped']}  (load {load})"
  device = f" device {r['device_mib']:.0f} MiB" if "device_mib" in r else ""
  cpu = f"{r['cpu_s_per_update']:>7.2f}" if r.get("cpu_s_per_update") is not None else " " * 7
  of_floor = (f"{r['probe_steps_per_s'] / floor['floor_probe_steps_per_s']:>6.0%} " if floor
              else " " * 8)
  return (f"{head} {r['probe_steps']:>7} {r['compile_s']:>9.1f} {r['s_per_update']:>9.2f} "
          f"{cpu} {r['probe_steps_per_s']:>9.0f} {of_floor}{r['rss_mib']:>8.0f} "
          f"{load:>22}{device}")


def main(argv):
  del argv
  config = _CONFIG.value
  if _WORKER_FLOOR.value:
    print(RESULT + json.dumps(measure_machine()), flush=True)
    return
  if _WORKER_SHARDS.value is not None:
    config.num_shards = _WORKER_SHARDS.value
    config.num_devices = _WORKER_BATCH.value
    try:
      result = run_worker(config, _DATA_DIR.value, _REPEATS.value, _WORKER_SEEDS.value)
    except ValueError as error:  # e.g. more shards than local accelerators
      result = {"shards": config.num_shards, "num_devices": config.num_devices,
                "seeds": _WORKER_SEEDS.value, "skipped": str(error)}
    print(RESULT + json.dumps(result), flush=True)
    return

  trees = [("new", ROOT)] + ([("base", os.path.abspath(_COMPARE.value))] if _COMPARE.value
                             else [])
  k_range = tuple(config.get("num_probes_range", ()))
  print(f"meta-training throughput: config {config.name}, "
        + (f"K drawn in {k_range[0]}..{k_range[1]} ({num_steps(config)} steps an episode), "
           if k_range else f"K={config.num_probes}, ")
        + f"{'whole-episode' if config.get('episode_minibatches', False) else 'single-step'} "
        f"minibatches, "
        f"hidden {config.hidden_size}, {config.num_epochs} epochs x {config.num_minibatches} "
        f"minibatches; s/update: " + (f"median of {_REPEATS.value} updates after the first"
                                        if _REPEATS.value else "the first call after compiling"))
  print(f"host: {os.cpu_count()} CPUs; trees: " + ", ".join(f"{n} = {t}" for n, t in trees))
  print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
  machine = floor = None
  if _FLOOR.value:
    machine, error = run_subprocess([sys.executable, os.path.abspath(__file__),
                                     "--worker_floor"], ROOT)
    if machine:
      forward, per_step = network_flops(config)
      floor = floor_estimate(config, machine)
      print(f"machine ({machine['backend']}): copy {machine['bandwidth_gbs']:.1f} GB/s "
            f"(read {machine['read_gbs']:.1f} GB/s), exp {machine['exp_per_s'] / 1e9:.2f} G/s "
            f"and matmul {machine['matmul_flops'] / 1e9:.1f} GFLOP/s in XLA (in cache)")
      print(f"floor of the one-pass layout: {floor['candidate_passes']} passes x "
            f"{floor['padded_candidates']:,} exps = {floor['floor_candidates_us']:.1f} us + "
            f"controller network {per_step / 1e6:.2f} MFLOP = {floor['floor_network_us']:.1f} us "
            f"per probe-step -> {floor['floor_probe_steps_per_s']:,.0f} probe-steps/s "
            f"(candidates alone: {1e6 / floor['floor_candidates_us']:,.0f}; network alone: "
            f"{1e6 / floor['floor_network_us']:,.0f})")
    else:
      print(f"machine measurement failed: {error}")
  print(HEADER)
  results, ratios = [], {}
  for shards in map(int, _SHARDS.value):
    for batch in map(int, _BATCH_SIZES.value):
      for seeds in map(int, _SEEDS.value):
        for round_ in range(_ROUNDS.value if _COMPARE.value else 1):
          pair = {}
          for name, tree in (trees if round_ % 2 == 0 else trees[::-1]):
            r = run_configuration(tree, shards, batch, seeds)
            r.update(name=name, round=round_)
            if floor and name == "new":
              r.update(floor)
            results.append(r)
            pair[name] = r
            if _JSON_OUT.value:  # after every run: a timeout keeps what was measured
              with open(_JSON_OUT.value, "w") as f:
                json.dump({"machine": machine, "floor": floor, "results": results}, f,
                          indent=1)
            print(format_row(r, name, floor if name == "new" else None), flush=True)
          if len(pair) == 2 and not any("skipped" in r for r in pair.values()):
            ratio = pair["new"]["probe_steps_per_s"] / pair["base"]["probe_steps_per_s"]
            ratios.setdefault((shards, batch, seeds), []).append(ratio)
            print(f"{'':>5} ratio new / base: {ratio:.2f}x", flush=True)
  for (shards, batch, seeds), values in ratios.items():
    print(f"shards {shards}, {batch} devices, {seeds} seed(s): new / base = "
          + ", ".join(f"{v:.2f}x" for v in values) + f" (median {statistics.median(values):.2f}x)")
  done = [r for r in results if "skipped" not in r]
  if done:
    print(f"backend {done[0]['backend']} ({done[0]['device']}), data: {done[0]['data']}; "
          f"uptime at end: "
          f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
  print("JSON " + json.dumps({"machine": machine, "results": results}))


if __name__ == "__main__":
  app.run(main)
