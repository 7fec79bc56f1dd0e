"""A harness no method can cheat: the six attacks of hostile methods, each refused.

`hwnas_jax.search.cheaters` holds methods written to see more than their K probes (the
closure of `measure`, the caller's frames, the garbage collector's objects), to be judged
by a budget of their own (the frozen task), to write the shared table, or to forge the
probe record. Run as the harness runs every method by default, in a process of its own,
each finds nothing or changes nothing on the harness's side and scores 0; where an attack
also works in-process, the in-process run shows that the attack is real. Small hand-made
tables: no bundle needed, one worker process per method (about a second each).
"""

import time

import numpy as np
import pytest

from hwnas_jax.benchmark import searchspace
from hwnas_jax.benchmark import tables
from hwnas_jax.benchmark.tables import Benchmark
from hwnas_jax.devices.table import TableDevice
from hwnas_jax.search import baselines
from hwnas_jax.search import cheaters
from hwnas_jax.search import interface
from hwnas_jax.search import isolation
from hwnas_jax.search import protocol
from hwnas_jax.search import session

N = searchspace.NUM_ARCHS
PROXY = "paper"


def _benchmark():
  """Latency rises with the index, and so does the proxy: the best proxy within a budget
  at the 10th percentile is an architecture the honest methods rarely probe."""
  rng = np.random.default_rng(0)
  ramp = np.linspace(0.0, 1.0, N)
  proxies = {"naswot": ramp + 0.01 * rng.normal(size=N), "logsynflow": ramp,
             "skip": rng.uniform(size=N)}
  latency = tables.check_table("toy", 1.0 + ramp, positive=True)
  return Benchmark(latency_ms={"toy": latency}, test_accuracy={"cifar10": 50 + 50 * ramp},
                   proxies={"cifar10": proxies})


def _scores(methods, isolated, episodes=2):
  bench = _benchmark()
  results = protocol.evaluate(
      bench, {name: [method] for name, method in methods.items()}, ["toy"], ["cifar10"],
      lambda device: [protocol.percentile_budget(bench.latency(device), 10)], num_probes=3,
      num_episodes=episodes, seed=0, proxy=PROXY, isolated=isolated)
  return {row["method"]: row["mean_accuracy"] for row in results["rows"]}


READERS = {name: cheaters.ATTACKS[name] for name in ("closure", "frames", "heap", "all")}


@pytest.fixture(scope="module", autouse=True)
def _end_method_processes():
  """The method processes started here end with this module, not with the test run."""
  yield
  isolation.close_all()


@pytest.fixture(scope="module")
def isolated_scores():
  """Every attack of cheaters.ATTACKS but probe_past_budget, run by the default harness once."""
  methods = {name: m for name, m in cheaters.ATTACKS.items() if name != "probe_past_budget"}
  return _scores(methods, isolated=True)


def test_readers_find_the_table_in_process():
  """Attacks 1, 2 and 6 are real: in one process they read the table and score."""
  scores = _scores(READERS, isolated=False)
  assert all(score > 50 for score in scores.values()), scores


@pytest.mark.parametrize("attack", sorted(READERS))
def test_readers_find_nothing_isolated(isolated_scores, attack):
  """Attacks 1, 2, 6 (and all at once): nothing to read in the method's own process."""
  assert isolated_scores[attack] == 0.0


@pytest.mark.parametrize("isolated", [True, False])
def test_frozen_task_budget_is_the_harness(isolated_scores, isolated):
  """Attack 3: a budget raised on the method's task does not make its answer valid."""
  scores = isolated_scores if isolated else _scores({"frozen_task": cheaters.raise_budget},
                                                    isolated=False)
  assert scores["frozen_task"] == 0.0


def test_task_is_frozen_and_its_proxy_read_only():
  task = interface.Task("cifar10", 1.0, 2, np.ones(N))
  with pytest.raises(ValueError):
    task.proxy.setflags(write=True)


def test_tables_cannot_be_made_writable():
  """Attack 4: a loaded table (and the harness's copy of any table) stays as loaded."""
  table = tables.check_table("toy", np.ones(N))
  with pytest.raises(ValueError):
    table.setflags(write=True)
  assert tables.frozen(table) is table
  copy = tables.frozen(np.ones(N))
  with pytest.raises(ValueError):
    copy.setflags(write=True)


@pytest.mark.parametrize("isolated", [True, False])
def test_table_write_changes_nothing(isolated_scores, isolated):
  """Attack 4: the cheater's writes reach no table of the harness; later cells see it whole."""
  bench = _benchmark()
  before = bench.latency("toy").copy()
  scores = isolated_scores if isolated else _scores({"table_write": cheaters.write_table},
                                                    isolated=False)
  assert scores["table_write"] == 0.0  # the best proxy is over budget by the true table
  np.testing.assert_array_equal(bench.latency("toy"), before)


def _search(method, isolated):
  latency = _benchmark().latency("toy")
  task = interface.Task("cifar10", float(np.percentile(latency, 10)), 3,
                        _benchmark().proxy("cifar10", PROXY))
  return session.run_search(TableDevice("toy", latency), method, task, 0, isolated=isolated)


@pytest.mark.parametrize("isolated", [True, False])
def test_forged_record_is_caught(isolated_scores, isolated):
  """Attack 5: a made-up probe in the record; `evaluate` and `run_search` judge the true
  latency, and isolated the record is out of reach."""
  if isolated:
    assert isolated_scores["forged_record"] == 0.0
  else:
    assert _scores({"forged_record": cheaters.forge_record}, isolated=False)[
        "forged_record"] == 0.0
  assert not _search(cheaters.forge_record, isolated)["valid"]
  assert not _search(cheaters.raise_budget, isolated)["valid"]


class _CountingDevice(TableDevice):
  calls = 0

  def measure(self, index):
    type(self).calls += 1
    return super().measure(index)


@pytest.mark.parametrize("isolated", [True, False])
def test_budget_of_the_harness_refuses_probe_k_plus_one(isolated):
  """Attack 1 on the budget: a cleared record and a raised K give no extra probe isolated;
  in-process the method reaches them, and still the episode is an error, not a score."""
  device = _CountingDevice("toy", _benchmark().latency("toy"))
  _CountingDevice.calls = 0
  task = interface.Task("cifar10", 1.5, 3, np.ones(N))
  budget = interface.ProbeBudget(device, task.num_probes)
  isolation.Runner(isolated).run(cheaters.probe_past_budget, task, budget,
                                 np.random.default_rng(0))
  if isolated:
    assert _CountingDevice.calls == 3 and budget.exceeded and len(budget.probes) == 3
  else:
    assert _CountingDevice.calls > 3  # in-process is for trusted code only


def test_isolated_and_in_process_give_the_same_scores():
  honest = {"random": baselines.random_search}  # one import of JAX in a worker: seconds
  assert _scores(honest, isolated=True) == _scores(honest, isolated=False)


def test_a_method_that_cannot_be_sent_is_refused_before_any_cell():
  with pytest.raises(ValueError, match="cannot be sent to a process of its own"):
    _scores({"local": lambda task, target, rng: None}, isolated=True)


def test_method_errors_keep_their_type_across_the_boundary():
  runner = isolation.Runner()
  budget = interface.ProbeBudget(TableDevice("toy", np.ones(N)), 1)
  task = interface.Task("cifar10", 1.5, 1, np.ones(N))
  with pytest.raises(IndexError, match="outside"):
    runner.run(cheaters.measure_out_of_range, task, budget, np.random.default_rng(0))
  assert runner.run(cheaters.catch_refusal, task, budget, np.random.default_rng(0)) == 0
  assert budget.exceeded


def test_a_method_that_never_answers_is_ended(monkeypatch):
  monkeypatch.setattr(isolation, "SILENCE_LIMIT_S", 2.0)
  runner = isolation.Runner()
  task = interface.Task("cifar10", 1.5, 1, np.ones(N))
  budget = interface.ProbeBudget(TableDevice("toy", np.ones(N)), 1)
  runner.run(cheaters.catch_refusal, task, budget, np.random.default_rng(0))  # warm: JAX's import
  budget = interface.ProbeBudget(TableDevice("toy", np.ones(N)), 1)
  started = time.monotonic()
  with pytest.raises(isolation.IsolationError, match="sent nothing for 2 s"):
    runner.run(cheaters.never_answer, task, budget, np.random.default_rng(0))
  assert time.monotonic() - started < 60


def test_a_process_out_of_step_is_replaced():
  """Ctrl-C (or a device error) on the harness's side mid-episode ends the method's process;
  its next episode gets a fresh one that answers as before."""

  class Interrupted(TableDevice):
    def measure(self, index):
      raise KeyboardInterrupt

  task = interface.Task("cifar10", 1.5, 2, np.ones(N))
  runner = isolation.Runner()
  with pytest.raises(KeyboardInterrupt):
    runner.run(cheaters.catch_refusal, task, interface.ProbeBudget(Interrupted("toy", np.ones(N)),
                                                                   2), np.random.default_rng(0))
  budget = interface.ProbeBudget(TableDevice("toy", np.ones(N)), 2)
  assert runner.run(cheaters.catch_refusal, task, budget, np.random.default_rng(0)) == 0
  assert len(budget.probes) == 2 and budget.exceeded


# --- runs that refuse bad results -------------------------------------------------------

def test_training_stops_on_a_non_finite_loss_or_parameters():
  from hwnas_jax.metatrain import train  # pylint: disable=import-outside-toplevel
  train.check_finite(3, [0, 1], np.array([1.0, 2.0]), np.array([True, True]))
  with pytest.raises(train.NonFiniteError, match=r"update 3: .* seed\(s\) \[1\]"):
    train.check_finite(3, [0, 1], np.array([1.0, np.nan]), np.array([True, True]))
  with pytest.raises(train.NonFiniteError, match=r"seed\(s\) \[0\]"):
    train.check_finite(3, [0, 1], np.array([1.0, 2.0]), np.array([False, True]))


def test_a_checkpoint_with_non_finite_parameters_is_refused():
  from hwnas_jax.search import deploy  # pylint: disable=import-outside-toplevel
  params = {"params": {"dense": {"kernel": np.ones(3), "bias": np.array([0.0, np.inf])}}}
  with pytest.raises(ValueError, match=r"seed 0 .* non-finite parameters .*bias"):
    deploy.check_finite_params("seed 0", params)
  deploy.check_finite_params("seed 0", {"w": np.ones(2)})


def _workdir_with_scores(tmp_path, scores):
  import json  # pylint: disable=import-outside-toplevel
  from experiments.configs import quick  # pylint: disable=import-outside-toplevel
  from hwnas_jax.metatrain import checkpoint  # pylint: disable=import-outside-toplevel
  config = quick.get_config()
  workdir = str(tmp_path)
  checkpoint.open_run(workdir, config, "test")
  seed_dir = checkpoint.seed_dir(workdir, checkpoint.seeds_of(config)[0])
  open(f"{seed_dir}/{checkpoint.CHECKPOINT}", "wb").close()
  with open(f"{seed_dir}/{checkpoint.METRICS}", "w") as f:
    for step, score in enumerate(scores, 1):
      f.write(json.dumps({"step": step, "eval_score": score}) + "\n")
  return workdir


def test_a_controller_worse_than_its_start_is_warned_about(tmp_path):
  from hwnas_jax.search import registry  # pylint: disable=import-outside-toplevel
  assert registry.regressions(_workdir_with_scores(tmp_path / "better", [0.1, 0.5])) == []
  (line,) = registry.regressions(_workdir_with_scores(tmp_path / "worse", [0.5, 0.2]))
  assert "0.2 at its last evaluation (update 2), below 0.5 at its first" in line


def test_a_cut_metrics_file_is_named(tmp_path):
  from hwnas_jax.metatrain import checkpoint  # pylint: disable=import-outside-toplevel
  workdir = _workdir_with_scores(tmp_path, [0.1])
  path = f"{checkpoint.seed_dir(workdir, 0)}/{checkpoint.METRICS}"
  with open(path, "a") as f:
    f.write('{"step": 2, "eval_sc')  # cut by an interruption: dropped
  assert [row["step"] for row in checkpoint.read_metrics(workdir, 0)] == [1]
  with open(path, "a") as f:
    f.write('\n{"step": 2, "eval_score": 0.1}\n')  # then damaged inside: named
  with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is not JSON"):
    checkpoint.read_metrics(workdir, 0)


def test_a_workdir_is_locked_while_a_run_writes_to_it(tmp_path):
  from hwnas_jax.metatrain import checkpoint  # pylint: disable=import-outside-toplevel
  with checkpoint.locked(str(tmp_path)):
    with pytest.raises(ValueError, match=r"in use by another run \(pid \d+"):
      with checkpoint.locked(str(tmp_path)):
        pass
  with checkpoint.locked(str(tmp_path)):  # released at the end of the run
    pass


# --- work that survives interruption ------------------------------------------------------

def _run_evaluate(output, *extra):
  from absl import flags  # pylint: disable=import-outside-toplevel
  from experiments import evaluate  # pylint: disable=import-outside-toplevel
  argv = ["evaluate", "--devices=eyeriss", "--datasets=cifar10", "--budgets=10,50",
          "--methods=random,oracle", "--episodes=2", "--probes=3", "--noisolate",
          f"--output={output}", *extra]
  fv = flags.FlagValues()
  evaluate.define_flags(fv)
  fv(argv)
  evaluate.main([], fv)


def test_an_interrupted_evaluation_resumes_to_the_same_results(data_dir, tmp_path,
                                                               monkeypatch, capsys):
  del data_dir
  _run_evaluate(tmp_path / "whole.json")
  cell = protocol.evaluate_cell
  calls = []

  def interrupted_at_the_third(*args, **kwargs):
    calls.append(args[0])
    if len(calls) == 3:
      raise KeyboardInterrupt
    return cell(*args, **kwargs)

  monkeypatch.setattr(protocol, "evaluate_cell", interrupted_at_the_third)
  with pytest.raises(KeyboardInterrupt):
    _run_evaluate(tmp_path / "cut.json")
  assert not (tmp_path / "cut.json").exists()
  monkeypatch.setattr(protocol, "evaluate_cell", cell)
  capsys.readouterr()
  _run_evaluate(tmp_path / "cut.json")
  assert "resuming: 2 finished cell(s) read back" in capsys.readouterr().out
  assert (tmp_path / "cut.json").read_text() == (tmp_path / "whole.json").read_text()
  assert not (tmp_path / "cut.json.partial.jsonl").exists()


def test_cells_of_other_settings_are_not_resumed(data_dir, tmp_path, capsys):
  del data_dir
  from hwnas_jax.search import resume  # pylint: disable=import-outside-toplevel
  log = resume.CellLog(str(tmp_path / "p.jsonl"), {"seed": 0}, log=lambda _: None)
  log.append("cell", {"mean_accuracy": 1.0})
  assert resume.CellLog(str(tmp_path / "p.jsonl"), {"seed": 0}).finished == {
      "cell": {"mean_accuracy": 1.0}}
  assert resume.CellLog(str(tmp_path / "p.jsonl"), {"seed": 1}).finished == {}
  assert "holds cells of a run with other settings" in capsys.readouterr().out


def test_ctrl_c_and_sigterm_end_a_command_in_one_line(data_dir, tmp_path):
  import os  # pylint: disable=import-outside-toplevel
  import signal  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  signals = {"Ctrl-C": signal.SIGINT, "SIGTERM": signal.SIGTERM}
  # The commands start as typed at a terminal, with SIGINT at its default: a suite run in the
  # background by a script has it ignored (POSIX shells ignore it for `cmd &`), a child
  # inherits that, and Python then leaves Ctrl-C ignored. A handler is not inherited.
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    running = {said: subprocess.Popen(  # both at once: one start-up's wait
        [sys.executable, "-m", "experiments.evaluate", "--episodes=100000", "--probes=3",
         "--devices=eyeriss", "--datasets=cifar10", "--budgets=10", "--methods=random",
         f"--output={tmp_path / said}.json"], cwd=repo, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "HWNAS_DATA_DIR": data_dir})
        for said in signals}
  finally:
    signal.signal(signal.SIGINT, previous)
  for said, process in running.items():
    for _ in range(600):  # until its first cell is under way
      if (tmp_path / f"{said}.json.partial.jsonl").exists():
        break
      time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signals[said])
  for said, process in running.items():
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and f"interrupted ({said})" in err, err
