"""Bad inputs, one row each: a clear error (the message asserted), before any work is done.

Each row of `ROWS` is (id, exception, message regex, call). Entry points
run in-process: each test defines the command's flags on a `FlagValues` of its own
(`define_flags(fv)`), parses the row's arguments and calls `main([], fv)`, with the work
itself (a cell, a training, a search, a host measurement, a study) replaced by a tripwire,
so a row that got as far as the work fails. The message checked is the one `cli.run`
prints (`cli.message`). A few rows run the real command as a subprocess, for what happens
while the flags are defined or parsed (ml_collections' errors) and to see one line, no
traceback.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
import types
from unittest import mock

from absl import flags
import jax
import ml_collections
import numpy as np
import pytest

import early
from experiments import answer_study
from experiments import check_proxies
from experiments import cli
from experiments import device_coverage
from experiments import evaluate
from experiments import export as export_entry
from experiments import family_study
from experiments import host_study
from experiments import main as main_entry
from experiments import meta_train
from experiments import proxy_study
from experiments import score_proxies
from experiments import search
from experiments import store as store_entry
from experiments import sweep
from experiments.configs import quick
from hwnas_jax.benchmark import searchspace
from hwnas_jax.benchmark import tables
from hwnas_jax.devices import host
from hwnas_jax.devices.interface import DeviceError
from hwnas_jax.devices.table import TableDevice
from hwnas_jax.metatrain import checkpoint
from hwnas_jax.metatrain import config as config_lib
from hwnas_jax.metatrain import ppo
from hwnas_jax.metatrain import train
from hwnas_jax.search import baselines
from hwnas_jax.search import cheaters
from hwnas_jax.search import interface
from hwnas_jax.search import protocol
from hwnas_jax.search import registry
from hwnas_jax.search import session

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = searchspace.NUM_ARCHS
OP_COST_MS = np.array([0.0, 0.05, 0.3, 1.0, 0.2])  # fastest (all-none) = 1 ms
QUICK = os.path.join(REPO, "experiments", "configs", "quick.py")
# ml_collections loads --config files through importlib's deprecated load_module.
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


class WorkStarted(AssertionError):
  """The tripwire: a row reached the work it should have been refused before."""


def _tripwire(what):
  def trip(*args, **kwargs):
    raise WorkStarted(f"{what} started before the bad input was refused")
  return trip


@pytest.fixture(scope="module")
def files(tmp_path_factory, data_dir):
  """Paths every row may use: fake latency files (good and malformed), workdirs, configs."""
  root = tmp_path_factory.mktemp("bad_inputs")
  f = types.SimpleNamespace(root=root, data_dir=data_dir)
  f.latency = str(root / "fake.npz")
  np.savez(f.latency, fake=1.0 + searchspace.op_counts() @ OP_COST_MS)
  f.short = str(root / "short.npz")
  np.savez(f.short, fake=np.ones(10))
  f.negative = str(root / "negative.npz")
  np.savez(f.negative, fake=-np.ones(N))
  f.garbage = str(root / "garbage.npz")
  (root / "garbage.npz").write_bytes(b"not a zip file")
  f.a_file = str(root / "a_file.txt")
  (root / "a_file.txt").write_text("x")
  f.folder = str(root / "a_folder")
  os.makedirs(f.folder)
  # A trained-looking workdir (config.json written, no training): quick config, seed 0.
  f.workdir = str(root / "run")
  checkpoint.open_run(f.workdir, quick.get_config(), "test")
  f.bad_json = str(root / "bad_json")
  os.makedirs(f.bad_json)
  (root / "bad_json" / "config.json").write_text("{not json")
  f.lacking = str(root / "lacking")
  os.makedirs(f.lacking)
  (root / "lacking" / "config.json").write_text(json.dumps({"config": {"name": "controller"}}))
  f.orphan = str(root / "orphan")  # checkpoints but no config.json
  os.makedirs(os.path.join(f.orphan, "seed_0"))
  (root / "orphan" / "seed_0" / "checkpoint.msgpack").write_bytes(b"x")
  f.typo_config = str(root / "typo.py")
  (root / "typo.py").write_text(
      "from experiments.configs import quick\n\ndef get_config():\n"
      "  config = quick.get_config()\n  config.hiden_size = 32\n  return config\n")
  f.scratch_config = str(root / "scratch.py")
  (root / "scratch.py").write_text(
      "import ml_collections\n\ndef get_config():\n"
      "  return ml_collections.ConfigDict({'name': 'controller'})\n")
  f.int_config = str(root / "int_config.py")
  (root / "int_config.py").write_text("def get_config():\n  return 3\n")
  f.syntax_config = str(root / "syntax.py")
  (root / "syntax.py").write_text("def get_config(:\n")
  f.exit_config = str(root / "exits.py")
  (root / "exits.py").write_text("import sys\n\ndef get_config():\n  sys.exit(0)\n")
  f.raising_config = str(root / "raises.py")
  (root / "raises.py").write_text("def get_config():\n  raise RuntimeError('no config here')\n")
  return f


_LOAD_BENCHMARK = tables.load_benchmark


@functools.lru_cache(maxsize=16)
def _cached_benchmark(directory, latency_file, proxy_files, proxy_dirs):
  return _LOAD_BENCHMARK(directory, latency_file, dict(proxy_files), list(proxy_dirs))


def _load_benchmark(directory=None, latency_file=None, proxy_files=None, proxy_dirs=()):
  """`tables.load_benchmark`, read once per set of arguments (rows differ in flags only)."""
  return _cached_benchmark(directory or os.environ.get(tables.DATA_DIR_ENV), latency_file,
                           tuple(sorted((proxy_files or {}).items())), tuple(proxy_dirs))


@pytest.fixture
def ctx(files, monkeypatch, data_dir):
  """The row's world: the files, the bundle, and a tripwire on every kind of work."""
  monkeypatch.setenv(tables.DATA_DIR_ENV, data_dir)
  monkeypatch.setattr(tables, "load_benchmark", _load_benchmark)
  monkeypatch.setattr(protocol, "evaluate_cell", _tripwire("an evaluation cell"))
  monkeypatch.setattr(train, "train_and_evaluate", _tripwire("meta-training"))
  monkeypatch.setattr(session, "run_search", _tripwire("a search"))
  monkeypatch.setattr(host, "HostDevice", _tripwire("a host measurement"))
  monkeypatch.setattr(proxy_study, "study", _tripwire("the proxy study"))
  monkeypatch.setattr(answer_study, "study", _tripwire("the answer study"))
  monkeypatch.setattr(device_coverage, "coverage_report", _tripwire("the coverage report"))
  return files


def entry(module, *args):
  """Run an entry point in-process with these flags; returns what main returns."""
  argv = [module.__name__, *args]
  fv = flags.FlagValues()
  with mock.patch.object(sys, "argv", argv):  # a config flag reads its overrides from there
    module.define_flags(fv)
    fv(argv)
  return module.main([], fv)


# --- helpers of the library rows ---------------------------------------------------------

def _task(budget_ms=2.0, num_probes=2, proxy=None):
  return interface.Task("cifar10", budget_ms, num_probes, np.zeros(N) if proxy is None else proxy)


def _task_with_noise_prior(noise_prior):
  return interface.Task("cifar10", 2.0, 2, np.zeros(N), noise_prior=noise_prior)


def _episode(method, latency_ms=None, num_probes=2):
  device = TableDevice("toy", np.ones(N) if latency_ms is None else latency_ms)
  return protocol.run_episode(method, _task(num_probes=num_probes), device, np.ones(N),
                              np.random.default_rng(0))


_RUN_SEARCH = session.run_search  # the rows' own searches pass the tripwire


def _search(method):
  return _RUN_SEARCH(TableDevice("toy", np.ones(N)), method, _task(), 0, isolated=False)


def _measure(device_answer):
  class Odd:
    name = "odd"

    def measure(self, index):
      return device_answer

  return interface.ProbeBudget(Odd(), 2).handle.measure(3)


_greedy = cheaters.catch_refusal  # probes past K and swallows the refusal


def _peek(task, target, rng):  # reads the table behind the handle
  return int(np.argmin(target.device.latency_ms))


def _evaluate(bench, **overrides):
  kwargs = dict(methods={"random": [baselines.random_search]}, devices=["eyeriss"],
                datasets=["cifar10"],
                budgets=lambda device: [protocol.percentile_budget(bench.latency(device), 50)],
                num_probes=2, num_episodes=1, seed=0)
  kwargs.update(overrides)
  return protocol.evaluate(bench, **kwargs)


def _config(**changes):
  """The quick config with `changes`, of any type (a ConfigDict would refuse 2.5 for an int)."""
  return ml_collections.ConfigDict({**quick.get_config().to_dict(), **changes})


def _restore_corrupt(root):
  workdir = str(root / "corrupt_ckpt")
  os.makedirs(checkpoint.seed_dir(workdir, 0), exist_ok=True)
  with open(os.path.join(checkpoint.seed_dir(workdir, 0), checkpoint.CHECKPOINT), "wb") as f:
    f.write(b"\xc1 not msgpack")
  template = ppo.TrainState(params={"w": np.zeros(2, np.float32)}, opt_state={},
                            step=np.int32(0), key=jax.random.key(0))
  checkpoint.restore(workdir, 0, template)


def _copy_of_run(root, name):
  """A fresh copy of the trained-looking workdir (rows that would change it get their own)."""
  workdir = str(root / name)
  checkpoint.open_run(workdir, quick.get_config(), "test")
  return workdir


# --- the table ---------------------------------------------------------------------------
# (id, exception, message regex, call(ctx)); grouped by where the check lives.

ROWS = [
    # The reported findings, in their order.
    ("resume_other_seed", ValueError,
     r"holds a run with another config \(seed: 0 -> 1\).*--fresh to start afresh",
     lambda c: checkpoint.open_run(c.workdir, _config(seed=1), "test")),
    ("resume_other_hidden_size", ValueError,
     r"holds a run with another config \(hidden_size: 64 -> 32\)",
     lambda c: entry(meta_train, f"--workdir={c.workdir}", f"--config={QUICK}",
                     "--config.hidden_size=32")),
    ("config_file_typo_key", ValueError,
     r"unknown config key\(s\) 'hiden_size' \(did you mean 'hidden_size'\?\)",
     lambda c: entry(meta_train, f"--workdir={c.root / 'w1'}", f"--config={c.typo_config}")),
    ("config_prior_foo", ValueError, r"config\.prior='foo' is not one of mixture, paper",
     lambda c: entry(meta_train, f"--workdir={c.root / 'w1'}", f"--config={QUICK}",
                     "--config.prior=foo")),
    ("config_held_out_family_unknown", ValueError,
     r"config\.held_out_family='gpu' is not one of gpu_b1, gpu_b32, gpu_b256, cpu, phone, other",
     lambda c: entry(meta_train, f"--workdir={c.root / 'w1'}", f"--config={QUICK}",
                     "--config.held_out_family=gpu")),
    ("family_study_unknown_family", ValueError,
     r"--families: unknown 'gpu'; known: gpu_b1, gpu_b32, gpu_b256, cpu, phone",
     lambda c: entry(family_study, f"--workdir={c.root / 'fs'}", "--families=gpu")),
    ("family_study_family_twice", ValueError, r"--families names 'cpu' twice",
     lambda c: entry(family_study, f"--workdir={c.root / 'fs'}", "--families=cpu,cpu")),
    ("family_study_episodes_0", ValueError, r"--episodes must be a whole number >= 1, got 0",
     lambda c: entry(family_study, f"--workdir={c.root / 'fs'}", "--episodes=0")),
    ("family_study_probes_fraction", ValueError,
     r"--probes must be a whole number >= 1, got 2\.5",
     lambda c: entry(family_study, f"--workdir={c.root / 'fs'}", "--probes=3,2.5")),
    ("family_study_probes_twice", ValueError, r"--probes gives 3 twice",
     lambda c: entry(family_study, f"--workdir={c.root / 'fs'}", "--probes=3,3")),
    ("family_study_unknown_method", ValueError, r"methods: unknown 'lsqq'",
     lambda c: entry(family_study, f"--workdir={c.root / 'fs'}", "--methods=lsqq")),
    ("config_num_devices_0", ValueError, r"config\.num_devices must be >= 1, got 0",
     lambda c: entry(meta_train, f"--workdir={c.root / 'w1'}", f"--config={QUICK}",
                     "--config.num_devices=0")),
    ("config_invalid_penalty_negative", ValueError,
     r"config\.invalid_penalty must be >= 0, got -1",
     lambda c: entry(meta_train, f"--workdir={c.root / 'w1'}", f"--config={QUICK}",
                     "--config.invalid_penalty=-1.0")),
    ("devices_twice", ValueError, r"--devices names 'eyeriss' twice",
     lambda c: entry(evaluate, "--devices=eyeriss,eyeriss")),
    ("proxy_files_mnist", ValueError,
     r"--proxy_files names dataset 'mnist'; known: cifar10, cifar100, ImageNet16-120",
     lambda c: entry(meta_train, f"--workdir={c.root / 'w1'}", f"--config={QUICK}",
                     f"--proxy_files=mnist:{c.latency}")),
    ("method_reads_the_table", AttributeError, r"'ProbeHandle' object has no attribute 'device'",
     lambda c: _episode(_peek)),
    ("method_catches_the_probe_limit", interface.ProbeLimitExceeded,
     r"asked for more than 2 probes on 'toy' \(and went on after being refused\)",
     lambda c: _episode(_greedy)),
    ("negative_latency", DeviceError,
     r"device 'odd' returned -1\.0 ms for architecture 3: a latency is positive",
     lambda c: _measure(-1.0)),
    ("output_is_a_folder", ValueError, r"--output '.*a_folder' is a folder; give a file path",
     lambda c: entry(evaluate, f"--output={c.folder}", "--devices=eyeriss")),
    ("episodes_0", ValueError, r"--episodes must be a whole number >= 1, got 0",
     lambda c: entry(evaluate, "--episodes=0")),
    ("corrupt_checkpoint", ValueError,
     r"cannot read the checkpoint '.*corrupt_ckpt/seed_0/checkpoint\.msgpack'.*--fresh",
     lambda c: _restore_corrupt(c.root)),
    # metatrain/config.py: keys against default.py, values against their rules.
    ("config_lacks_keys", ValueError,
     r"config lacks key\(s\) budget_percentiles, checkpoint_every, .*, seed, vf_coef; "
     r"start the config file from experiments/configs/default\.py's get_config\(\)",
     lambda c: entry(meta_train, f"--workdir={c.root / 'w1'}", f"--config={c.scratch_config}")),
    ("config_not_a_configdict", ValueError,
     r"get_config\(\) must return an ml_collections\.ConfigDict, got int",
     lambda c: entry(meta_train, f"--workdir={c.root / 'w1'}", f"--config={c.int_config}")),
    ("config_name_unknown", ValueError,
     r"config\.name='ctrl' is not one of controller, paper_controller",
     lambda c: cli.checked_config(_config(name="ctrl"))),
    ("config_proxy_grammar", ValueError, r"config\.proxy: bad proxy name 'sum:naswot'",
     lambda c: entry(main_entry, f"--workdir={c.root / 'w1'}", f"--config={QUICK}",
                     "--config.proxy=sum:naswot")),
    ("config_num_probes_not_whole", ValueError, r"config\.num_probes must be a whole number",
     lambda c: config_lib.validate(_config(num_probes=2.5))),
    ("config_learning_rate_inf", ValueError,
     r"config\.learning_rate must be a finite number, got inf",
     lambda c: config_lib.validate(_config(learning_rate=float("inf")))),
    ("config_gamma_above_1", ValueError, r"config\.gamma must be in \[0, 1\], got 1\.5",
     lambda c: config_lib.validate(_config(gamma=1.5))),
    ("config_budget_percentiles_one", ValueError,
     r"config\.budget_percentiles must be two numbers \(low, high\), got \(50\.0,\)",
     lambda c: config_lib.validate(_config(budget_percentiles=(50.0,)))),
    ("config_budget_percentiles_order", ValueError,
     r"budget_percentiles must satisfy 0 < low <= high <= 100, got \(60\.0, 5\.0\)",
     lambda c: config_lib.validate(_config(budget_percentiles=(60.0, 5.0)))),
    ("config_shards_do_not_split", ValueError,
     r"config\.num_devices=256 must split into config\.num_shards=3 equal shards",
     lambda c: config_lib.validate(_config(num_shards=3))),
    # metatrain/checkpoint.py: the workdir, checked before anything is written.
    ("workdir_is_a_file", ValueError, r"--workdir '.*a_file\.txt' is a file, not a folder",
     lambda c: entry(meta_train, f"--workdir={c.a_file}", f"--config={QUICK}")),
    ("workdir_empty", ValueError, r"--workdir is empty; give the folder of the run",
     lambda c: entry(meta_train, "--workdir=", f"--config={QUICK}")),
    ("workdir_under_a_file", ValueError,
     r"--workdir '.*a_file\.txt/run' cannot be created: '.*a_file\.txt' is not a writable folder",
     lambda c: entry(main_entry, f"--workdir={c.a_file}/run", f"--config={QUICK}")),
    ("workdir_checkpoints_without_config", ValueError,
     r"'.*orphan' holds seed_0 but no config\.json: starting over would overwrite them.*--fresh",
     lambda c: entry(meta_train, f"--workdir={c.orphan}", f"--config={QUICK}")),
    ("workdir_config_json_corrupt", ValueError,
     r"'.*bad_json/config\.json' is not a meta-training config: .*--fresh to start afresh",
     lambda c: entry(meta_train, f"--workdir={c.bad_json}", f"--config={QUICK}")),
    ("main_resume_other_config", ValueError,
     r"holds a run with another config \(num_probes: 10 -> 5\)",
     lambda c: entry(main_entry, f"--workdir={c.workdir}", f"--config={QUICK}",
                     "--config.num_probes=5")),
    ("main_episodes_0", ValueError, r"--episodes must be a whole number >= 1, got 0",
     lambda c: entry(main_entry, f"--workdir={c.root / 'w1'}", f"--config={QUICK}",
                     "--episodes=0")),
    ("main_results_json_is_a_folder", ValueError,
     r"--workdir's results\.json '.*results\.json' is a folder",
     lambda c: (os.makedirs(os.path.join(_copy_of_run(c.root, "w_res"), "results.json"),
                            exist_ok=True),
                entry(main_entry, f"--workdir={c.root / 'w_res'}", f"--config={QUICK}"))),
    ("checkpoint_not_a_workdir", FileNotFoundError,
     r"no meta-training run in '.*a_folder' \(looked for .*a_folder/config\.json\)",
     lambda c: entry(evaluate, "--methods=controller", f"--checkpoint={c.folder}",
                     "--devices=eyeriss")),
    ("checkpoint_config_json_corrupt", ValueError,
     r"'.*bad_json/config\.json' is not a meta-training config",
     lambda c: entry(evaluate, "--methods=controller", f"--checkpoint={c.bad_json}",
                     "--devices=eyeriss")),
    ("checkpoint_config_json_lacks_keys", ValueError,
     r"'.*lacking/config\.json' is not a meta-training config: it lacks the key 'prior'",
     lambda c: entry(sweep, "--methods=controller", f"--checkpoint={c.lacking}",
                     f"--output={c.root / 'sweep.json'}")),
    ("checkpoint_without_checkpoints", FileNotFoundError, r"'.*run' has no checkpoint yet",
     lambda c: entry(evaluate, "--methods=controller", f"--checkpoint={c.workdir}",
                     "--devices=eyeriss")),
    # experiments/cli.py and each command's flags: names, numbers, outputs.
    ("devices_unknown", ValueError,
     r"--devices: unknown 'pixel3'; known: 1080ti_1, .*titan_rtx_256, .*titanx_32",
     lambda c: entry(evaluate, "--devices=pixel3")),
    ("devices_empty", ValueError, r"--devices is empty; give one or more of: 1080ti_1",
     lambda c: entry(evaluate, "--devices=")),
    ("datasets_unknown", ValueError,
     r"--datasets: unknown 'mnist'; known: cifar10, cifar100, ImageNet16-120",
     lambda c: entry(evaluate, "--datasets=cifar10,mnist")),
    ("datasets_twice", ValueError, r"--datasets names 'cifar10' twice",
     lambda c: entry(evaluate, "--datasets=cifar10,cifar10")),
    ("methods_unknown", ValueError, r"--methods: unknown 'rnd'; known: random, rea, lsq",
     lambda c: entry(evaluate, "--methods=rnd")),
    ("methods_empty", ValueError, r"--methods is empty; give one or more of: random, rea",
     lambda c: entry(evaluate, "--methods=")),
    ("methods_twice", ValueError, r"--methods names 'random' twice",
     lambda c: entry(sweep, "--methods=random,random", f"--output={c.root / 's.json'}")),
    ("budgets_not_a_number", ValueError, r"--budgets: 'ten' is not a number",
     lambda c: entry(evaluate, "--budgets=10,ten")),
    ("budgets_0", ValueError, r"--budgets: '0' is outside \(0, 100\]",
     lambda c: entry(evaluate, "--budgets=0")),
    ("budgets_150", ValueError, r"--budgets: '150' is outside \(0, 100\]",
     lambda c: entry(evaluate, "--budgets=150")),
    ("budgets_twice", ValueError, r"--budgets gives 10 twice",
     lambda c: entry(evaluate, "--budgets=10,10")),
    ("budget_ms_negative", ValueError, r"--budget_ms: '-5' is outside \(0, inf\)",
     lambda c: entry(evaluate, "--budget_ms=5,-5")),
    ("budget_ms_nan", ValueError, r"--budget_ms: 'nan' is outside \(0, inf\)",
     lambda c: entry(evaluate, "--budget_ms=nan")),
    ("budget_ms_not_a_number", ValueError, r"--budget_ms: '5ms' is not a number",
     lambda c: entry(evaluate, "--budget_ms=5ms")),
    ("noise_prior_malformed", ValueError, r"noise prior must be a sigma >= 0.*got 'loud'",
     lambda c: entry(evaluate, "--noise_prior=loud")),
    ("noise_prior_decreasing_range", ValueError, r"noise prior must be .*got '0.2:0.1'",
     lambda c: entry(sweep, "--noise_prior=0.2:0.1")),
    ("noise_prior_known_on_a_live_search", ValueError, r"noise prior must be .*got 'known'",
     lambda c: _task_with_noise_prior("known")),
    ("config_num_probes_range_decreasing", ValueError,
     r"config\.num_probes_range must satisfy 1 <= low <= high, got \(20, 3\)",
     lambda c: config_lib.validate(_config(num_probes_range=(20, 3)))),
    ("config_num_probes_range_paper", ValueError,
     r"config\.num_probes_range: the paper controller's history has a fixed K",
     lambda c: config_lib.validate(_config(name="paper_controller", prior="paper",
                                           num_probes_range=(3, 20)))),
    ("config_num_probes_power_negative", ValueError,
     r"config\.num_probes_power must be a finite number >= 0, got -1\.0",
     lambda c: config_lib.validate(_config(num_probes_power=-1.0))),
    ("config_num_probes_power_without_range", ValueError,
     r"config\.num_probes_power weighs the K of config\.num_probes_range",
     lambda c: config_lib.validate(_config(num_probes_range=(), num_probes_power=1.0))),
    ("config_in_context_prior_unknown", ValueError,
     r"config\.in_context_prior='learned' is not one of flat, fitted, fitted_wide",
     lambda c: config_lib.validate(_config(in_context_prior="learned"))),
    ("config_in_context_prior_paper_controller", ValueError,
     r"config\.in_context_prior='fitted' sets where the controller's in-context model "
     r"starts; the 'paper_controller' has none",
     lambda c: config_lib.validate(_config(name="paper_controller", prior="paper",
                                           num_probes_range=(), num_probes_power=0.0,
                                           noise_told_share=0.0, in_context_prior="fitted"))),
    ("config_prior_fitted_weight_above_one", ValueError,
     r"config\.prior_fitted_weight must be a number in \[0, 1\], got 1\.5",
     lambda c: config_lib.validate(_config(prior_fitted_weight=1.5))),
    ("config_prior_fitted_weight_negative", ValueError,
     r"config\.prior_fitted_weight must be a number in \[0, 1\], got -0\.1",
     lambda c: config_lib.validate(_config(prior_fitted_weight=-0.1))),
    ("config_prior_fitted_weight_nan", ValueError,
     r"config\.prior_fitted_weight must be a number in \[0, 1\], got nan",
     lambda c: config_lib.validate(_config(prior_fitted_weight=float("nan")))),
    ("config_prior_fitted_weight_paper_prior", ValueError,
     r"config\.prior_fitted_weight weighs the mixture prior's components; the 'paper' prior",
     lambda c: config_lib.validate(_config(name="paper_controller", prior="paper",
                                           num_probes_range=(), num_probes_power=0.0,
                                           noise_told_share=0.0, prior_fitted_weight=0.25))),
    ("config_episode_minibatches_not_bool", ValueError,
     r"config\.episode_minibatches must be True or False, got 'yes'",
     lambda c: config_lib.validate(_config(episode_minibatches="yes"))),
    ("config_episodes_do_not_split", ValueError,
     r"shards whose 256 episodes split into config\.num_minibatches=3",
     lambda c: config_lib.validate(_config(episode_minibatches=True, num_minibatches=3))),
    ("budget_ms_unknown_device", ValueError,
     r"--budget_ms names device 'pixel3', not among --devices eyeriss",
     lambda c: entry(evaluate, "--devices=eyeriss", "--budget_ms=eyeriss:5,pixel3:4")),
    ("budget_ms_device_missing", ValueError, r"--budget_ms gives no budget for fpga",
     lambda c: entry(evaluate, "--devices=eyeriss,fpga", "--budget_ms=eyeriss:5:7")),
    ("budget_ms_device_twice", ValueError, r"--budget_ms gives device 'eyeriss' twice",
     lambda c: entry(evaluate, "--devices=eyeriss", "--budget_ms=eyeriss:5,eyeriss:6")),
    ("budget_ms_mixed_forms", ValueError, r"--budget_ms mixes per-device entries .* with '7'",
     lambda c: entry(evaluate, "--devices=eyeriss", "--budget_ms=eyeriss:5,7")),
    ("budget_ms_device_without_values", ValueError,
     r"--budget_ms for 'eyeriss': '' is not a number",
     lambda c: entry(evaluate, "--devices=eyeriss", "--budget_ms=eyeriss:")),
    ("budget_below_every_arch_any_cell", ValueError,
     r"1 budget\(s\) below every architecture, nothing evaluated: budget 0\.5 ms on 'fpga' "
     r"is below every architecture \(the fastest takes",
     lambda c: entry(evaluate, "--devices=eyeriss,fpga", "--budget_ms=eyeriss:5,fpga:0.5",
                     "--methods=random,oracle")),
    ("probes_0", ValueError, r"--probes must be a whole number >= 1, got 0",
     lambda c: entry(evaluate, "--probes=0")),
    ("seed_negative", ValueError, r"--seed must be a whole number >= 0, got -1",
     lambda c: entry(evaluate, "--seed=-1")),
    ("noise_negative", ValueError, r"--noise must be a finite number >= 0, got -0\.1",
     lambda c: entry(evaluate, "--noise=-0.1")),
    ("noise_nan", ValueError, r"--noise must be a finite number >= 0, got nan",
     lambda c: entry(evaluate, "--noise=nan")),
    ("noise_inf", ValueError, r"--noise must be a finite number >= 0, got inf",
     lambda c: entry(sweep, "--noise=inf", f"--output={c.root / 's.json'}")),
    ("proxy_unknown_term", ValueError, r"bad proxy name 'rank:naswot\+zico': unknown terms",
     lambda c: entry(evaluate, "--proxy=rank:naswot+zico")),
    ("proxy_files_not_a_pair", ValueError, r"--proxy_files entry 'cifar10' is not dataset:PATH",
     lambda c: entry(evaluate, "--proxy_files=cifar10")),
    ("proxy_files_missing_file", FileNotFoundError,
     r"--proxy_files: '.*nowhere\.npz' does not exist",
     lambda c: entry(evaluate, f"--proxy_files=cifar10:{c.root / 'nowhere.npz'}")),
    ("proxy_dirs_missing", tables.BenchmarkDataError,
     r"proxy folder '.*nowhere' does not exist",
     lambda c: entry(evaluate, f"--proxy_dirs={c.root / 'nowhere'}")),
    ("proxy_files_a_folder", FileNotFoundError, r"--proxy_files: '.*a_folder' is a folder",
     lambda c: entry(evaluate, f"--proxy_files=cifar100:{c.folder}")),
    ("latency_file_missing", tables.BenchmarkDataError, r"file not found: '.*nowhere\.npz'",
     lambda c: entry(evaluate, f"--latency_file={c.root / 'nowhere.npz'}")),
    ("latency_file_a_folder", tables.BenchmarkDataError, r"'.*a_folder' is a folder, not a file",
     lambda c: entry(evaluate, f"--latency_file={c.folder}")),
    ("latency_file_not_npz", tables.BenchmarkDataError, r"cannot read '.*garbage\.npz' as \.npz",
     lambda c: entry(evaluate, f"--latency_file={c.garbage}")),
    ("latency_file_short", tables.BenchmarkDataError,
     r"'fake' in .*short\.npz: expected 15625 values \(one per architecture\), got shape \(10,\)",
     lambda c: entry(evaluate, f"--latency_file={c.short}")),
    ("latency_file_negative", tables.BenchmarkDataError, r"'fake' in .*15625 latencies <= 0",
     lambda c: entry(evaluate, f"--latency_file={c.negative}")),
    ("sweep_values_empty", ValueError, r"--values is empty; give values of sigma",
     lambda c: entry(sweep, "--sweep=noise", "--values=")),
    ("sweep_values_twice", ValueError, r"--values names 3 twice",
     lambda c: entry(sweep, "--values=3,3")),
    ("sweep_values_0_probes", ValueError,
     r"--values 0,5 for --sweep=probes: give one or more whole numbers >= 1",
     lambda c: entry(sweep, "--values=0,5")),
    ("sweep_values_not_numbers", ValueError, r"--values for --sweep=probes must be ints",
     lambda c: entry(sweep, "--values=3,five")),
    ("sweep_noise_negative", ValueError,
     r"--values -0\.1 for --sweep=noise: give one or more numbers in \[0, 5\)",
     lambda c: entry(sweep, "--sweep=noise", "--values=-0.1")),
    ("sweep_output_empty", ValueError, r"--output is empty: the sweep writes its table there",
     lambda c: entry(sweep, "--output=")),
    ("sweep_output_folder", ValueError, r"--output '.*a_folder' is a folder",
     lambda c: entry(sweep, f"--output={c.folder}")),
    ("sweep_episodes_0", ValueError, r"--episodes must be a whole number >= 1, got 0",
     lambda c: entry(sweep, "--episodes=0", f"--output={c.root / 's.json'}")),
    ("sweep_devices_unknown", ValueError, r"--devices: unknown 'pixel3'; known: 1080ti_1",
     lambda c: entry(sweep, "--devices=pixel3", f"--output={c.root / 's.json'}")),
    ("sweep_datasets_unknown", ValueError, r"--datasets: unknown 'mnist'; known: cifar10",
     lambda c: entry(sweep, "--datasets=mnist", f"--output={c.root / 's.json'}")),
    ("search_budget_negative", ValueError, r"--budget_ms must be a finite number > 0, got -1",
     lambda c: entry(search, "--budget_ms=-1", f"--device=table:{c.latency}:fake")),
    ("search_budget_nan", ValueError, r"--budget_ms must be a finite number > 0, got nan",
     lambda c: entry(search, "--budget_ms=nan", f"--device=table:{c.latency}:fake")),
    ("search_probes_0", ValueError, r"--probes must be a whole number >= 1, got 0",
     lambda c: entry(search, "--budget_ms=3", "--probes=0")),
    ("search_seed_negative", ValueError, r"--seed must be a whole number >= 0, got -2",
     lambda c: entry(search, "--budget_ms=3", "--seed=-2")),
    ("search_output_folder", ValueError, r"--output '.*a_folder' is a folder",
     lambda c: entry(search, "--budget_ms=3", f"--output={c.folder}")),
    ("search_host_channels_0", ValueError, r"--host_channels must be a whole number >= 1, got 0",
     lambda c: entry(search, "--budget_ms=3", "--host_channels=0")),
    ("search_device_spec", session.SearchError,
     r"--device='gpu': expected host, onnxruntime, command:'\.\.\. \{model\} \.\.\.', "
     r"table:PATH\.npz:NAME or table:NAME",
     lambda c: entry(search, "--budget_ms=3", "--device=gpu")),
    ("search_command_without_model", session.SearchError,
     r"the command needs \{model\} where the exported model's path goes",
     lambda c: entry(search, "--budget_ms=3", "--device=command:python3 time_onnx.py m.onnx")),
    ("search_threads_0", ValueError, r"--threads must be a whole number >= 1, got 0",
     lambda c: entry(search, "--budget_ms=3", "--device=onnxruntime", "--threads=0")),
    ("search_command_timeout_0", ValueError, r"--command_timeout_s must be a finite number > 0",
     lambda c: entry(search, "--budget_ms=3", "--device=command:t {model}",
                     "--command_timeout_s=0")),
    ("search_store_folder", ValueError, r"--store '.*a_folder' is a folder",
     lambda c: entry(search, "--budget_ms=3", "--device=onnxruntime", f"--store={c.folder}")),
    ("search_store_not_sqlite", ValueError, r"--store '.*a_file\.txt' is not a measurement store",
     lambda c: entry(search, "--budget_ms=3", "--device=onnxruntime", f"--store={c.a_file}")),
    ("export_bad_arch", ValueError, r"not a NAS-Bench-201 architecture string: 'conv\|conv'",
     lambda c: entry(export_entry, "--arch=conv|conv", f"--output={c.root}/m.onnx")),
    ("export_arch_out_of_range", IndexError, r"architecture index 15625 outside \[0, 15625\)",
     lambda c: entry(export_entry, "--arch=15625", f"--output={c.root}/m.onnx")),
    ("export_output_folder", ValueError, r"--output '.*a_folder' is a folder",
     lambda c: entry(export_entry, "--arch=3", f"--output={c.folder}")),
    ("export_image_size_2", ValueError, r"--image_size must be a whole number >= 4, got 2",
     lambda c: entry(export_entry, "--arch=3", "--image_size=2", f"--output={c.root}/m.onnx")),
    ("store_missing", ValueError, r"no measurement store at '.*nothing\.sqlite'",
     lambda c: entry(store_entry, f"--store={c.root}/nothing.sqlite")),
    ("search_device_unknown_name", session.SearchError,
     r"no device 'pixel3' in .*fake\.npz; it has fake",
     lambda c: entry(search, "--budget_ms=3", f"--device=table:{c.latency}:pixel3")),
    ("search_budget_below_table", session.SearchError,
     r"budget 0\.5 ms is below every architecture on 'fake': the fastest, index \d+ .*1 ms",
     lambda c: entry(search, "--budget_ms=0.5", f"--device=table:{c.latency}:fake")),
    ("search_method_unknown", session.SearchError,
     r"method 'rnd' is not available: methods: unknown 'rnd'; known: random",
     lambda c: entry(search, "--budget_ms=3", "--method=rnd")),
    ("search_method_reference", session.SearchError,
     r"'oracle' is a reference that reads the whole latency table, not a search method",
     lambda c: entry(search, "--budget_ms=3", "--method=oracle")),
    ("host_study_num_archs_0", ValueError, r"--num_archs must be a whole number >= 1, got 0",
     lambda c: entry(host_study, f"--out_dir={c.root / 'hs'}", "--num_archs=0")),
    ("host_study_num_archs_above_space", ValueError,
     r"--num_archs must be at most 15625 \(the whole space\), got 20000",
     lambda c: entry(host_study, f"--out_dir={c.root / 'hs'}", "--num_archs=20000")),
    ("host_study_seeds_0", ValueError, r"--seeds must be a whole number >= 1, got 0",
     lambda c: entry(host_study, f"--out_dir={c.root / 'hs'}", "--seeds=0")),
    ("host_study_late_after_negative", ValueError,
     r"--late_after_s must be a number of seconds >= 0, got -1",
     lambda c: entry(host_study, f"--out_dir={c.root / 'hs'}", "--late_after_s=-1")),
    ("host_study_out_dir_a_file", ValueError, r"--out_dir '.*a_file\.txt' is a file, not a folder",
     lambda c: entry(host_study, f"--out_dir={c.a_file}")),
    ("host_study_methods_unknown", ValueError, r"--methods: unknown 'rnd'",
     lambda c: entry(host_study, f"--out_dir={c.root / 'hs'}", "--methods=lsq,rnd")),
    ("host_study_nothing_can_run", ValueError,
     r"none of --methods \(controller\) can run here; nothing to study",
     lambda c: entry(host_study, f"--out_dir={c.root / 'hs'}", "--methods=controller")),
    ("host_study_broken_checkpoint", session.SearchError,
     r"method 'controller' is not available: no meta-training run in '.*a_folder'",
     lambda c: entry(host_study, f"--out_dir={c.root / 'hs'}", "--methods=controller,lsq",
                     f"--checkpoint={c.folder}")),
    ("host_study_warmup_negative", ValueError, r"--warmup must be a whole number >= 0, got -1",
     lambda c: entry(host_study, f"--out_dir={c.root / 'hs'}", "--warmup=-1")),
    ("proxy_study_budgets_0", ValueError, r"--budgets: '0' is outside \(0, 100\]",
     lambda c: entry(proxy_study, "--budgets=0,10")),
    ("proxy_study_plot_folder", ValueError, r"--plot '.*a_folder' is a folder",
     lambda c: entry(proxy_study, f"--plot={c.folder}")),
    ("proxy_study_top_0", ValueError, r"--top must be a whole number >= 1, got 0",
     lambda c: entry(proxy_study, "--top=0")),
    ("answer_study_validation_device", ValueError,
     r"--devices: eyeriss not a training device; the study chooses on the training devices only",
     lambda c: entry(answer_study, "--devices=eyeriss,pixel2", f"--output={c.root / 'a.json'}")),
    ("answer_study_fallback_above_1", ValueError, r"--fallbacks: '1\.5' is outside \(0, 1\]",
     lambda c: entry(answer_study, "--fallbacks=0.95,1.5", f"--output={c.root / 'a.json'}")),
    ("answer_study_without_the_old_rule", ValueError,
     r"--fallbacks must include the rule before the study, 0\.95",
     lambda c: entry(answer_study, "--fallbacks=0.7", f"--output={c.root / 'a.json'}")),
    ("answer_study_probes_fraction", ValueError, r"num_probes must be a whole number",
     lambda c: entry(answer_study, "--probes=2.5", f"--output={c.root / 'a.json'}")),
    ("device_coverage_num_samples_1", ValueError,
     r"--num_samples must be a whole number >= 2, got 1",
     lambda c: entry(device_coverage, "--num_samples=1")),
    ("device_coverage_output_folder", ValueError, r"--output '.*a_folder' is a folder",
     lambda c: entry(device_coverage, f"--output={c.folder}")),
    # search/interface.py: what a method is told and what it may touch.
    ("task_proxy_shape", ValueError,
     r"task proxy must hold one value per architecture, shape \(15625,\), got shape \(10,\)",
     lambda c: _task(proxy=np.zeros(10))),
    ("task_proxy_nan", ValueError, r"task proxy has 1 non-finite values, first at index 7",
     lambda c: _task(proxy=np.where(np.arange(N) == 7, np.nan, 0.0))),
    ("task_budget_nan", ValueError, r"budget_ms must be a finite number of ms > 0, got nan",
     lambda c: _task(budget_ms=float("nan"))),
    ("task_budget_inf", ValueError, r"budget_ms must be a finite number of ms > 0, got inf",
     lambda c: _task(budget_ms=float("inf"))),
    ("task_budget_string", ValueError, r"budget_ms must be a finite number of ms > 0, got '5'",
     lambda c: _task(budget_ms="5")),
    ("task_num_probes_fraction", ValueError, r"num_probes must be a whole number in \[1, 15625\] \(the size of the space\), got 2\.5",
     lambda c: _task(num_probes=2.5)),
    ("handle_is_read_only", AttributeError, r"a probe handle is read-only",
     lambda c: setattr(interface.ProbeBudget(TableDevice("toy", np.ones(N)), 1).handle,
                       "measure", print)),
    ("nan_latency", DeviceError, r"device 'odd' returned nan ms for architecture 3",
     lambda c: _measure(float("nan"))),
    ("string_latency", DeviceError, r"device 'odd' returned 'fast' for architecture 3, not a "
     r"latency in ms", lambda c: _measure("fast")),
    ("method_answer_string", ValueError,
     r"the method returned 'best', not an architecture index in \[0, 15625\) or None",
     lambda c: _episode(lambda task, target, rng: "best")),
    ("method_answer_out_of_range", ValueError, r"the method returned 15625, not an architecture",
     lambda c: _episode(lambda task, target, rng: N)),
    ("method_answer_float_in_search", ValueError, r"the method returned 3\.0, not an architecture",
     lambda c: _search(lambda task, target, rng: 3.0)),
    ("search_catches_the_probe_limit", interface.ProbeLimitExceeded,
     r"asked for more than 2 probes \(and went on after being refused\)",
     lambda c: _search(_greedy)),
    ("probe_budget_not_a_device", TypeError,
     r"array\(\[1\., 1\.\]\) is not a device: it needs a `name` and `measure\(index\)`",
     lambda c: interface.ProbeBudget(np.ones(2), 1)),
    ("table_budget_nan", ValueError, r"budget_ms must be a finite number of ms > 0, got nan",
     lambda c: session.check_table_budget("toy", np.ones(N), float("nan"))),
    ("measure_out_of_range", IndexError, r"architecture index 15625 outside \[0, 15625\)",
     lambda c: interface.ProbeBudget(TableDevice("toy", np.ones(N)), 1).handle.measure(N)),
    # search/protocol.py: the grid, checked whole before any cell.
    ("budget_negative", ValueError, r"budget_ms must be a finite number of ms > 0, got -1",
     lambda c: protocol.Budget(-1)),
    ("percentile_101", ValueError, r"a budget percentile must be a number in \(0, 100\], got 101",
     lambda c: protocol.percentile_budget(np.ones(N), 101)),
    ("evaluate_episodes_0", ValueError, r"episodes must be a whole number >= 1, got 0",
     lambda c: _evaluate(tables.load_benchmark(), num_episodes=0)),
    ("evaluate_noise_negative", ValueError, r"noise sigma must be a number in \[0, 5\), got -1",
     lambda c: _evaluate(tables.load_benchmark(), noise=-1.0)),
    ("evaluate_seed_negative", ValueError, r"seed must be a whole number >= 0, got -3",
     lambda c: _evaluate(tables.load_benchmark(), seed=-3)),
    ("evaluate_dataset_unknown", KeyError,
     r"no test accuracy for dataset 'mnist'; known: \['ImageNet16-120', 'cifar10', 'cifar100'\]",
     lambda c: _evaluate(tables.load_benchmark(), datasets=["mnist"])),
    ("evaluate_device_twice", ValueError, r"devices names 'eyeriss' twice",
     lambda c: _evaluate(tables.load_benchmark(), devices=["eyeriss", "eyeriss"])),
    ("evaluate_no_method", ValueError, r"methods is empty",
     lambda c: _evaluate(tables.load_benchmark(), methods={})),
    ("evaluate_method_not_a_list", ValueError,
     r"method 'random': expected a list of methods \(one per seed; registry\.make_methods\)",
     lambda c: _evaluate(tables.load_benchmark(), methods={"random": baselines.random_search})),
    ("evaluate_reference_unknown", ValueError,
     r"'best' is not a reference \(oracle, proxy_oracle\)",
     lambda c: _evaluate(tables.load_benchmark(), methods={"best": None})),
    ("evaluate_budget_twice", ValueError,
     r"device 'eyeriss' needs one or more budgets, each given once; got 5 ms, 5 ms",
     lambda c: _evaluate(tables.load_benchmark(),
                         budgets=lambda d: [protocol.Budget(5.0), protocol.Budget(5.0)])),
    ("evaluate_budget_below_second_device", ValueError,
     r"1 budget\(s\) below every architecture, nothing evaluated: budget 0\.1 ms on 'fpga'",
     lambda c: _evaluate(tables.load_benchmark(), devices=["eyeriss", "fpga"],
                         budgets=lambda d: [protocol.Budget(5.0 if d == "eyeriss" else 0.1)])),
    # search/registry.py and benchmark/tables.py.
    ("registry_unknown", ValueError, r"methods: unknown 'foo'; known: random, rea, lsq",
     lambda c: registry.check_names(["random", "foo"])),
    ("registry_twice", ValueError, r"methods names 'rea' twice",
     lambda c: registry.check_names(["rea", "rea"])),
    ("registry_none", ValueError, r"methods is empty; give one or more of: random",
     lambda c: registry.check_names([])),
    ("select_devices_twice", ValueError, r"devices names 'fpga' twice",
     lambda c: tables.load_benchmark().select_devices(["fpga", "eyeriss", "fpga"])),
    ("select_devices_unknown", KeyError, r"unknown device 'pixel3'; known devices: 1080ti_1",
     lambda c: tables.load_benchmark().select_devices(["pixel3"])),
    # Silent before: now refused (tests/integrity_test.py has the attacks and the resume).
    ("latency_table_bool", tables.BenchmarkDataError,
     r"'fake' in .*bool\.npz: values of type bool are not numbers",
     lambda c: tables.load_latency_file(_npz(c, "bool", fake=np.ones(N, bool)))),
    ("latency_table_other_unit", tables.BenchmarkDataError,
     r"the fastest latency is 1e-300 ms, below 1e-06 ms \(a nanosecond\): are these in "
     r"another unit",
     lambda c: tables.load_latency_file(_npz(c, "tiny", fake=np.full(N, 1e-300)))),
    ("proxy_file_constant", tables.BenchmarkDataError,
     r"proxy 'naswot' in .*constant\.npz' is 3 for every architecture: a constant proxy",
     lambda c: tables.load_proxy_file(_npz(c, "constant", **{
         name: np.full(N, 3.0) for name in tables.PROXY_NAMES}))),
    ("evaluate_noise_50", ValueError, r"noise sigma must be a number in \[0, 5\), got 50\.0",
     lambda c: entry(evaluate, "--noise=50")),
    ("evaluate_output_is_the_latency_file", ValueError,
     r"--output '.*fake\.npz' is an input of this command",
     lambda c: entry(evaluate, f"--latency_file={c.latency}", f"--output={c.latency}")),
    ("search_probes_past_the_space", ValueError,
     r"num_probes must be a whole number in \[1, 15625\] \(the size of the space\), got 20000",
     lambda c: entry(search, "--device=table:eyeriss", "--budget_ms=5", "--probes=20000")),
    ("search_output_png", ValueError,
     r"--output '.*r\.png' is the JSON record, and the plot goes beside it",
     lambda c: entry(search, "--device=table:eyeriss", "--budget_ms=5",
                     f"--output={c.root / 'r.png'}")),
    ("metrics_cut_short", ValueError, r"metrics\.jsonl: line 1 is not JSON",
     lambda c: checkpoint.read_metrics(_cut_metrics(c), 0)),
    ("workdir_in_use", ValueError, r"is in use by another run \(pid \d+",
     lambda c: _twice_locked(c)),
    ("config_seed_2_to_the_64", ValueError,
     r"config\.seed must be below 2\*\*31 - config\.num_seeds, got 18446744073709551616",
     lambda c: entry(meta_train, f"--workdir={c.root / 'seed64'}", f"--config={QUICK}",
                     "--config.seed=18446744073709551616")),
    ("config_json_edited_shapes", ValueError,
     r"the checkpoint '.*checkpoint\.msgpack' holds arrays of other shapes than "
     r".*config\.json describes \(was it edited\?\)", lambda c: _restore_other_shapes(c)),
    ("search_host_image_size_1", ValueError, r"--host_image_size must be a whole number >= 4, "
     r"got 1", lambda c: entry(search, "--budget_ms=3", "--host_image_size=1")),
    ("check_proxies_num_archs_0", ValueError,
     r"--num_archs must be a whole number in \[2, 15625\] \(a rank correlation needs two\), "
     r"got 0", lambda c: check_proxies.sample_archs(0, 0)),
    ("score_proxies_chunk_0", ValueError, r"--chunk must be a whole number >= 1, got 0",
     lambda c: _score_proxies(c, chunk=0)),
    ("score_proxies_num_inits_0", ValueError, r"--num_inits must be a whole number >= 1, got 0",
     lambda c: _score_proxies(c, num_inits=0)),
    ("score_proxies_output_folder", ValueError, r"--output '.*a_folder' is a folder",
     lambda c: _score_proxies(c, output=c.folder)),
    ("score_proxies_output_is_the_images", ValueError,
     r"--output '.*images\.npz' is an input of this command",
     lambda c: _score_proxies(c, output=str(c.root / "images.npz"))),
    ("score_proxies_gzip_named_npz", tables.BenchmarkDataError,
     r"cannot read '.*gz\.npz' as \.npz: it is not a zip archive of arrays",
     lambda c: score_proxies.load_images(_gzip_npz(c))),
    ("score_proxies_stale_partial", AssertionError, r"started afresh",
     lambda c: _stale_partial(c)),
    ("isolated_method_not_picklable", ValueError,
     r"method 'local' cannot be sent to a process of its own",
     lambda c: _evaluate(tables.load_benchmark(),
                         methods={"local": [lambda task, target, rng: None]})),
]


def _npz(c, stem, **arrays):
  path = str(c.root / f"{stem}.npz")
  np.savez(path, **arrays)
  return path


def _score_proxies(c, **changes):
  """score_proxies' flag checks with good values but `changes`."""
  values = dict(num_inits=1, batch_size=2, save_every=100, chunk=25, vmap_size=1, az_batch=2,
                seed=0, output=str(c.root / "scores.npz"),
                images=_npz(c, "images", images=np.zeros((2, 3, 8, 8))))
  return score_proxies.check_flags(types.SimpleNamespace(**{**values, **changes}))


def _restore_other_shapes(c):
  """A checkpoint of 3 parameters read for a config that now describes 4."""
  workdir = _copy_of_run(c.root, "edited")
  state = lambda size: ppo.TrainState(params={"w": np.ones(size, np.float32)}, opt_state=(),
                                      step=np.int32(1), key=jax.random.key(0))
  checkpoint.save(workdir, 0, state(3))
  return checkpoint.restore(workdir, 0, state(4))


def _gzip_npz(c):
  import gzip  # pylint: disable=import-outside-toplevel
  path = c.root / "gz.npz"
  path.write_bytes(gzip.compress(b"images"))
  return str(path)


def _stale_partial(c):
  """A partial file of another dataset is not resumed (an AssertionError says it was)."""
  indices = np.arange(3)
  partial = str(c.root / "stale.npz.partial.npz")
  score_proxies._save(partial, index=indices, seed=0, num_inits=1, dataset="cifar100",
                      images_crc32=0, naswot=np.ones(3))
  with mock.patch.object(score_proxies.logging, "warning") as warning:
    scores = score_proxies._resume(partial, indices, 0, 1, ("naswot",),
                                   inputs={"dataset": "cifar10", "images_crc32": 0})
  assert np.isnan(scores["naswot"]).all() and warning.called
  raise AssertionError("started afresh")


def _cut_metrics(c):
  workdir = str(c.root / "cut_metrics")
  checkpoint.open_run(workdir, quick.get_config(), "test")
  with open(os.path.join(checkpoint.seed_dir(workdir, 0), checkpoint.METRICS), "w") as f:
    f.write('{"step": 1, "eval_sc\n{"step": 2}\n')
  return workdir


def _twice_locked(c):
  with checkpoint.locked(str(c.root / "locked")):
    with checkpoint.locked(str(c.root / "locked")):
      pass


@pytest.mark.parametrize("exception, pattern, call", [row[1:] for row in ROWS],
                         ids=[row[0] for row in ROWS])
def test_bad_input(ctx, exception, pattern, call):
  with pytest.raises(exception) as error:
    call(ctx)
  assert re.search(pattern, cli.message(error.value)), cli.message(error.value)


def test_table_ids_are_unique():
  ids = [row[0] for row in ROWS]
  assert len(ids) == len(set(ids))


def test_refused_resume_leaves_the_workdir_as_it_was(ctx):
  path = os.path.join(ctx.workdir, checkpoint.CONFIG)
  before = open(path).read()
  with pytest.raises(ValueError, match="another config"):
    checkpoint.open_run(ctx.workdir, _config(seed=1, hidden_size=32), "test")
  assert open(path).read() == before
  assert checkpoint.open_run(_copy_of_run(ctx.root, "w_fresh"), _config(seed=1), "test",
                             fresh=True) is False  # --fresh starts afresh


def test_metrics_are_truncated_on_resume(tmp_path):
  """A resumed run replays the updates after its checkpoint: their old lines go first."""
  for step in range(1, 6):
    os.makedirs(checkpoint.seed_dir(str(tmp_path), 0), exist_ok=True)
    checkpoint.append_metrics(str(tmp_path), 0, {"step": step})
  checkpoint.truncate_metrics(str(tmp_path), 0, 3)
  assert [m["step"] for m in checkpoint.read_metrics(str(tmp_path), 0)] == [1, 2, 3]


@pytest.mark.parametrize("method", [baselines.random_search, baselines.regularized_evolution])
def test_search_larger_than_the_space_returns(method):
  """K = 15,625 (the most K may be) with a method that never repeats: it stops when the
  space is exhausted."""
  latency = np.linspace(1.0, 2.0, N)
  task = _task(budget_ms=1.5, num_probes=N, proxy=np.arange(N, dtype=np.float64))
  budgeted = interface.ProbeBudget(TableDevice("toy", latency), task.num_probes)
  answer = method(task, budgeted.handle, np.random.default_rng(0))
  assert len({p.index for p in budgeted.probes}) == len(budgeted.probes) == N
  assert answer == int(np.flatnonzero(latency <= 1.5).max())


def test_notes_when_results_would_be_replaced_or_ignored(ctx, capsys):
  """Replacing results, deleting a run (--fresh) or ignoring a flag is said, not silent."""
  existing = ctx.root / "old.json"
  existing.write_text("{}")
  with pytest.raises(ValueError, match="--episodes"):
    entry(evaluate, f"--output={existing}", f"--checkpoint={ctx.workdir}", "--methods=lsq",
          "--episodes=0")
  with pytest.raises(WorkStarted):  # every input fine: it gets as far as the work
    entry(evaluate, f"--output={existing}", f"--checkpoint={ctx.workdir}", "--methods=lsq",
          "--devices=eyeriss", "--datasets=cifar10")
  workdir = _copy_of_run(ctx.root, "w_note")
  with pytest.raises(WorkStarted):
    entry(meta_train, f"--workdir={workdir}", f"--config={QUICK}", "--config.seed=3", "--fresh")
  out = capsys.readouterr().out
  assert f"note: --fresh: the run in {workdir} (its config, checkpoints and metrics) will be " \
      "deleted" in out
  assert f"note: {existing} exists and will be replaced when this run finishes" in out
  assert "note: --checkpoint" in out and "is not used: none of --methods (lsq)" in out
  assert existing.read_text() == "{}"


FLAG_ERRORS = {  # command, its arguments, the one line's pattern
    "config_key_unknown": ("experiments.meta_train", ["--config.nonkey=3"],
                           r"--config\.nonkey=3: the config has no key 'nonkey'"),
    "config_key_typo": ("experiments.meta_train", ["--config.num_devicez=1024"],
                        r"--config\.num_devicez=1024: the config has no key 'num_devicez'; "
                        r"did you mean 'num_devices'\? \(--help lists the keys"),
    "config_file_syntax": ("experiments.main", ["--config={syntax_config}"],
                           r"cannot load the flags: SyntaxError"),
    "devices_twice": ("experiments.evaluate", ["--devices=fpga,fpga"],
                      r"--devices names 'fpga' twice"),
    "config_file_exits": ("experiments.meta_train", ["--config={exit_config}"],
                          r"the --config file ended the program \(sys\.exit\) while it was "
                          r"loaded; nothing was run"),
    "config_file_raises": ("experiments.meta_train", ["--config={raising_config}"],
                           r"the --config file raised RuntimeError: no config here"),
}
# Run as real commands: a flag error and an error of `main`, each through `cli.run`.
FLAG_ERRORS_IN_A_PROCESS = ("config_key_typo", "devices_twice")


def _flag_error_argv(files, name):
  command, args = FLAG_ERRORS[name][:2]
  workdir = [] if command == "experiments.evaluate" else [f"--workdir={files.root / 'w2'}"]
  return [command, *workdir, *(a.format(**vars(files)) for a in args)]


def _assert_one_error_line(name, code, stderr):
  assert code == 2, (name, stderr)
  assert "Traceback" not in stderr, (name, stderr)
  lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1 and re.search(FLAG_ERRORS[name][2], lines[0]), (name, stderr)
  assert "get_config()" not in lines[0], (name, stderr)  # no advice meant for a broken file


@pytest.mark.parametrize("name", sorted(set(FLAG_ERRORS) - set(FLAG_ERRORS_IN_A_PROCESS)))
def test_flag_definition_and_parsing_errors_in_one_line(files, name, capsys):
  """ml_collections raises while flags are defined or parsed: `cli.run`'s guard says it in
  one line. In-process, the command's flags defined and parsed on a FlagValues of its own,
  each step in the guard as `cli.run` does (test_..._in_a_process: the real commands)."""
  argv = _flag_error_argv(files, name)
  module = importlib.import_module(argv[0])
  fv = flags.FlagValues()
  with mock.patch.object(sys, "argv", argv), pytest.raises(SystemExit) as stop:
    with cli._flag_errors(argv):  # pylint: disable=protected-access
      module.define_flags(fv)
    with cli._flag_errors(argv):  # pylint: disable=protected-access
      fv(argv)
  _assert_one_error_line(name, stop.value.code, capsys.readouterr().err)


_IN_A_PROCESS: dict = {}  # name -> its running command, once started


def _start_in_a_process(files, data_dir) -> None:
  env = {**os.environ, tables.DATA_DIR_ENV: data_dir,
         "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
  for name in FLAG_ERRORS_IN_A_PROCESS:
    if name not in _IN_A_PROCESS:
      _IN_A_PROCESS[name] = early.start(
          [sys.executable, "-m", *_flag_error_argv(files, name)], cwd=REPO, env=env)


def start_early(selected=None):
  """The real commands of test_flag_and_main_errors_in_one_line_in_a_process start once the
  tests are collected (conftest.py), beside the other tests. Their rows name no file, so a
  folder of their own stands in for `files`; a row that names one starts with its test."""
  data_dir = os.environ.get(tables.DATA_DIR_ENV)
  if ((selected is not None
       and "test_flag_and_main_errors_in_one_line_in_a_process" not in selected)
      or not data_dir or not os.path.isdir(data_dir)):
    return
  root = pathlib.Path(tempfile.mkdtemp(prefix="hwnas_bad_inputs_"))
  atexit.register(shutil.rmtree, root, True)
  try:
    _start_in_a_process(types.SimpleNamespace(root=root, data_dir=data_dir), data_dir)
  except KeyError:  # a row's argument names a file of the `files` fixture
    pass


def test_flag_and_main_errors_in_one_line_in_a_process(files, data_dir):
  """The real commands, both at once: exit status 2 and one line, no traceback."""
  _start_in_a_process(files, data_dir)  # those not started early
  for name in FLAG_ERRORS_IN_A_PROCESS:
    run = early.finish(_IN_A_PROCESS[name], timeout=240)
    _assert_one_error_line(name, run.returncode, run.stderr)
