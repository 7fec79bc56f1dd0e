"""Meta-training end to end: it beats random search on held-out synthetic devices, resumes
from its checkpoint, and its workdir deploys as a search method.

That 40 updates improve on the untrained controller is checked in
benchmarks/long_checks_test.py (a minute on two cores); the suite's short form, that an
update moves the policy and the value the right way, is in ppo_equivalence_test.py."""

import importlib.resources
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import default, paper, quick
from hwnas_jax.benchmark import searchspace
from hwnas_jax.benchmark import tables
from hwnas_jax.devices import synthetic
from hwnas_jax.devices.table import TableDevice
from hwnas_jax.metatrain import checkpoint
from hwnas_jax.metatrain import train
from hwnas_jax.search import deploy
from hwnas_jax.search import interface
from hwnas_jax.search import registry


def _tiny(config):
  config.num_devices = 32
  config.num_probes = 5
  config.hidden_size = 8
  config.num_minibatches = 2
  config.num_epochs = 1
  config.eval_every = 1
  config.checkpoint_every = 1
  config.eval_devices = 32
  return config


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
  """Two updates of a controller whose episodes draw K in 4..6 (evaluated at K = 5)."""
  workdir = str(tmp_path_factory.mktemp("controller"))
  config = _tiny(quick.get_config())
  config.num_updates = 2
  config.num_probes_range = (4, 6)
  last = train.train_and_evaluate(config, workdir, data_dir, log=lambda _: None)
  return workdir, config, last


def test_controller_beats_random_search_on_held_out_synthetic_devices(run):
  _, _, last = run
  # K = 5 probes and budgets down to the 5th percentile: not every episode can succeed, and
  # the controller takes more risk than random search for a better answer.
  assert last["eval_score"] > last["random_score"] + 0.1
  assert last["eval_feasible_rate"] > 0.5


def test_rerun_resumes_from_the_checkpoint(run, data_dir):
  workdir, config, _ = run
  config.num_updates = 3
  train.train_and_evaluate(config, workdir, data_dir, log=lambda _: None)
  steps = [m["step"] for m in checkpoint.read_metrics(workdir, config.seed)]
  assert steps == [0, 1, 2, 3]  # 0: the untrained controller, written once


def test_workdir_deploys_within_k_probes(run, benchmark):
  """One checkpoint, trained on K in 4..6, at K inside and far outside that range."""
  workdir, _, _ = run
  [method] = registry.make_methods("controller", workdir)
  latency = benchmark.latency("gold_6240")
  budget_ms = float(np.percentile(latency, 50))
  for num_probes in (5, 2, 15):
    device = interface.ProbeBudget(TableDevice("gold_6240", latency), num_probes)
    answer = method(interface.Task("cifar10", budget_ms, num_probes,
                                   benchmark.proxy("cifar10")), device.handle,
                    np.random.default_rng(0))
    assert len(device.probes) == num_probes
    # Two probes may all land over the budget (no answer); an answer is always valid.
    assert answer is not None or num_probes == 2
    assert answer is None or device.is_valid(answer, budget_ms)
  with pytest.raises(ValueError, match="no 'paper_controller' run"):
    registry.make_methods("paper_controller", workdir)


def test_paper_controller_trains_and_deploys(tmp_path, data_dir, benchmark):
  config = _tiny(paper.get_config())
  config.num_updates = 1
  train.train_and_evaluate(config, str(tmp_path), data_dir, log=lambda _: None)
  [method] = registry.make_methods("paper_controller", str(tmp_path))
  latency = benchmark.latency("gold_6240")
  device = interface.ProbeBudget(TableDevice("gold_6240", latency), config.num_probes)
  task = interface.Task("cifar10", float(np.median(latency)), config.num_probes,
                        benchmark.proxy("cifar10"),
                        latency_range_ms=(float(latency.min()), float(latency.max())))
  answer = method(task, device.handle, np.random.default_rng(0))
  assert len(device.probes) == config.num_probes and answer == device.probes[-1].index


def test_configs_are_sized_as_documented():
  d, q = default.get_config(), quick.get_config()
  assert d.num_devices == 4096
  # default.py: one checkpoint for every K and for told noise; quick.py: the headline setting.
  assert (tuple(d.num_probes_range), d.num_probes_power, d.noise_told_share,
          d.episode_minibatches) == ((3, 20), 2.0, 0.5, True)
  assert (tuple(q.num_probes_range), q.noise_told_share, q.num_probes) == ((), 0.0, 10)
  assert quick.get_config().num_devices * quick.get_config().num_updates <= 256 * 60
  p = paper.get_config()
  assert (p.name, p.prior, p.gamma, p.learning_rate, p.num_probes) == (
      "paper_controller", "paper", 0.6, 3e-4, 10)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no meta-training run"):
    registry.make_methods("controller", str(tmp_path))


def test_embedded_prior_is_the_bundles_and_runs_without_it(data_dir, monkeypatch):
  """The prior stored with the package (for runs without the bundle) is the bundle's training
  devices' fit: a stale file after the bundle changed fails here."""
  stored = json.loads(importlib.resources.files("hwnas_jax").joinpath(
      train.EMBEDDED_PRIOR).read_text())
  fresh = json.loads(train.embedded_prior_json(data_dir))
  assert stored["devices"] == fresh["devices"] and stored["stepped"] == fresh["stepped"]
  np.testing.assert_allclose(stored["shapes"], fresh["shapes"], rtol=1e-6, atol=1e-9)
  monkeypatch.delenv(tables.DATA_DIR_ENV, raising=False)
  config = quick.get_config()
  config.eval_devices = 8
  data, source = train.training_data(config)
  assert source.startswith("NO BENCHMARK BUNDLE") and "pixel2" in source
  assert float(data.prior.stepped_share) == pytest.approx(synthetic.MIN_STEPPED_SHARE)


def test_prior_fitted_weight_reaches_the_prior(monkeypatch):
  """`config.prior_fitted_weight` is the share of the mixture the episodes are drawn from;
  its default is the prior's own (the prior of 0.8.0)."""
  monkeypatch.delenv(tables.DATA_DIR_ENV, raising=False)
  config = quick.get_config()
  config.eval_devices = 8
  assert config.prior_fitted_weight == synthetic.FITTED_WEIGHT
  config.prior_fitted_weight = 0.25
  data, _ = train.training_data(config)
  assert float(data.prior.fitted_weight) == 0.25


def test_fitted_in_context_start_is_where_training_and_the_untrained_method_start(
    tmp_path, data_dir, monkeypatch):
  """Under `in_context_prior = "fitted"` the controller's latency model starts from the
  synthetic prior's fit (convolutions dearer than skips, every weight positive), every
  seed's training starts there, and `untrained_controller` is that start, kept in the
  workdir: rebuilt without the bundle at hand, it is still the start fitted without the
  held-out family. "fitted_wide" widens the scale; "flat" starts at ones."""
  monkeypatch.delenv(tables.DATA_DIR_ENV, raising=False)
  config = _tiny(quick.get_config())
  config.num_updates = 1
  config.num_seeds = 2
  config.held_out_family = "phone"
  config.in_context_prior = "fitted"
  data, _ = train.training_data(config, data_dir)
  prior_mean, prior_scale = data.in_context_start
  ops = dict(zip(searchspace.OPS, prior_mean))
  assert np.all(prior_mean > 0) and prior_scale > 0
  assert ops["nor_conv_3x3"] > ops["nor_conv_1x1"] > ops["skip_connect"]
  states = train.programs(config).init(jnp.stack([jax.random.key(0), jax.random.key(1)]), data)
  np.testing.assert_allclose(states.params["params"]["prior_mean"], [prior_mean] * 2)
  np.testing.assert_allclose(jax.nn.softplus(states.params["params"]["prior_scale_raw"]),
                             [prior_scale] * 2, rtol=1e-5)
  config.in_context_prior = "fitted_wide"
  wide, _ = train.training_data(config, data_dir)
  np.testing.assert_allclose(wide.in_context_start[0], prior_mean)
  assert wide.in_context_start[1] == pytest.approx(prior_scale * synthetic.COV_INFLATE)
  for kind, start in (("fitted", data.in_context_start), ("fitted_wide", wide.in_context_start)):
    config.in_context_prior = kind
    workdir = str(tmp_path / kind)
    train.train_and_evaluate(config, workdir, data_dir, log=lambda _: None)
    _, methods = deploy.load_methods(workdir, untrained=True)  # no bundle in the environment
    for method in methods:
      params = method.recipe.args[1]["params"]
      np.testing.assert_allclose(params["prior_mean"], start[0])
      np.testing.assert_allclose(jax.nn.softplus(params["prior_scale_raw"]), start[1],
                                 rtol=1e-5)
  config.in_context_prior = "flat"
  flat, _ = train.training_data(config, data_dir)
  assert flat.in_context_start is None
  state = jax.jit(train.make_train(config).init)(jax.random.key(0), flat)
  np.testing.assert_array_equal(state.params["params"]["prior_mean"], 1.0)
  with open(os.path.join(str(tmp_path / "fitted"), checkpoint.CONFIG)) as f:
    record = json.load(f)
  del record["in_context_start"]  # a run saved before starts were kept
  with open(os.path.join(str(tmp_path / "fitted"), checkpoint.CONFIG), "w") as f:
    json.dump(record, f)
  with pytest.raises(ValueError, match="did not keep"):
    deploy.load_methods(str(tmp_path / "fitted"), untrained=True)
