"""Tests of experiments/search.py: the search command on a table device and on the host.

The command runs in-process (its flags defined on a FlagValues of its own, then `main`),
on a small fake latency file written to tmp_path, with the bundle's proxies from
$HWNAS_DATA_DIR; one refusal runs as a real subprocess (`python -m experiments.search`)
for its exit status and its one line.
"""

import json
import os
import subprocess
import sys
from unittest import mock

from absl import flags
import numpy as np
import pytest

from experiments import cli
from experiments import search
from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices.table import TableDevice
from hwnas_jax.search import baselines
from hwnas_jax.search import interface
from hwnas_jax.search import plots
from hwnas_jax.search import session

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OP_COST_MS = np.array([0.0, 0.05, 0.3, 1.0, 0.2])  # none, skip, conv1x1, conv3x3, pool
TINY_HOST = ["--host_channels=4", "--host_num_cells=1", "--host_image_size=8",
             "--host_repeats=5", "--host_warmup=1"]
PROBE_KEYS = {"step", "index", "arch", "latency_ms", "proxy", "within_budget"}


@pytest.fixture(scope="module")
def fake_latency(tmp_path_factory):
  """A device whose latency is 1 ms plus a cost per operation: fastest = all-none = 1 ms."""
  path = tmp_path_factory.mktemp("latency") / "fake.npz"
  np.savez(path, fake=1.0 + searchspace.op_counts() @ OP_COST_MS)
  return str(path)


def run_cli(data_dir, *args):
  env = {**os.environ, "HWNAS_DATA_DIR": data_dir,
         "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
  return subprocess.run([sys.executable, "-m", "experiments.search", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=240, check=False)


@pytest.fixture
def search_command(data_dir, monkeypatch):
  """The command in-process: `search_command(*args)` defines its flags on a FlagValues of its
  own, parses `args` and calls `main` (what `cli.run` prints for a user error: test it
  with `cli.message` of the error raised)."""
  monkeypatch.setenv("HWNAS_DATA_DIR", data_dir)

  def run(*args):
    argv = ["experiments.search", *args]
    fv = flags.FlagValues()
    with mock.patch.object(sys, "argv", argv):
      search.define_flags(fv)
      fv(argv)
    return search.main([], fv)

  return run


def test_table_search_writes_record_and_plot(search_command, fake_latency, tmp_path, capsys):
  output = tmp_path / "run.json"
  search_command(f"--device=table:{fake_latency}:fake", "--budget_ms=3", "--probes=5",
                 "--method=random", "--seed=3", f"--output={output}")
  record = json.loads(output.read_text())
  assert record["device"] == "fake" and record["method"] == "random" and record["seed"] == 3
  assert record["proxy"] == aggregate.DEFAULT_PROXY  # the record names the proxy it searched
  assert record["budget_ms"] == 3 and record["num_probes"] == 5 and len(record["probes"]) == 5
  for probe in record["probes"]:
    assert PROBE_KEYS <= set(probe)
    assert probe["arch"] == searchspace.index_to_string(probe["index"])
    assert probe["within_budget"] == (probe["latency_ms"] <= 3)
  answer = record["answer"]
  feasible = [p for p in record["probes"] if p["within_budget"]]
  assert record["valid"] and answer["index"] == max(feasible, key=lambda p: p["proxy"])["index"]
  assert answer["arch"] == searchspace.index_to_string(answer["index"])
  assert 0 < answer["test_accuracy"] < 100
  assert record["check"]["latency_ms"] == answer["latency_ms"] and record["check"]["within_budget"]
  assert record["table"]["fastest_ms"] == 1.0
  png = tmp_path / "run.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  stdout = capsys.readouterr().out
  assert "answer: index" in stdout and "check (outside the 5 probes)" in stdout


def test_budget_below_every_table_architecture(data_dir, fake_latency, tmp_path):
  """The real command: exit status 2, one line, no traceback, nothing written."""
  output = tmp_path / "never.json"
  result = run_cli(data_dir, f"--device=table:{fake_latency}:fake", "--budget_ms=0.5",
                   "--method=lsq", f"--output={output}")
  assert result.returncode == 2
  lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1, result.stderr
  assert "below every architecture" in lines[0] and "takes 1 ms" in lines[0]
  assert "Traceback" not in result.stderr
  assert "Unable to initialize backend" not in result.stderr  # jax's note on a missing TPU
  assert not output.exists()  # refused before any probe


def test_host_search_without_feasible_probe_says_fastest(search_command, tmp_path):
  output = tmp_path / "host.json"
  with pytest.raises(session.SearchError) as error:
    search_command("--device=host", "--budget_ms=1e-6", "--probes=2", "--method=random",
                   f"--output={output}", *TINY_HOST)
  said = cli.message(error.value)  # what `cli.run` prints after "error: "
  assert "no probed architecture was within the budget" in said
  assert "fastest probe measured" in said
  record = json.loads(output.read_text())  # the probes were spent: their record is kept
  assert len(record["probes"]) == 2 and record["answer"] is None and not record["valid"]
  assert record["host"]["channels"] == 4 and len(record["host_measurements"]) == 2
  assert all(p["latency_ms"] > 0 and p["iqr_ms"] >= 0 for p in record["probes"])


def test_host_search_remeasures_the_answer(search_command, tmp_path):
  output = tmp_path / "host.json"
  search_command("--device=host", "--budget_ms=1e6", "--probes=2", "--method=random",
                 f"--output={output}", *TINY_HOST)
  record = json.loads(output.read_text())
  assert record["valid"] and record["check"]["within_budget"]
  assert "re-measured on the live device" in record["check"]["note"]
  tags = [m["tag"] for m in record["host_measurements"]]
  assert tags == ["probe", "probe", "check"]
  assert record["host_measurements"][-1]["reused_executable"]
  assert (tmp_path / "host.png").exists()


def test_resolve_method_names_the_registry():
  assert session.resolve_method("lsq") is baselines.least_squares
  with pytest.raises(session.SearchError, match="unknown .nope."):
    session.resolve_method("nope")
  with pytest.raises(session.SearchError, match="reference"):
    session.resolve_method("oracle")
  with pytest.raises(session.SearchError, match="needs --checkpoint"):
    session.resolve_method("controller")


def test_run_search_goes_through_probe_budget(benchmark):
  latency = benchmark.latency("gold_6226")
  task = interface.Task("cifar10", float(np.percentile(latency, 25)), 4, benchmark.proxy("cifar10"))
  device = TableDevice("gold_6226", latency)
  record = session.run_search(device, baselines.least_squares, task, 0,
                                 benchmark.accuracy("cifar10"), "lsq")
  assert len(record["probes"]) == 4
  assert record["valid"] == any(p["index"] == record["answer"]["index"] and p["within_budget"]
                                for p in record["probes"])

  def greedy(task, device, rng):
    del rng
    for i in range(task.num_probes + 1):
      device.measure(i)

  with pytest.raises(interface.ProbeLimitExceeded):
    session.run_search(device, greedy, task, 0, isolated=False)


def test_pareto_front_is_best_proxy_so_far():
  latency = np.array([3.0, 1.0, 2.0, 4.0, np.nan])
  proxy = np.array([0.5, 0.2, 0.1, 0.9, 1.0])
  x, y = plots.pareto_front(latency, proxy)
  np.testing.assert_array_equal(x, [1.0, 3.0, 4.0])
  np.testing.assert_array_equal(y, [0.2, 0.5, 0.9])
