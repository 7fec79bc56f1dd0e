r"""Mean accuracy on the validation devices against the number of latency probes K.

  python -m experiments.probe_curve --checkpoint=runs/default --probes=3,5,10,20 \
    --methods=controller,lsq,random --output=results/probe_curve.json

Writes the table as JSON and a PNG beside it (same stem).
"""

import json
import os

from absl import flags
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from tqdm import tqdm

from experiments import cli
from hwnas_jax.benchmark import tables
from hwnas_jax.search import protocol
from hwnas_jax.search import registry

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Benchmark bundle (default: $HWNAS_DATA_DIR).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "meta_train --workdir of the controller.")
_PROBES = flags.DEFINE_list("probes", ["3", "5", "10", "20"], "Values of K.")
_METHODS = flags.DEFINE_list("methods", ["controller", "lsq", "random"], "Methods.")
_EPISODES = flags.DEFINE_integer("episodes", 25, "Episodes per cell.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the episodes.")
_OUTPUT = flags.DEFINE_string("output", "results/probe_curve.json", "JSON path; PNG beside it.")


def main(argv):
  del argv
  benchmark = tables.load_benchmark(_DATA_DIR.value).select_devices(tables.VALIDATION_DEVICES)
  methods = {name: registry.make_methods(name, _CHECKPOINT.value)
             for name in registry.check_names(_METHODS.value)}
  curve = {name: {} for name in methods}
  for k in tqdm([int(k) for k in _PROBES.value], desc="K"):
    results = protocol.evaluate(
        benchmark, methods, benchmark.devices, benchmark.datasets,
        lambda device: [protocol.percentile_budget(benchmark.latency(device), q)
                        for q in (10, 25, 50)], k, _EPISODES.value, _SEED.value)
    for name, summary in results["summary"].items():
      curve[name][k] = summary
  header = f"{'method':<14}" + "".join(f"{'K=' + str(k):>14}" for k in curve[next(iter(curve))])
  print(header + "\n" + "-" * len(header))
  for name, by_k in curve.items():
    print(f"{name:<14}" + "".join(f"{s['mean_accuracy']:>8.2f} ({s['feasible_rate']:.2f})"
                                  for s in by_k.values()))
  os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
  with open(_OUTPUT.value, "w") as f:
    json.dump({"devices": list(benchmark.devices), "episodes": _EPISODES.value,
               "seed": _SEED.value, "curve": curve}, f, indent=1)
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name, by_k in curve.items():
    ax.plot(list(by_k), [s["mean_accuracy"] for s in by_k.values()], marker="o", label=name)
  ax.set_xlabel("latency probes K")
  ax.set_ylabel("mean accuracy (%), 36 cells")
  ax.set_title("Validation devices: accuracy vs probe budget")
  ax.set_xscale("log", base=2)
  ax.set_xticks(list(curve[next(iter(curve))]), [str(k) for k in curve[next(iter(curve))]])
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  png = os.path.splitext(_OUTPUT.value)[0] + ".png"
  fig.savefig(png, dpi=120)
  print(f"wrote {_OUTPUT.value} and {png}")


if __name__ == "__main__":
  cli.run(main)
