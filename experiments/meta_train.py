r"""Meta-train the controller on synthetic devices.

  python -m experiments.meta_train --config=experiments/configs/quick.py --workdir=runs/quick \
    [--config.num_devices=4096] [--config.num_seeds=4] [--data_dir=PATH] [--fresh]

Configs (experiments/configs/): `default.py` (4,096 devices x 300 updates, K drawn in 3..20:
one checkpoint for every K; at K = 10 it took 221 s for 4 seeds on one H200 GPU and 47 min
for one seed on two CPU cores, the range about 2.2 times that), `quick.py` (256 x 40: about
2 min on two CPU cores at load 1, a minute of it compiling), `paper.py` (the paper-faithful
controller, 256 x 40). A
rerun with the same --workdir and config resumes from its last checkpoint; --fresh starts it
afresh.
"""

from absl import flags
from ml_collections import config_flags

from experiments import cli
from hwnas_jax.metatrain import train

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """Flags of the command; defined only when run as a program, so the module imports
  cleanly (tests define them on a FlagValues of their own)."""
  config_flags.DEFINE_config_file(
      "config", "experiments/configs/default.py",
      "Meta-training configuration file: default.py (4,096 devices x 300 updates, K in 3..20; "
      "about 100 min a seed on 2 CPU cores), quick.py (256 x 40; about 2 min on 2 "
      "CPU cores at load 1), paper.py (paper-faithful, 256 x 40).",
      flag_values=fv)
  flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go.", required=True,
                      flag_values=fv)
  flags.DEFINE_string("data_dir", None, "Benchmark bundle (default: $HWNAS_DATA_DIR).",
                      flag_values=fv)
  flags.DEFINE_list("proxy_files", [], "dataset:PATH.npz proxy tables replacing the bundle's.",
                    flag_values=fv)
  flags.DEFINE_list("proxy_dirs", [], "Folders of extra proxies_<dataset>.npz (score_proxies).",
                    flag_values=fv)
  flags.DEFINE_bool("fresh", False, "Start afresh: delete the workdir's checkpoints first.",
                    flag_values=fv)


def main(argv, fv: flags.FlagValues = FLAGS):
  del argv
  config = cli.checked_config(fv.config)
  cli.checked_workdir(fv.workdir, config, fv.fresh)
  metrics = train.train_and_evaluate(config, fv.workdir, fv.data_dir,
                                     proxy_files=cli.proxy_files(fv.proxy_files),
                                     fresh=fv.fresh, proxy_dirs=fv.proxy_dirs)
  print({k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})


if __name__ == "__main__":
  cli.run(main, define_flags)
