"""The paper-faithful controller of DESIGN.md (sim-is-more), to stand beside ours.

Edit actions, a history of 5, the paper's reward, an MLP policy, a one-number-per-operator
truncated-normal prior fitted on the training devices (bounds in ms), 10 steps, PPO with
gamma 0.6 and lr 3e-4 for about 1e5 probe-steps.
"""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.name = "paper_controller"
  config.prior = "paper"
  config.proxy = "paper"            # the paper's mean of min-max naswot, logsynflow, skip
  config.invalid_penalty = 0.0      # the paper's reward has no penalty (and ignores this)
  config.num_devices = 256
  config.num_updates = 40          # 40 x 256 episodes x 9 edit steps ~ 1e5 steps
  config.gamma = 0.6
  config.learning_rate = 3e-4
  config.num_epochs = 10           # Stable-Baselines3's PPO defaults
  config.num_minibatches = 32
  config.ent_coef = 0.0
  config.eval_devices = 256
  # One K, told nothing, and minibatches of single steps shuffled across episodes, as the
  # paper's Stable-Baselines3 PPO does.
  config.num_probes_range = ()
  config.num_probes_power = 0.0
  config.noise_told_share = 0.0
  config.episode_minibatches = False
  return config
