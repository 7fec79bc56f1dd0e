r"""The main job: a short meta-training, then the evaluation table on the validation devices.

  python -m experiments.main --workdir=runs/quick [--config=experiments/configs/quick.py]

With the benchmark bundle ($HWNAS_DATA_DIR or --data_dir) it evaluates every method on the
four validation devices of PROTOCOL.md and writes `results.json` in the workdir. Without it,
it meta-trains on the embedded defaults and reports the controller against random search
on held-out synthetic devices, the only targets it then has.
"""

import json
import os

from absl import flags
from ml_collections import config_flags

from experiments import cli
from hwnas_jax.benchmark import progress
from hwnas_jax.benchmark import tables
from hwnas_jax.search import protocol
from hwnas_jax.search import registry
from hwnas_jax.metatrain import train

FLAGS = flags.FLAGS
_METHODS = ["random", "rea", "lsq", "controller", "oracle", "proxy_oracle"]


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """Flags of the command; defined only when run as a program, so the module imports
  cleanly (tests define them on a FlagValues of their own)."""
  config_flags.DEFINE_config_file("config", "experiments/configs/quick.py",
                                  "Meta-training configuration file.", flag_values=fv)
  flags.DEFINE_string("workdir", "runs/quick", "Checkpoints, metrics and results.",
                      flag_values=fv)
  flags.DEFINE_string("data_dir", None, "Benchmark bundle (default: $HWNAS_DATA_DIR).",
                      flag_values=fv)
  flags.DEFINE_integer("episodes", 25, "Episodes per evaluation cell.", flag_values=fv)
  flags.DEFINE_bool("fresh", False, "Start the workdir afresh (delete its checkpoints).",
                    flag_values=fv)


def main(argv, fv: flags.FlagValues = FLAGS):
  del argv
  config = cli.checked_config(fv.config)
  workdir, data_dir = fv.workdir, fv.data_dir
  episodes = cli.whole("--episodes", fv.episodes)
  cli.checked_workdir(workdir, config, fv.fresh)
  has_bundle = data_dir is not None or bool(os.environ.get(tables.DATA_DIR_ENV))
  benchmark = None
  if has_bundle:  # what the evaluation needs, checked before training
    benchmark = tables.load_benchmark(data_dir).select_devices(tables.VALIDATION_DEVICES)
    cli.check_proxy(benchmark, config.proxy, benchmark.datasets)
    cli.checked_output(os.path.join(workdir, "results.json"), flag="--workdir's results.json")
  last = train.train_and_evaluate(config, workdir, data_dir, fresh=fv.fresh)
  print(f"held-out synthetic devices ({config.eval_devices}, greedy, K={config.num_probes}, "
        f"{config.num_seeds} seed(s)): controller {last.get('eval_score', float('nan')):.3f} "
        f"vs random search {last.get('random_score', float('nan')):.3f} of the best proxy "
        "within budget")
  if benchmark is None:
    print(f"no benchmark bundle: set ${tables.DATA_DIR_ENV} for the real-device table")
    return
  methods = {name: registry.make_methods(name, workdir, config.proxy) for name in _METHODS}
  results = protocol.evaluate(
      benchmark, methods, benchmark.devices, benchmark.datasets,
      protocol.percentile_budgets(benchmark),
      config.num_probes, episodes, seed=0, proxy=config.proxy,
      progress=lambda cells: progress.bar(cells, desc="evaluate", unit="cell"))
  print(protocol.format_table(results["rows"], results["summary"]))
  path = os.path.join(workdir, "results.json")
  with open(path, "w") as f:
    json.dump(results, f, indent=1)
  print(f"wrote {path}")


if __name__ == "__main__":
  cli.run(main, define_flags)
