"""A device unlike every training device: the controller must not do worse than lsq there.

The device below has no fixed overhead and per-operation costs in ratios no bundle device
has. Before a confirmed answer barred probes that cannot improve it, the controller spent
its last probes on architectures of the same latency and proxy as its answer there (59.9
against lsq's 66.3 over these cells, hand-set weights).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices import synthetic
from hwnas_jax.devices.table import TableDevice
from hwnas_jax.metatrain import candidates
from hwnas_jax.metatrain import controller as controller_lib
from hwnas_jax.metatrain import env
from hwnas_jax.search import baselines
from hwnas_jax.search import deploy
from hwnas_jax.search import interface
from hwnas_jax.search import protocol

NUM_PROBES = 10


# Per-op costs (none, skip, 1x1 conv, 3x3 conv, avg pool) on every edge, overhead, curvature:
# devices built to be unlike every training device (BUILD_NOTES, version 0.4.0).
UNLIKE_DEVICES = {
    "pool_heavy": ((0.0, 0.05, 0.2, 1.0, 3.0), 1.0, 0.0),
    "conv1x1_heavy": ((0.0, 0.05, 1.5, 1.0, 0.1), 1.0, 0.0),
    "skip_heavy": ((0.0, 0.5, 0.3, 1.0, 0.4), 1.0, 0.0),
    "super_additive": ((0.0, 0.05, 0.3, 1.0, 0.2), 1.0, 1.5),
    "no_overhead": ((0.01, 0.02, 0.4, 1.0, 0.3), 0.0, 0.0),
}


def unlike_device(name: str) -> np.ndarray:
  """The (15625,) latency table of one of `UNLIKE_DEVICES`."""
  op_cost, overhead, curvature = UNLIKE_DEVICES[name]
  edge_cost = np.tile(np.asarray(op_cost, np.float32), (searchspace.NUM_EDGES, 1))
  return np.asarray(synthetic.latency_table(
      synthetic.make_device(overhead, edge_cost, curvature, seed=3)))


def accuracy_of_answers(benchmark, latency_ms, methods, proxy_name=None) -> dict:
  """Each method's answer accuracy per cell (3 datasets x q in {10, 25, 50}, K = 10)."""
  scores = {name: [] for name in methods}
  for dataset in benchmark.datasets:
    proxy = benchmark.proxy(dataset, proxy_name or aggregate.DEFAULT_PROXY)
    accuracy = benchmark.accuracy(dataset)
    for q in (10, 25, 50):
      budget_ms = protocol.percentile_budget(latency_ms, q).budget_ms
      task = interface.Task(dataset, budget_ms, NUM_PROBES, proxy)
      for name, method in methods.items():
        device = interface.ProbeBudget(TableDevice("unlike", latency_ms), NUM_PROBES)
        answer = method(task, device.handle, np.random.default_rng(0))
        assert answer is not None and latency_ms[answer] <= budget_ms, (name, dataset, q)
        scores[name].append(accuracy[answer])
  return scores


# One small model for both tests, jitted once. Before meta-training the weights that score
# candidates are set by hand (`controller.INITIAL_WEIGHTS`), whatever the hidden size.
MODEL = controller_lib.Controller(hidden_size=8)
init = jax.jit(MODEL.init)
apply = jax.jit(MODEL.apply)


def hand_set_method():
  """The controller as a search method, before any meta-training."""
  params = init(jax.random.key(0), env.empty_observation(NUM_PROBES),
                jnp.zeros(searchspace.NUM_ARCHS))
  return deploy.controller_method(MODEL, jax.device_get(params))


@pytest.fixture(scope="module")
def hand_set_controller():
  return hand_set_method()


def test_on_a_device_unlike_the_prior_the_controller_is_not_below_lsq(benchmark,
                                                                       hand_set_controller):
  """No fixed overhead, a 1x1 conv at 0.4 of a 3x3 conv, pooling at 0.3, skip and none
  near 0 (benchmarks/long_checks_test.py runs all five devices)."""
  scores = accuracy_of_answers(benchmark, unlike_device("no_overhead"),
                               {"controller": hand_set_controller,
                                "lsq": baselines.BASELINES["lsq"]})
  assert np.mean(scores["controller"]) >= np.mean(scores["lsq"]), scores


def test_once_an_answer_is_confirmed_no_probe_that_cannot_improve_it_comes_first():
  proxy = jnp.asarray(controller_lib.standardize(
      np.random.default_rng(1).uniform(size=searchspace.NUM_ARCHS)))
  answer = int(np.argsort(np.asarray(proxy))[searchspace.NUM_ARCHS // 2])  # a median proxy
  obs = env.empty_observation(NUM_PROBES)
  for _ in range(2):  # the same latency twice: an exact device, the answer confirmed
    obs = env.observe(obs, answer, 0.9)
  params = init(jax.random.key(0), obs, proxy)
  logits = np.asarray(apply(params, obs, proxy)[0])
  n = searchspace.NUM_ARCHS
  above = np.asarray(proxy > proxy[answer])
  assert above[np.argmax(logits[:n])] and np.argmax(logits) < n  # a new, better candidate
  # Every candidate (and repeat) that cannot beat the answer lies below every one that can.
  dominated = logits[:n][~above & (logits[:n] > candidates.MASKED)]
  assert dominated.max() < logits[:n][above].min()
  assert np.all(logits[n:] < logits[:n][above].min())
  # Before it is confirmed (one probe), no candidate is held back.
  one = env.observe(env.empty_observation(NUM_PROBES), answer, 0.9)
  logits_one = np.asarray(apply(params, one, proxy)[0])[:n]
  assert logits_one[~above].max() > logits_one[above].min()
