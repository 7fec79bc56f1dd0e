r"""Meta-train the controller on synthetic devices.

  python -m experiments.meta_train --config=experiments/configs/quick.py --workdir=runs/quick \
    [--config.num_devices=4096] [--config.num_seeds=4] [--data_dir=PATH] [--fresh]

Configs (experiments/configs/): `default.py` (4,096 devices x 300 updates, sized for an
accelerator), `quick.py` (256 x 40: minutes on two CPU cores), `paper.py` (the
paper-faithful controller, 256 x 40). A rerun with the same --workdir and config resumes
from its last checkpoint; --fresh starts that workdir afresh.
"""

from absl import flags
from ml_collections import config_flags

from experiments import cli
from hwnas_jax.metatrain import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/default.py",
    "Meta-training configuration file: default.py (4,096 devices x 300 updates, for an "
    "accelerator), quick.py (256 x 40, minutes on 2 CPU cores), paper.py (paper-faithful).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go.", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Benchmark bundle (default: $HWNAS_DATA_DIR).")
_PROXY_FILES = flags.DEFINE_list("proxy_files", [], "dataset:PATH.npz proxy tables replacing the bundle's.")
_PROXY_DIRS = flags.DEFINE_list("proxy_dirs", [], "Folders of extra proxies_<dataset>.npz (score_proxies).")
_FRESH = flags.DEFINE_bool("fresh", False, "Start afresh: delete the workdir's checkpoints first.")


def main(argv):
  del argv
  config = cli.checked_config(_CONFIG.value)
  metrics = train.train_and_evaluate(config, _WORKDIR.value, _DATA_DIR.value,
                                     proxy_files=cli.proxy_files(_PROXY_FILES.value),
                                     fresh=_FRESH.value, proxy_dirs=_PROXY_DIRS.value)
  print({k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})


if __name__ == "__main__":
  cli.run(main)
