"""What a new user meets first: help that lists the config entries, no TPU note, progress that
suits a log file, aligned tables, and plots whose labels say what they show and do not collide.
Each test is fast: figures are built and measured in memory, and the two commands run
beside the other tests (`start_early`).
"""

import io
import logging
import os
import sys

from absl import flags
import numpy as np
import pytest

import early
from experiments import cli
from experiments import proxy_study
from experiments import sweep
from hwnas_jax.benchmark import progress
from hwnas_jax.search import plots
from hwnas_jax.search import protocol

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
TPU_NOTE = "Unable to initialize backend 'tpu'"


# The two commands these tests read, by the test that reads each: each starts as soon as
# the tests are collected (`start_early`, called by conftest.py), beside the other tests,
# and its test collects it.
COMMANDS = {
    "test_meta_train_help_exits_0_and_lists_the_config_entries":
        ["-m", "experiments.meta_train", "--config=experiments/configs/quick.py", "--help"],
    "test_no_tpu_note_and_the_cpu_still_used":
        ["-c", "import jax\nfrom experiments import cli\n"
         "cli.run(lambda argv: print('platform', jax.default_backend()))\n"],
}
_RUNNING: dict = {}


def start_early(selected=None):
  for name, args in COMMANDS.items():
    if name not in _RUNNING and (selected is None or name in selected):
      _RUNNING[name] = early.start([sys.executable, *args], cwd=REPO, env=ENV)


def _command(name):
  start_early({name})
  return early.finish(_RUNNING[name], timeout=240)


def test_meta_train_help_exits_0_and_lists_the_config_entries():
  result = _command("test_meta_train_help_exits_0_and_lists_the_config_entries")
  assert result.returncode == 0, result.stderr
  assert "--workdir" in result.stdout
  lines = result.stdout.splitlines()
  at = lines.index("  --config.num_devices: synthetic-device episodes per update")
  assert lines[at + 1] == "    (default: 256)"  # the value quick.py sets, not default.py's
  assert "  --config.num_probes: K: latency probes per episode" in lines
  assert "  --config.invalid_penalty: An episode that ends without a valid answer" in \
      result.stdout


def test_no_tpu_note_and_the_cpu_still_used():
  """jax logs that libtpu is missing when it looks for backends: `cli.run` drops that line."""
  result = _command("test_no_tpu_note_and_the_cpu_still_used")
  assert result.returncode == 0, result.stderr
  assert TPU_NOTE not in result.stderr + result.stdout
  assert "platform" in result.stdout


def test_tpu_note_filter_keeps_everything_else():
  note = lambda level, text: logging.LogRecord("jax._src.xla_bridge", level, "", 0, text, (), None)
  assert not cli._quiet_missing_tpu(note(logging.INFO, TPU_NOTE + ": libtpu.so"))
  assert cli._quiet_missing_tpu(note(logging.WARNING, TPU_NOTE + ": found but broken"))
  assert cli._quiet_missing_tpu(note(logging.INFO, "Unable to initialize backend 'cuda': x"))


def test_progress_in_a_log_file_is_whole_lines():
  out = io.StringIO()  # not a terminal
  for _ in progress.bar(range(1000), desc="cells", unit="cell", file=out):
    pass
  lines = out.getvalue().splitlines()
  assert "\r" not in out.getvalue()
  assert 1 <= len(lines) <= 3 and "1000/1000" in lines[-1]
  # A postfix set at every step (meta-training's score) waits for the next line.
  out = io.StringIO()
  bar = progress.bar(range(200), desc="meta-train", unit="update", file=out)
  for step in bar:
    bar.set_postfix(score=f"{step:.3f}")
  lines = out.getvalue().splitlines()
  assert 1 <= len(lines) <= 3 and "score=199.000" in lines[-1], lines


def _summary(mean):
  return {"cells": 36, "seeds": 1, "mean_accuracy": mean, "feasible_rate": 1.0,
          "mean_regret": 1.5}


def test_evaluate_table_aligned_for_long_method_names():
  names = ["lsq", "untrained_paper_controller"]
  rows = [{"method": name, "device": "eyeriss", "dataset": "ImageNet16-120",
           "budget_percentile": 10, "budget_ms": 3.0, "mean_accuracy": 60.0,
           "feasible_rate": 1.0, "oracle_accuracy": 61.0, "proxy_oracle_accuracy": 60.5,
           "mean_regret": 1.0} for name in names]
  table = protocol.format_table(rows, {name: _summary(66.0) for name in names})
  grid, summary = table.split("\n\n")
  for block in (grid, summary):
    lines = block.splitlines()
    assert len({len(line) for line in lines}) == 1, block  # every column ends where its header does
    for name in names:
      row = next(line for line in lines if line.startswith(name))
      assert row[len(name)] == " "


def _record(probes, proxy="logrank:naswot+skip"):
  return {"device": "fake", "dataset": "cifar100", "method": "lsq", "seed": 0, "budget_ms": 3.0,
          "num_probes": len(probes), "proxy": proxy, "valid": False, "answer": None,
          "check": None, "probes": [
              {"step": i + 1, "index": index, "latency_ms": ms, "proxy": value,
               "within_budget": ms <= 3.0} for i, (index, ms, value) in enumerate(probes)]}


def test_search_plot_names_its_proxy_and_its_probe_labels_do_not_overlap():
  # Two probes of one architecture and three close neighbours, as repeats on a host give.
  probes = [(7, 2.0, 0.5), (7, 2.0, 0.5), (8, 2.01, 0.501), (9, 2.02, 0.499), (10, 1.99, 0.5),
            (11, 4.0, 0.9)]
  proxy = np.linspace(0, 1, 15625)
  fig = plots.search_figure(_record(probes), proxy)
  ax = fig.axes[0]
  assert ax.get_ylabel() == "accuracy proxy logrank:naswot+skip on cifar100"
  labels = [t for t in ax.texts if t.get_text()[0].isdigit()]
  assert sorted(t.get_text() for t in labels) == ["1,2", "3", "4", "5", "6"]
  renderer = fig.canvas.get_renderer()
  boxes = [t.get_window_extent(renderer) for t in labels]
  assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
  older = plots.search_figure({**_record(probes[:1]), "proxy": None}, proxy)
  assert "(not recorded)" in older.axes[0].get_ylabel()


def _curve(values):
  return {name: {v: {"mean_accuracy": 60.0 + i - v, "feasible_rate": 0.9} for v in values}
          for i, name in enumerate(["controller", "lsq", "random", "oracle"])}


def test_sweep_plots_share_colours_and_noise_ticks_do_not_touch():
  probe_fig = sweep.curve_figure(_curve([3, 5, 10, 20]), "probes", num_cells=36)
  noise_fig = sweep.curve_figure(_curve([0, 0.02, 0.05, 0.1, 0.2]), "noise", num_cells=36)
  for ax in probe_fig.axes + noise_fig.axes:  # each method's error bars in its one colour
    colours = {c.get_label(): c.lines[0].get_color() for c in ax.containers}
    assert colours == {n: plots.method_color(n) for n in ["controller", "lsq", "random", "oracle"]}
  assert [t.get_text() for t in probe_fig.axes[0].get_xticklabels()] == ["3", "5", "10", "20"]
  renderer = noise_fig.canvas.get_renderer()
  for ax in noise_fig.axes:
    boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
    assert len(boxes) >= 3
    assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))
  assert len(set(plots.METHOD_COLORS.values())) == len(plots.METHOD_COLORS)


@pytest.mark.parametrize("kind", ["probes", "noise"])
def test_sweep_default_output_named_by_its_kind(kind, monkeypatch):
  fv = flags.FlagValues()
  sweep.define_flags(fv)
  fv([ "sweep", f"--sweep={kind}", "--values=1" if kind == "probes" else "--values=0"])
  assert fv.output is None and fv.devices and fv.datasets

  class Stop(Exception):
    pass

  def first_output(path, *args, **kwargs):
    raise Stop(path)

  monkeypatch.setattr(cli, "checked_output", first_output)
  with pytest.raises(Stop) as stop:
    sweep.main([], fv)
  assert stop.value.args[0] == sweep.DEFAULT_OUTPUTS[kind]
  assert sweep.DEFAULT_OUTPUTS == {"probes": "results/probe_curve.json",
                                   "noise": "results/noise_curve.json"}


def test_proxy_study_figure_has_a_title_and_the_diagonal():
  rows = {name: {"fresh_clone": True, "training": 70.0 + i, "validation": 69.0 + i}
          for i, name in enumerate(["paper", "logrank:naswot+skip"])}
  fig = proxy_study.study_figure({"candidates": rows, "pick": "logrank:naswot+skip"})
  ax = fig.axes[0]
  assert ax.get_title()
  assert "y = x" in [t.get_text() for t in ax.get_legend().get_texts()]
