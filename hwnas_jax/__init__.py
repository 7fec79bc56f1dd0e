"""hwnas-jax: hardware-aware NAS on a budget of latency probes, in JAX.

Four layers, imports pointing down only (tests/layers_test.py checks it):
  benchmark  the search space, benchmark tables, the network and proxy scorers
  devices    anything that measures latency: tables, the host, synthetic devices, noise
  metatrain  the episode, the controllers, PPO, sharding, the training loop, checkpoints
  search     the method interface, baselines, deployment, the protocol, the registry
"""
