r"""Architectures per second: the per-architecture path against the lab, and the floor.

  python -m benchmarks.bench_proxy_lab --num_archs=12 --rounds=4 --seed=0 [--data_dir=...]

Same work on every side, the bundle's: naswot (3 inits x 2 batches of 64 CIFAR-10 images)
and logsynflow (3 inits). Old: `proxies.score`, one architecture at a time (a compiled
(6,)-int network, `lax.switch` per edge, float64 log-synflow, weights drawn per
architecture), twice: compiled with main's `network.avg_pool_3x3` (`reduce_window`) and
float32 `relu_code_kernel` ("old, main"), and with this branch's faster two ("old, fast
ops"). New: `lab.score` on the same architectures, one call per round. Rounds alternate the
three, so load hits them alike; the load average is printed per round. All compile before
timing (the lab on a chunk of the rounds' size).

The floor: the dense convolution FLOPs the lab must do over the whole space (NASWOT's
forward passes and log-synflow's forward and backward, 2 FLOPs a multiply-add, only the
edges `lab.plan_archs` keeps), divided by this CPU's throughput on a plain big convolution
in XLA (3x3, 16 -> 16 channels, 128 CIFAR images: the lab's commonest convolution).
"""

from __future__ import annotations

import contextlib
import os
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hwnas_jax.benchmark import lab
from hwnas_jax.benchmark import network
from hwnas_jax.benchmark import proxies
from hwnas_jax.benchmark import searchspace
from hwnas_jax.benchmark import tables

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Benchmark bundle (default: $HWNAS_DATA_DIR).")
flags.DEFINE_integer("num_archs", 12, "Architectures timed on each side (drawn at random).")
flags.DEFINE_integer("rounds", 4, "Alternations old / new; num_archs is split among them.")
flags.DEFINE_integer("seed", 0, "Seed of the draw.")
flags.DEFINE_string("dataset", "cifar10", "Images and network of this dataset.")


def conv_macs(run: np.ndarray, dataset: str, channels: int = 16, num_cells: int = 5):
  """(A,) multiply-adds per image of the convolutions of architectures `run` (6 ops each)."""
  hw = searchspace.IMAGE_SIZE[dataset]
  base = searchspace.flops_params([], dataset)[0] * 1e6  # stem, reductions, classifier
  cells = 0.0
  for s in range(3):
    c, size = channels * 2**s, hw >> s
    per_edge = ((run == lab.CONV3) * 9 + (run == lab.CONV1)).sum(1) * c * c * size * size
    cells = cells + num_cells * per_edge
  return base + cells


def floor_flops(dataset: str, num_inits: int = 3, images: int = 128,
                distinct: bool = False) -> float:
  """Dense FLOPs of NASWOT (forward, `images` x inits) and log-synflow (forward and
  backward: about 3 forwards of one image x inits) over the whole space; with `distinct`,
  each distinct computation once (as `score_proxies` runs the space)."""
  plan = lab.plan_archs(searchspace.arch_ops())
  rows = {f: np.unique(lab.family_keys(f, plan), axis=0, return_index=True)[1] if distinct
          else slice(None) for f in ("naswot", "logsynflow")}
  naswot = conv_macs(plan["run_naswot"][rows["naswot"]], dataset) * images * num_inits
  synflow = conv_macs(plan["run_out"][rows["logsynflow"]], dataset) * 3 * num_inits
  return float(2 * (naswot.sum() + synflow.sum()))


def conv_throughput(repeats: int = 10) -> float:
  """FLOP/s of XLA:CPU on a 3x3 16 -> 16 convolution of 128 32x32 images (best of runs)."""
  x = jax.random.normal(jax.random.key(0), (128, 32, 32, 16))
  k = jax.random.normal(jax.random.key(1), (3, 3, 16, 16))
  fn = jax.jit(network.conv)
  fn(x, k).block_until_ready()
  best = np.inf
  for _ in range(repeats):
    start = time.perf_counter()
    fn(x, k).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * 128 * 32 * 32 * 16 * 16 * 9 / best


def load() -> str:
  return "/".join(f"{v:.1f}" for v in os.getloadavg())


def _main_avg_pool_3x3(x):
  """main's pooling (flax's reduce_window), for the old path as it was."""
  y = nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)
  return y.astype(x.dtype)


def _main_relu_code_kernel(x):
  """main's NASWOT kernel (float32 matmul), for the old path as it was."""
  s = jnp.where(x > 0, 1.0, -1.0).astype(jnp.float32).reshape(x.shape[0], -1)
  return 0.5 * (s @ s.T + s.shape[1])


@contextlib.contextmanager
def main_network_ops():
  saved = network.avg_pool_3x3, network.relu_code_kernel
  network.avg_pool_3x3, network.relu_code_kernel = _main_avg_pool_3x3, _main_relu_code_kernel
  try:
    yield
  finally:
    network.avg_pool_3x3, network.relu_code_kernel = saved


def old_scorer(net, batches, warm, ops, main_ops: bool):
  """`proxies.score` with its jitted parts compiled now (with main's ops or this branch's)."""
  proxies.jitted_scorers.cache_clear()
  with main_network_ops() if main_ops else contextlib.nullcontext():
    parts = proxies.jitted_scorers(net, tuple(batches.shape[2:]))
    with jax.enable_x64(True):  # compile all three now, while the ops are patched
      params = parts[0](jax.random.key(0))
      parts[1](params, jnp.asarray(batches[0]), jnp.asarray(ops[warm]))
      parts[2](params, jnp.asarray(ops[warm]))
  proxies.jitted_scorers.cache_clear()

  def score(index):
    original = proxies.jitted_scorers
    proxies.jitted_scorers = lambda *args: parts
    try:
      return proxies.score(net, ops[index], batches, index=int(index))
    finally:
      proxies.jitted_scorers = original
  return score


def main(argv):
  del argv
  directory = tables.data_dir(FLAGS.data_dir)
  with np.load(os.path.join(directory, f"images_{FLAGS.dataset}.npz")) as data:
    images = data["images"]
  batches = proxies.prepare_images(images)
  net = network.network_for(FLAGS.dataset)
  ops = searchspace.arch_ops()
  rng = np.random.default_rng(FLAGS.seed)
  drawn = rng.choice(searchspace.NUM_ARCHS, 2 * FLAGS.num_archs, replace=False)
  parts = np.array_split(drawn[:FLAGS.num_archs], FLAGS.rounds)
  warm_set = drawn[FLAGS.num_archs:]  # distinct architectures, not timed
  warm = int(warm_set[0])
  setup = lab.Setup(net, lab.DEFAULT_PROXIES, proxies.NUM_INITS, tuple(batches.shape[2:]))
  start = time.perf_counter()
  shared = lab.prepare(setup, batches, images)
  for size in sorted({len(p) for p in parts}):  # the chunk shapes the rounds use
    lab.score(setup, shared, ops[warm_set[:size]])
  compiled = {"new": time.perf_counter() - start}
  scorers = {}
  for name, main_ops in (("old, main", True), ("old, fast ops", False)):
    start = time.perf_counter()
    scorers[name] = old_scorer(net, batches, warm, ops, main_ops)
    compiled[name] = time.perf_counter() - start
  print("compile: " + ", ".join(f"{k} {v:.1f} s" for k, v in compiled.items())
        + f"; load {load()}")

  times = dict.fromkeys(list(scorers) + ["new"], 0.0)
  for r, part in enumerate(parts):
    line = []
    for name, fn in scorers.items():
      start = time.perf_counter()
      for i in part:
        fn(i)
      times[name] += time.perf_counter() - start
    start = time.perf_counter()
    lab.score(setup, shared, ops[part])
    times["new"] += time.perf_counter() - start
    print(f"round {r}: {len(part)} archs; cumulative s/arch "
          + ", ".join(f"{k} {v / sum(len(p) for p in parts[:r + 1]):.2f}"
                      for k, v in times.items()) + f"; load {load()}", flush=True)
  n = sum(len(p) for p in parts)
  rates = {k: n / v for k, v in times.items()}
  print(f"{n} architectures, {FLAGS.dataset}, {os.cpu_count()} CPUs; load {load()}")
  for k, rate in rates.items():
    print(f"  {k:>13}: {rate:.3f} archs/s ({1 / rate:.2f} s/arch), whole space "
          f"{searchspace.NUM_ARCHS / rate / 3600:.2f} h; new is {rates['new'] / rate:.1f}x")
  throughput = conv_throughput()
  lab_time = searchspace.NUM_ARCHS / rates["new"]
  distinct = len(np.unique(lab.family_keys("naswot", lab.plan_archs(ops)), axis=0))
  for label, dedup, time_s in (("every architecture", False, lab_time),
                               ("distinct computations", True,
                                lab_time * distinct / searchspace.NUM_ARCHS)):
    flops = floor_flops(FLAGS.dataset, distinct=dedup)
    floor = flops / throughput
    print(f"floor, {label}: {flops / 1e15:.2f} PFLOP of convolutions / "
          f"{throughput / 1e9:.0f} GFLOP/s (3x3 conv, 128 images) = {floor / 3600:.2f} h; "
          f"the lab {time_s / 3600:.2f} h{' (est., NASWOT share)' if dedup else ''} = "
          f"{time_s / floor:.1f}x that")
  print(f"load {load()}")


if __name__ == "__main__":
  app.run(main)
