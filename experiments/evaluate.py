r"""Evaluate search methods on the latency-budgeted task of PROTOCOL.md.

  python -m experiments.evaluate --latency_file=PATH.npz --devices=eyeriss,fpga \
    --datasets=cifar10,cifar100,ImageNet16-120 --budgets=10,25,50 --probes=10 \
    --episodes=25 --seed=0 --methods=random,rea,lsq,oracle,proxy_oracle --output=results.json

`--budget_ms=5,7,9` gives absolute budgets for every device instead of percentiles, and
`--budget_ms=eyeriss:5:7:9,fpga:4:5:6` per device.
"""

import json

from absl import flags
from tqdm import tqdm

from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import tables
from hwnas_jax.search import protocol
from hwnas_jax.search import registry
from experiments import cli

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Benchmark bundle folder (default: $HWNAS_DATA_DIR).")
_LATENCY_FILE = flags.DEFINE_string("latency_file", None, "Latency .npz (default: the bundle's).")
_PROXY_FILES = flags.DEFINE_list("proxy_files", [], "dataset:PATH.npz proxy tables replacing the bundle's.")
_PROXY_DIRS = flags.DEFINE_list("proxy_dirs", [], "Folders of extra proxies_<dataset>.npz (score_proxies).")
_PROXY = flags.DEFINE_string("proxy", aggregate.DEFAULT_PROXY,
                             "How proxies combine (benchmark/aggregate.py); paper: PROTOCOL.md's reference.")
_DEVICES = flags.DEFINE_list("devices", None, "Devices (keys of the latency file); default: all.")
_DATASETS = flags.DEFINE_list("datasets", ["cifar10", "cifar100", "ImageNet16-120"], "Datasets.")
_BUDGETS = flags.DEFINE_list("budgets", ["10", "25", "50"], "Budget percentiles q.")
_BUDGET_MS = flags.DEFINE_list("budget_ms", [], "Absolute budgets in ms (overrides --budgets).")
_PROBES = flags.DEFINE_integer("probes", 10, "Latency probes K per episode.")
_EPISODES = flags.DEFINE_integer("episodes", 25, "Episodes per cell.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the episodes.")
_NOISE = flags.DEFINE_float("noise", 0.0, "Probe noise sigma: a probe is table x exp(sigma x N(0, 1)) "
                            "(PROTOCOL.md, noisy devices); 0 = the exact table.")
_METHODS = flags.DEFINE_list("methods", ["random", "rea", "lsq", "oracle", "proxy_oracle"],
                             "Methods and references to evaluate.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "meta_train --workdir(s), comma-separated (controller methods).")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write results.json.")


def parse_budgets(percentiles, absolute, devices):
  """A function device -> list of Budget, from --budgets or --budget_ms."""
  if not absolute:
    qs = [float(q) for q in percentiles]
    return lambda latency, device: [protocol.percentile_budget(latency, q) for q in qs]
  per_device = {}
  if any(":" in item for item in absolute):
    for item in absolute:
      device, *values = item.split(":")
      if device not in devices:
        raise ValueError(f"--budget_ms names device {device!r}, not among --devices {devices}")
      per_device[device] = [protocol.Budget(float(v)) for v in values]
    missing = [d for d in devices if d not in per_device]
    if missing:
      raise ValueError(f"--budget_ms gives no budget for {missing}")
    return lambda latency, device: per_device[device]
  common = [protocol.Budget(float(v)) for v in absolute]
  return lambda latency, device: common


def main(argv):
  del argv
  output = cli.checked_output(_OUTPUT.value)
  benchmark = tables.load_benchmark(_DATA_DIR.value, _LATENCY_FILE.value,
                                    cli.proxy_files(_PROXY_FILES.value), _PROXY_DIRS.value)
  cli.check_proxy(benchmark, _PROXY.value, _DATASETS.value)
  devices = _DEVICES.value or list(benchmark.devices)
  benchmark = benchmark.select_devices(devices)
  budgets_of = parse_budgets(_BUDGETS.value, _BUDGET_MS.value, devices)
  methods = {name: registry.make_methods(name, _CHECKPOINT.value, _PROXY.value)
             for name in registry.check_names(_METHODS.value)}
  print(f"benchmark: {benchmark.source}; latency file: "
        f"{_LATENCY_FILE.value or 'bundle latency_ms.npz'}; devices: {', '.join(devices)}; "
        f"proxy {_PROXY.value}; noise sigma {_NOISE.value:g}")
  results = protocol.evaluate(
      benchmark, methods, devices, _DATASETS.value,
      lambda device: budgets_of(benchmark.latency(device), device),
      _PROBES.value, _EPISODES.value, _SEED.value, noise=_NOISE.value, proxy=_PROXY.value,
      progress=lambda cells: tqdm(cells, desc="cells", unit="cell"))
  print(protocol.format_table(results["rows"], results["summary"]))
  if output:
    with open(output, "w") as f:
      json.dump(results, f, indent=1)
    print(f"wrote {output}")


if __name__ == "__main__":
  cli.run(main)
