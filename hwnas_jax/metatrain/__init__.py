"""Meta-training: the episode as an environment, the controllers, PPO, sharding, the training factory and its checkpoints."""
