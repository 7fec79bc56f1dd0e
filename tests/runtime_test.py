"""Search on real hardware: the ONNX export, the onnxruntime and command devices, the
measurement store (resume, concurrent writers) and reference timing under load drift."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from hwnas_jax.benchmark import network  # pylint: disable=wrong-import-position
from hwnas_jax.benchmark import onnx_export
from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices import drift
from hwnas_jax.devices import runtime
from hwnas_jax.devices import store
from hwnas_jax.devices import time_onnx
from hwnas_jax.devices.interface import DeviceError
from hwnas_jax.search import baselines
from hwnas_jax.search import interface
from hwnas_jax.search import session

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIME_ONNX = os.path.join(REPO, "hwnas_jax", "devices", "time_onnx.py")
TINY = dict(channels=4, num_cells=1, image_size=8)
MIXED = searchspace.ops_to_index((3, 1, 2, 4, 3, 1))
# Every operation kind, a dead cell (all none) and a cell of pools and skips only.
ARCHS = (MIXED, searchspace.ops_to_index((0,) * 6), searchspace.ops_to_index((4, 1, 4, 1, 0, 4)))


@pytest.mark.parametrize("index", ARCHS)
def test_onnx_output_equals_flax(index, tmp_path):
  """Same weights, same images, batch statistics in both: equal to float32 rounding
  (a wrong layout, weight or edge gives differences of the order of the logits)."""
  spec = onnx_export.NetworkSpec(batch_size=4, batch_norm="batch", **TINY)
  path = str(tmp_path / "m.onnx")
  assert onnx_export.export(searchspace.index_to_string(index), path, spec, seed=3) == index
  onnx.checker.check_model(onnx.load(path), full_check=True)
  images = np.random.default_rng(0).standard_normal((4, 8, 8, 3)).astype(np.float32)
  ops = tuple(int(o) for o in searchspace.arch_ops()[index])
  net = spec.flax_network()
  flax_logits = np.asarray(net.apply(
      {"params": network.init_params(jax.random.key(3), ops, network=net)}, images, ops))
  session_ = time_onnx.make_session(path)
  onnx_logits = session_.run(None, {"images": np.transpose(images, (0, 3, 1, 2))})[0]
  assert onnx_logits.shape == (4, 10)
  scale = max(1.0, float(np.abs(flax_logits).max()))
  np.testing.assert_allclose(onnx_logits, flax_logits, rtol=0, atol=1e-4 * scale)


def test_inference_export_checks_and_runs(tmp_path):
  path = str(tmp_path / "m.onnx")
  spec = onnx_export.NetworkSpec(dataset="ImageNet16-120", **TINY)
  onnx_export.export(MIXED, path, spec)
  model = onnx.load(path)
  onnx.checker.check_model(model, full_check=True)
  assert "BatchNormalization" in {n.op_type for n in model.graph.node}
  props = {p.key: p.value for p in model.metadata_props}
  assert props["arch"] == searchspace.index_to_string(MIXED) and props["dataset"] == "ImageNet16-120"
  result = time_onnx.time_model(path, repeats=3, warmup=1)
  assert result["median_ms"] > 0 and len(result["times_ms"]) == 3


def test_parse_arch_index_string_and_garbage():
  assert onnx_export.parse_arch("14286") == onnx_export.parse_arch(14286) == 14286
  assert onnx_export.parse_arch(searchspace.index_to_string(7)) == 7
  with pytest.raises(ValueError, match="not a NAS-Bench-201 architecture string"):
    onnx_export.parse_arch("conv|conv")
  with pytest.raises(IndexError, match="outside"):
    onnx_export.parse_arch("15625")


def fake_command(tmp_path, body: str) -> str:
  """A timing command: a Python script with `body`, given the model's path."""
  script = tmp_path / "fake_timer.py"
  script.write_text("import sys, time, os\nassert os.path.isfile(sys.argv[1])\n" + body)
  return f"{sys.executable} {script} {{model}}"


def command_device(tmp_path, body: str, timeout_s: float = 30.0) -> runtime.CommandDevice:
  return runtime.CommandDevice(fake_command(tmp_path, body), timeout_s=timeout_s,
                               spec=onnx_export.NetworkSpec(**TINY), model_dir=str(tmp_path))


def test_command_device_reads_a_number_or_a_json_line(tmp_path):
  device = command_device(tmp_path, "print('warming up')\nprint('4.25 ms')")
  assert device.measure(MIXED) == 4.25
  device = command_device(tmp_path, "print('{\"median_ms\": 2.5, \"times_ms\": [2, 2.5, 3]}')")
  assert device.measure(MIXED) == 2.5
  record = device.records[-1]
  assert record.repeats == 3 and record.min_ms == 2 and record.max_ms == 3
  assert device.timings[-1] == [2, 2.5, 3]
  device.statistic = "min"  # the fastest run instead of the median
  assert device.measure(MIXED) == 2 and device.records[-1].latency_ms == 2


@pytest.mark.parametrize("body, message", [
    ("print('fast enough')", "not a latency in ms"),
    ("print('{\"median\": 3}')", "not a JSON object with a numeric median_ms"),
    ("print('-1')", "a latency is a finite number > 0"),
    ("print('nan')", "a latency is a finite number > 0"),
    ("pass", "printed nothing"),
    ("print('3.0'); sys.stderr.write('no such model'); sys.exit(3)", "exited with 3.*no such model"),
    ("time.sleep(30)", "ran past its timeout of 1 s"),
])
def test_command_device_failures_are_device_errors_recorded_as_failed(tmp_path, body, message):
  measurements = store.MeasurementStore(str(tmp_path / "m.sqlite"))
  device = store.StoredDevice(command_device(tmp_path, body, timeout_s=1.0), measurements, "r")
  with pytest.raises(DeviceError, match=message):
    device.measure(MIXED)
  (row,) = measurements.device_rows()
  assert row["status"] == "failed" and row["median_ms"] is None
  assert row["arch_index"] == MIXED and row["error"]


def test_command_device_needs_the_placeholder():
  with pytest.raises(ValueError, match="no {model}"):
    runtime.CommandDevice("python3 time_onnx.py model.onnx")


class CountingDevice:
  """A table device that counts its measurements, with the settings a store records."""
  runtime = "table"

  def __init__(self, latency_ms, fail_after: int | None = None):
    self.name, self.latency_ms, self.fail_after = "counting", latency_ms, fail_after
    self.calls = 0

  def settings(self):
    return {"name": self.name}

  def measure(self, index, tag="probe"):
    del tag
    if self.fail_after is not None and self.calls >= self.fail_after:
      raise KeyboardInterrupt  # the search is killed
    self.calls += 1
    return float(self.latency_ms[index])


def table_task(num_probes=10):
  latency_ms = 1.0 + searchspace.op_counts() @ np.array([0.0, 0.1, 0.5, 2.0, 0.3])
  proxy = np.random.default_rng(1).standard_normal(searchspace.NUM_ARCHS)
  return latency_ms, interface.Task("cifar10", float(np.median(latency_ms)), num_probes, proxy)


def test_killed_search_resumes_without_measuring_again(tmp_path):
  latency_ms, task = table_task()
  path = str(tmp_path / "m.sqlite")
  killed = CountingDevice(latency_ms, fail_after=5)
  with pytest.raises(KeyboardInterrupt):
    session.run_search(store.StoredDevice(killed, store.MeasurementStore(path), "run"),
                       baselines.least_squares, task, seed=0,
                       isolated=False)
  assert len(store.MeasurementStore(path).device_rows()) == 5
  resumed = CountingDevice(latency_ms)
  device = store.StoredDevice(resumed, store.MeasurementStore(path), "run")
  record = session.run_search(device, baselines.least_squares, task, seed=0, isolated=False)
  assert device.replayed == 5 and resumed.calls == task.num_probes - 5 + 1  # + the check
  uninterrupted = session.run_search(CountingDevice(latency_ms), baselines.least_squares, task,
                                     seed=0, isolated=False)
  assert [p["index"] for p in record["probes"]] == [p["index"] for p in uninterrupted["probes"]]
  rows = store.MeasurementStore(path).device_rows()
  assert [r["tag"] for r in rows] == ["probe"] * task.num_probes + ["check"]


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
  path = str(tmp_path / "m.sqlite")
  store.MeasurementStore(path)  # created once, as the first search would
  # Each writer waits for the other to be ready (imports take seconds), then both write.
  code = ("import os, sys, time\nfrom hwnas_jax.devices import store\n"
          "s = store.MeasurementStore(sys.argv[1])\n"
          "open(sys.argv[1] + '.ready.' + sys.argv[2], 'w').close()\n"
          "while not all(os.path.exists(sys.argv[1] + '.ready.' + n) for n in 'ab'):\n"
          "  time.sleep(0.01)\n"
          "for i in range(150):\n"
          "  s.add(device=sys.argv[2], runtime='x', settings={}, index=i, times_ms=[1.0, 2.0],"
          " median_ms=1.5)\n")
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  writers = [subprocess.Popen([sys.executable, "-c", code, path, name], env=env)
             for name in ("a", "b")]
  assert [w.wait(timeout=120) for w in writers] == [0, 0]
  rows = store.MeasurementStore(path).device_rows()
  assert sorted((r["device"], r["arch_index"]) for r in rows) == sorted(
      (name, i) for name in "ab" for i in range(150))


def test_noise_level_is_the_pooled_log_spread():
  rows = [{"status": "ok", "device": "d", "settings": {}, "arch_index": a, "median_ms": m,
           "iqr_ms": 0.1} for a, m in [(1, 1.0), (1, np.e ** 0.2), (2, 5.0), (3, 2.0),
                                       (3, 2.0 * np.e ** 0.2)]]
  noise = store.noise_level(rows + [{**rows[0], "status": "failed", "median_ms": None}])
  assert noise["dof"] == 2 and noise["sigma"] == pytest.approx(np.sqrt(2 * 0.02 / 2))
  assert store.noise_level(rows[2:3])["sigma"] is None


def ramp(n: int) -> float:
  """The load: 1 at the start, 60 % slower after 60 measurements."""
  return 1.0 + 0.01 * n


def test_reference_timing_cancels_a_load_ramp():
  latency_ms, task = table_task()
  direct = drift.DriftingDevice(latency_ms, ramp)
  timed = drift.ReferenceTimedDevice(drift.DriftingDevice(latency_ms, ramp))
  # The same architecture before and after 40 other measurements: direct timing sees the
  # load, the reference-timed latency stays the table's at the calibration's load (ramp(1)).
  first, later = direct.measure(MIXED), None
  for _ in range(40):
    direct.measure(0)
  later = direct.measure(MIXED)
  assert later / first > 1.35
  values = [timed.measure(MIXED)] + [timed.measure(i) for i in range(1, 14)] + [
      timed.measure(MIXED)]
  assert values[0] == pytest.approx(latency_ms[MIXED] * ramp(1), rel=1e-12)
  assert values[-1] == pytest.approx(values[0], rel=1e-12)
  low, high = timed.intervals_ms[-1]
  assert low <= values[-1] <= high and high / low < 1.05  # widened by the drift between refs


def test_answers_hold_under_drift_with_reference_timing():
  """A search on a device that slows down 1 % per measurement: the answer re-measured after
  the search holds with reference timing, on every seed, also with 2 % noise."""
  latency_ms, task = table_task()
  for seed in range(5):
    device = drift.ReferenceTimedDevice(drift.DriftingDevice(latency_ms, ramp, 0.02, seed))
    record = session.run_search(device, baselines.least_squares, task, seed, isolated=False)
    assert record["valid"] and record["check"]["within_budget"], seed
    raw = device.raw_ms[-1] / latency_ms[record["answer"]["index"]]
    assert raw > 1.3  # the raw timing of the check saw the load


def test_search_through_the_shipped_timing_script_stores_every_probe(data_dir, tmp_path,
                                                                     monkeypatch, capsys):
  """The search command in-process (its flags on a FlagValues of its own), each probe timed
  by the shipped script in a process of its own, as the command device runs it."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from experiments import search  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("HWNAS_DATA_DIR", data_dir)
  command = f"{sys.executable} {TIME_ONNX} {{model}} --repeats=3 --warmup=1"
  path = tmp_path / "m.sqlite"
  argv = ["experiments.search", f"--device=command:{command}",
          "--budget_ms=1e4", "--probes=3", "--method=random", f"--store={path}",
          "--host_channels=4", "--host_num_cells=1", "--host_image_size=8",
          f"--model_dir={tmp_path}", f"--output={tmp_path / 'run.json'}"]
  fv = flags.FlagValues()
  search.define_flags(fv)
  fv(argv)
  search.main([], fv)
  assert "0 measurements read back" in capsys.readouterr().out
  record = json.loads((tmp_path / "run.json").read_text())
  assert record["valid"] and record["store"]["path"] == str(path)
  rows = store.MeasurementStore(str(path)).device_rows()
  assert [r["tag"] for r in rows] == ["probe"] * 3 + ["check"]
  assert [r["arch_index"] for r in rows[:3]] == [p["index"] for p in record["probes"]]
  assert all(r["status"] == "ok" and len(r["times_ms"]) == 3 for r in rows)


def test_live_device_stores_raw_timings_under_reference_timing(tmp_path):
  """Reference timing over the store: the store holds every raw measurement (references
  too), and the same search again reads all of them back."""
  latency_ms, task = table_task(num_probes=4)
  path = str(tmp_path / "m.sqlite")
  fields = {"device": "drifting", "seed": 0}
  records = []
  for _ in range(2):
    device = session.live_device(drift.DriftingDevice(latency_ms, ramp), path, fields,
                                 "reference")
    records.append(session.run_search(device, baselines.least_squares, task, 0, isolated=False))
  tags = [r["tag"] for r in store.MeasurementStore(path).device_rows()]
  assert tags.count("probe") == 4 and tags.count("reference") == 3 + 2 * 4
  assert tags.count("check") == 2 and tags.count("check_reference") == 4  # never read back
  assert device.device.replayed == 3 + 3 * 4  # calibration, then reference-probe-reference
  assert [p["latency_ms"] for p in records[0]["probes"]] == [
      p["latency_ms"] for p in records[1]["probes"]]
