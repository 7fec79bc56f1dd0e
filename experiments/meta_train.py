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
_PROXY_FILES = flags.DEFINE_list("proxy_files", [], "dataset:PATH.npz proxy tables replacing the bundle's.")


def main(argv):
  del argv
  proxy_files = dict(item.split(":", 1) for item in _PROXY_FILES.value)
  metrics = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value, _DATA_DIR.value,
                                     proxy_files=proxy_files)
  print({k: round(v, 4) for k, v in metrics.items()})


if __name__ == "__main__":
  cli.run(main)
