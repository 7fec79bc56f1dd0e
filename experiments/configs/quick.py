"""The README's main job: meta-training plus the validation table in about 70 s on 2 CPU cores."""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.num_devices = 256
  config.num_updates = 40
  config.num_minibatches = 4
  config.num_epochs = 2
  config.eval_devices = 256
  return config
