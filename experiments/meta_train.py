r"""Meta-train the controller on synthetic devices.

  python -m experiments.meta_train --config=experiments/configs/quick.py --workdir=runs/quick \
    [--config.num_devices=4096] [--data_dir=PATH]

A rerun with the same --workdir resumes from its last checkpoint.
"""

from absl import flags
from ml_collections import config_flags

from experiments import cli
from hwnas_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/default.py",
                                          "Meta-training configuration file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go.", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Benchmark bundle (default: $HWNAS_DATA_DIR).")


def main(argv):
  del argv
  metrics = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value, _DATA_DIR.value)
  print({k: round(v, 4) for k, v in metrics.items()})


if __name__ == "__main__":
  cli.run(main)
