"""Tests of hwnas_jax.bench: the bundle, HW-NAS-Bench and NATS-Bench loaders.

Every malformed input must fail with a `BenchmarkDataError` (or KeyError for an unknown
device) whose message names the file, table or device at fault. Small files of each
layout are written to tmp_path; nothing is copied from the bundle.
"""

import os
import pickle

import numpy as np
import pytest

from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import tables
from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices.table import TableDevice

N = searchspace.NUM_ARCHS
BUNDLE_DEVICES = (
    "1080ti_1", "1080ti_32", "1080ti_256", "2080ti_1", "2080ti_32", "2080ti_256",
    "titan_rtx_1", "titan_rtx_32", "titan_rtx_256", "titanx_1", "titanx_32", "titanx_256",
    "gold_6226", "gold_6240", "silver_4114", "eyeriss", "fpga", "pixel2", "samsung_s7")
# (best test accuracy, its index) per dataset, from the bundle's README.
BEST = {"cifar10": (94.37, 6111), "cifar100": (73.50, 9930), "ImageNet16-120": (46.88, 3888)}
FIXTURE_INDICES = (0, 11, 284)


@pytest.fixture(scope="module")
def bundle(data_dir):
  # Not conftest's `benchmark`: that name collides with pytest-benchmark's fixture when
  # that plugin is installed (its report hook rejects any other `benchmark` value).
  return tables.load_benchmark(data_dir)


def _latencies(seed=0):
  return np.random.default_rng(seed).uniform(1.0, 10.0, N)


def _write_npz(path, **latency_tables):
  np.savez(path, **latency_tables)
  return str(path)


# --- the bundle ------------------------------------------------------------------------

def test_load_benchmark_bundle(bundle, data_dir):
  assert sorted(bundle.devices) == sorted(BUNDLE_DEVICES)
  assert bundle.datasets == ("cifar10", "cifar100", "ImageNet16-120")
  assert bundle.source == os.path.abspath(data_dir)
  for device in bundle.devices:
    latency = bundle.latency(device)
    assert latency.shape == (N,) and latency.dtype == np.float64
    assert np.all(np.isfinite(latency)) and latency.min() > 0
    assert not latency.flags.writeable  # shared by every episode: must not be mutated
  for dataset, (best, index) in BEST.items():
    accuracy = bundle.accuracy(dataset)
    assert accuracy.shape == (N,)
    assert int(np.argmax(accuracy)) == index
    assert accuracy[index] == pytest.approx(best, abs=0.005)
    assert set(bundle.proxies[dataset]) >= set(tables.PROXY_NAMES)


def test_training_devices_exclude_validation_devices(bundle):
  assert set(tables.VALIDATION_DEVICES) <= set(bundle.devices)
  assert len(bundle.training_devices) == len(BUNDLE_DEVICES) - len(tables.VALIDATION_DEVICES)
  assert not set(bundle.training_devices) & set(tables.VALIDATION_DEVICES)
  assert set(bundle.training_devices) | set(tables.VALIDATION_DEVICES) == set(BUNDLE_DEVICES)


def test_family_table_covers_every_bundle_device(bundle):
  # The bundle's README lists its devices; each has a family in the table, and the training
  # devices span the five families PROTOCOL.md names.
  assert set(bundle.devices) == set(BUNDLE_DEVICES)
  assert all(d in tables.DEVICE_FAMILIES for d in bundle.devices)
  members = tables.family_members(bundle.training_devices)
  assert list(members) == ["gpu_b1", "gpu_b32", "gpu_b256", "cpu", "phone"]
  assert members["phone"] == ["pixel2", "samsung_s7"]
  assert sorted(members["cpu"]) == ["gold_6240", "silver_4114"]
  assert [len(members[f]) for f in ("gpu_b1", "gpu_b32", "gpu_b256")] == [4, 4, 3]
  assert tables.device_family("eyeriss") == tables.device_family("fpga") == "other"


def test_an_unknown_device_is_of_family_other():
  assert tables.device_family("jetson_nano") == "other"
  assert tables.family_members(["my_board", "pixel2", "x"]) == {"phone": ["pixel2"],
                                                               "other": ["my_board", "x"]}


@pytest.mark.parametrize("dataset", searchspace.DATASETS)
def test_paper_proxy_is_normalised(bundle, dataset):
  proxy = bundle.proxy(dataset, "paper")
  assert proxy.shape == (N,)
  assert np.all(np.isfinite(proxy))
  assert proxy.min() >= 0.0 and proxy.max() <= 1.0
  parts = [tables.minmax(bundle.proxies[dataset][name]) for name in tables.PROXY_NAMES]
  for part in parts:  # each min-max normalised proxy spans exactly [0, 1]
    assert part.min() == 0.0 and part.max() == 1.0
  np.testing.assert_allclose(proxy, np.mean(parts, axis=0))


def test_default_proxy_and_terms(bundle):
  np.testing.assert_array_equal(bundle.proxy("cifar10"),
                                bundle.proxy("cifar10", aggregate.DEFAULT_PROXY))
  assert bundle.proxy_terms("cifar10") == (*tables.PROXY_NAMES, *aggregate.STRUCTURAL_TERMS)
  with pytest.raises(ValueError, match=r"unknown terms \['zico'\]"):
    bundle.proxy("cifar10", "rank:naswot+zico")


def test_unknown_device_and_dataset_messages(bundle):
  with pytest.raises(KeyError, match="unknown device 'pixel3'") as error:
    bundle.latency("pixel3")
  for device in BUNDLE_DEVICES:  # the message lists every known device
    assert device in str(error.value)
  with pytest.raises(KeyError, match="unknown device 'pixel3'"):
    bundle.select_devices(["eyeriss", "pixel3"])
  with pytest.raises(KeyError, match="no proxies for dataset 'imagenet'"):
    bundle.proxy("imagenet")
  with pytest.raises(KeyError, match="no test accuracy for dataset 'imagenet'"):
    bundle.accuracy("imagenet")


def test_select_devices_keeps_only_those(bundle):
  subset = bundle.select_devices(["fpga", "eyeriss"])
  assert subset.devices == ("fpga", "eyeriss")
  assert subset.training_devices == ()
  assert subset.latency("fpga") is bundle.latency("fpga")


# --- data_dir --------------------------------------------------------------------------

def test_data_dir_without_env_var_or_argument(monkeypatch):
  monkeypatch.delenv(tables.DATA_DIR_ENV, raising=False)
  with pytest.raises(tables.BenchmarkDataError, match=r"\$HWNAS_DATA_DIR"):
    tables.data_dir()
  with pytest.raises(tables.BenchmarkDataError, match=r"\$HWNAS_DATA_DIR"):
    tables.load_benchmark()


def test_data_dir_missing_folder(monkeypatch, tmp_path):
  missing = str(tmp_path / "no_such_folder")
  monkeypatch.setenv(tables.DATA_DIR_ENV, missing)
  with pytest.raises(tables.BenchmarkDataError, match=r"no_such_folder.*\$HWNAS_DATA_DIR"):
    tables.data_dir()
  with pytest.raises(tables.BenchmarkDataError, match=r"no_such_folder.*argument"):
    tables.data_dir(missing)
  monkeypatch.setenv(tables.DATA_DIR_ENV, str(tmp_path))
  assert tables.data_dir() == str(tmp_path)
  assert tables.data_dir(tmp_path) == str(tmp_path)  # a PathLike argument wins over the env


def test_load_benchmark_names_the_missing_file(tmp_path):
  with pytest.raises(tables.BenchmarkDataError, match="file not found") as error:
    tables.load_benchmark(tmp_path)  # an empty folder
  assert os.path.join(str(tmp_path), "latency_ms.npz") in str(error.value)


# --- latency files ---------------------------------------------------------------------

def test_load_benchmark_with_another_latency_file(data_dir, tmp_path):
  latency = _latencies()
  path = _write_npz(tmp_path / "other.npz", pixel3=latency, edgegpu=latency * 2)
  other = tables.load_benchmark(data_dir, latency_file=path)
  assert other.devices == ("pixel3", "edgegpu")
  assert other.training_devices == ("pixel3", "edgegpu")
  np.testing.assert_array_equal(other.latency("edgegpu"), latency * 2)


def test_latency_file_of_wrong_length(tmp_path):
  path = _write_npz(tmp_path / "short.npz", pixel3=_latencies()[:-1])
  with pytest.raises(tables.BenchmarkDataError,
                     match=r"'pixel3' in .*short\.npz.*expected 15625 values.*\(15624,\)"):
    tables.load_latency_file(path)


def test_latency_file_with_nan(tmp_path):
  latency = _latencies()
  latency[[7, 70]] = np.nan
  path = _write_npz(tmp_path / "nan.npz", pixel3=latency)
  with pytest.raises(tables.BenchmarkDataError, match="'pixel3'.*2 NaN values, first at index 7"):
    tables.load_latency_file(path)


@pytest.mark.parametrize("bad_value", [0.0, -1.5])
def test_latency_file_with_non_positive_values(tmp_path, bad_value):
  latency = _latencies()
  latency[42] = bad_value
  path = _write_npz(tmp_path / "neg.npz", pixel3=latency)
  with pytest.raises(tables.BenchmarkDataError, match="'pixel3'.*1 latencies <= 0.*index 42"):
    tables.load_latency_file(path)


def test_latency_file_with_inf(tmp_path):
  latency = _latencies()
  latency[3] = np.inf
  path = _write_npz(tmp_path / "inf.npz", pixel3=latency)
  with pytest.raises(tables.BenchmarkDataError, match="'pixel3'.*infinite values at index 3"):
    tables.load_latency_file(path)


def test_missing_latency_file_says_where_it_looked(tmp_path):
  path = tmp_path / "nowhere" / "latency.npz"
  with pytest.raises(tables.BenchmarkDataError, match="file not found") as error:
    tables.load_latency_file(path)
  assert str(path) in str(error.value)


def test_unreadable_and_empty_latency_files(tmp_path):
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"this is not a zip file")
  with pytest.raises(tables.BenchmarkDataError, match="cannot read .*garbage.npz.* as .npz"):
    tables.load_latency_file(garbage)
  empty = _write_npz(tmp_path / "empty.npz")
  with pytest.raises(tables.BenchmarkDataError, match="holds no device"):
    tables.load_latency_file(empty)
  text = _write_npz(tmp_path / "text.npz", pixel3=np.array(["fast"] * N))
  with pytest.raises(tables.BenchmarkDataError, match="'pixel3'.*are not numbers"):
    tables.load_latency_file(text)


def test_proxy_file_missing_a_proxy(tmp_path):
  path = _write_npz(tmp_path / "proxies.npz", naswot=_latencies(), skip=_latencies(1))
  with pytest.raises(tables.BenchmarkDataError, match=r"lacks proxies \['logsynflow'\]"):
    tables.load_proxy_file(path)


# --- extra proxy tables (a proxy lab's folder) ---------------------------------------------

def _lab_file(folder, dataset, **proxies):
  folder.mkdir(exist_ok=True)
  return _write_npz(folder / f"proxies_{dataset}.npz", index=np.arange(N), **proxies)


def test_proxy_dirs_add_their_keys(data_dir, bundle, tmp_path):
  zico, meco = _latencies(2), _latencies(3)
  _lab_file(tmp_path / "lab", "cifar10", zico=zico,
            naswot=bundle.proxies["cifar10"]["naswot"],  # the same values: allowed
            flops=searchspace.flops_params_table("cifar10")[0])  # as score_proxies writes it
  _lab_file(tmp_path / "lab2", "cifar100", meco=meco)
  loaded = tables.load_benchmark(data_dir, proxy_dirs=[tmp_path / "lab", str(tmp_path / "lab2")])
  assert tuple(loaded.proxies["cifar10"]) == (*tables.PROXY_NAMES, "zico")
  assert tuple(loaded.proxies["cifar100"]) == (*tables.PROXY_NAMES, "meco")
  assert tuple(loaded.proxies["ImageNet16-120"]) == tables.PROXY_NAMES  # no file: nothing added
  np.testing.assert_array_equal(loaded.proxies["cifar10"]["zico"], zico)
  assert "zico" in loaded.proxy_terms("cifar10") and "zico" not in loaded.proxy_terms("cifar100")
  np.testing.assert_allclose(loaded.proxy("cifar10", "rank:zico"),  # ranks scaled to [0, 1]
                             (aggregate.ranks(zico) - 1) / (N - 1))
  with pytest.raises(ValueError, match="unknown terms"):
    loaded.proxy("cifar100", "rank:zico+naswot")


def test_proxy_dirs_conflicts_and_bad_files(data_dir, tmp_path):
  _lab_file(tmp_path / "lab", "cifar10", naswot=_latencies(4))
  with pytest.raises(tables.BenchmarkDataError, match="'naswot' of 'cifar10' in .*lab/proxies_"
                     "cifar10.npz.* differs from the proxy already loaded"):
    tables.load_benchmark(data_dir, proxy_dirs=[tmp_path / "lab"])
  _lab_file(tmp_path / "lab", "cifar10", live_flops=_latencies(4))
  with pytest.raises(tables.BenchmarkDataError, match="'live_flops'.*differs from the structural"):
    tables.load_benchmark(data_dir, proxy_dirs=[tmp_path / "lab"])
  _lab_file(tmp_path / "a", "cifar100", zico=_latencies(5))
  _lab_file(tmp_path / "b", "cifar100", zico=_latencies(6))
  with pytest.raises(tables.BenchmarkDataError, match="'zico' of 'cifar100' in .*b/proxies_"):
    tables.load_benchmark(data_dir, proxy_dirs=[tmp_path / "a", tmp_path / "b"])
  with pytest.raises(tables.BenchmarkDataError, match="proxy folder .*nowhere.* does not exist"):
    tables.load_benchmark(data_dir, proxy_dirs=[tmp_path / "nowhere"])


@pytest.mark.parametrize("arrays, message", [
    (dict(zico=np.ones(N)), "expected 'index' = 0..15624 .*got no 'index'"),
    (dict(index=np.arange(100), zico=np.ones(100)), r"got 'index' of shape \(100,\)"),
    (dict(index=np.arange(N)[::-1], zico=np.ones(N)), "in order"),
    (dict(index=np.arange(N)), "holds no proxy besides 'index'"),
    (dict(index=np.arange(N), zico=np.ones(N - 1)), "'zico' in .*: expected 15625 values"),
    (dict(index=np.arange(N), zico=np.full(N, np.nan)), "'zico' in .*: 15625 NaN values"),
])
def test_malformed_extra_proxy_files_name_the_file(tmp_path, arrays, message):
  path = _write_npz(tmp_path / "proxies_cifar10.npz", **arrays)
  with pytest.raises(tables.BenchmarkDataError, match=message) as error:
    tables.load_extra_proxies(path)
  assert "proxies_cifar10.npz" in str(error.value)


def test_check_table_leaves_the_callers_array_writable():
  values = _latencies()
  checked = tables.check_table("pixel3", values, positive=True)
  assert not checked.flags.writeable
  assert values.flags.writeable  # used to be frozen as a side effect
  np.testing.assert_array_equal(checked, values)


# --- HW-NAS-Bench ----------------------------------------------------------------------

HW_METRICS = ("edgegpu_latency", "edgegpu_energy", "raspi4_latency", "edgetpu_latency",
              "pixel3_latency", "eyeriss_latency", "eyeriss_energy",
              "eyeriss_arithmetic_intensity", "fpga_latency", "fpga_energy")
EDGETPU_FAILED = (5, 284, 15624)


def _hwnasbench_data():
  """The official layout: data["nasbench201"][dataname][metric][arch_index]."""
  rng = np.random.default_rng(0)
  data = {"nasbench201": {}}
  for k, dataname in enumerate(("cifar10", "cifar100", "ImageNet")):
    metrics = {metric: [float(v) for v in rng.uniform(1.0, 20.0, N) * (k + 1)]
               for metric in HW_METRICS}
    for i in EDGETPU_FAILED:
      metrics["edgetpu_latency"][i] = -1.0  # the compilation failed
    metrics["config"] = {"note": "not a metric"}
    data["nasbench201"][dataname] = metrics
  return data


@pytest.fixture(scope="module")
def hwnasbench_file(tmp_path_factory):
  data = _hwnasbench_data()
  path = tmp_path_factory.mktemp("hwnasbench") / "HW-NAS-Bench-v1_0.pickle"
  with open(path, "wb") as f:
    pickle.dump(data, f)
  return str(path), data


@pytest.mark.parametrize("dataset,dataname", [
    ("cifar10", "cifar10"), ("cifar100", "cifar100"), ("ImageNet16-120", "ImageNet")])
def test_load_hwnasbench_latencies(hwnasbench_file, dataset, dataname):
  path, data = hwnasbench_file
  latency_tables = tables.load_hwnasbench(path, dataset)
  assert sorted(latency_tables) == ["edgegpu", "edgetpu", "eyeriss", "fpga", "pixel3", "raspi4"]
  for device, values in latency_tables.items():
    assert values.shape == (N,) and not values.flags.writeable
    expected = np.array(data["nasbench201"][dataname][f"{device}_latency"])
    if device == "edgetpu":
      assert np.flatnonzero(np.isnan(values)).tolist() == list(EDGETPU_FAILED)
      expected[list(EDGETPU_FAILED)] = np.nan
    np.testing.assert_array_equal(values, expected)


def test_hwnasbench_failed_compilation_measures_inf(hwnasbench_file):
  path, data = hwnasbench_file
  edgetpu = TableDevice("edgetpu", tables.load_hwnasbench(path, "cifar10")["edgetpu"])
  for i in EDGETPU_FAILED:
    assert edgetpu.measure(i) == float("inf")
  assert edgetpu.measure(6) == data["nasbench201"]["cifar10"]["edgetpu_latency"][6]


def test_hwnasbench_named_metrics(hwnasbench_file):
  path, data = hwnasbench_file
  latency_tables = tables.load_hwnasbench(path, "cifar100", metrics=["fpga_energy", "eyeriss_latency"])
  assert sorted(latency_tables) == ["eyeriss", "fpga_energy"]
  np.testing.assert_array_equal(latency_tables["fpga_energy"],
                                data["nasbench201"]["cifar100"]["fpga_energy"])
  with pytest.raises(tables.BenchmarkDataError, match="no metric 'gpu_latency'.*edgegpu_latency"):
    tables.load_hwnasbench(path, "cifar10", metrics=["gpu_latency"])
  with pytest.raises(tables.BenchmarkDataError, match="unknown dataset 'imagenet'"):
    tables.load_hwnasbench(path, "imagenet")


def _dump(path, data):
  with open(path, "wb") as f:
    pickle.dump(data, f)
  return str(path)


@pytest.mark.parametrize("length", [N - 1, N + 1, 0])
def test_hwnasbench_metric_of_wrong_length(tmp_path, length):
  column = [1.0] * length
  path = _dump(tmp_path / "hw.pickle", {"nasbench201": {"cifar10": {"fpga_latency": column}}})
  with pytest.raises(tables.BenchmarkDataError,
                     match=f"'fpga_latency' in .*hw.pickle.*expected 15625.*{length} entries"):
    tables.load_hwnasbench(path)


def test_hwnasbench_non_numeric_and_zero_entries(tmp_path):
  column = [1.0] * N
  column[9] = "n/a"
  path = _dump(tmp_path / "hw.pickle", {"nasbench201": {"cifar10": {"fpga_latency": column}}})
  with pytest.raises(tables.BenchmarkDataError, match="'fpga_latency'.*expected 15625 numbers"):
    tables.load_hwnasbench(path)
  column[9] = 0.0  # zero is no "failed" marker (those are negative): it is an error
  path = _dump(tmp_path / "hw.pickle", {"nasbench201": {"cifar10": {"fpga_latency": column}}})
  with pytest.raises(tables.BenchmarkDataError, match="'fpga_latency'.*latencies <= 0.*index 9"):
    tables.load_hwnasbench(path)


@pytest.mark.parametrize("content", [
    b"definitely not a pickle",
    b"",
    b"\x80\x09 unsupported protocol",
    b"cno_such_module\nNoSuchClass\n.",
    pickle.dumps([1, 2, 3]),
    pickle.dumps({"nasbench101": {}}),
    pickle.dumps({"nasbench201": {"cifar100": {}}}),  # no cifar10
    pickle.dumps({"nasbench201": {"cifar10": [1.0, 2.0]}}),
], ids=["garbage", "empty", "protocol", "unknown_class", "list", "no_nasbench201",
        "no_dataname", "metrics_not_a_dict"])
def test_malformed_hwnasbench_pickle(tmp_path, content):
  path = tmp_path / "broken.pickle"
  path.write_bytes(content)
  with pytest.raises(tables.BenchmarkDataError, match="broken.pickle"):
    tables.load_hwnasbench(path)


def test_hwnasbench_without_latency_metrics(tmp_path):
  path = _dump(tmp_path / "hw.pickle",
               {"nasbench201": {"cifar10": {"fpga_energy": [1.0] * N, "config": {}}}})
  with pytest.raises(tables.BenchmarkDataError, match=r"no \*_latency metric.*fpga_energy"):
    tables.load_hwnasbench(path)


def test_missing_hwnasbench_file_says_where_it_looked(tmp_path):
  path = tmp_path / "HW-NAS-Bench-v1_0.pickle"
  with pytest.raises(tables.BenchmarkDataError, match="file not found") as error:
    tables.load_hwnasbench(path)
  assert str(path) in str(error.value)


# --- NATS-Bench ------------------------------------------------------------------------

def test_load_nats_bench_agrees_with_bundle(nats_fixture_dir, bundle):
  pytest.importorskip("nats_bench")
  latency_tables = tables.load_nats_bench(nats_fixture_dir, indices=FIXTURE_INDICES)
  assert sorted(latency_tables) == sorted(searchspace.DATASETS)
  for dataset, values in latency_tables.items():
    assert values.shape == (N,)
    assert np.flatnonzero(~np.isnan(values)).tolist() == list(FIXTURE_INDICES)
    # The bundle was exported from the same NATS-Bench records: identical to float64
    # rounding (they are in fact bit-identical).
    np.testing.assert_allclose(values[list(FIXTURE_INDICES)],
                               bundle.accuracy(dataset)[list(FIXTURE_INDICES)],
                               rtol=0, atol=1e-9)


def test_load_nats_bench_errors(nats_fixture_dir, tmp_path):
  pytest.importorskip("nats_bench")
  missing = tmp_path / "NATS-tss-v1_0-3ffb9-simple"
  with pytest.raises(tables.BenchmarkDataError, match="NATS-Bench not found") as error:
    tables.load_nats_bench(missing, indices=[0])
  assert str(missing) in str(error.value)
  with pytest.raises(tables.BenchmarkDataError, match="no 200-epoch 'cifar10' record for "
                     "architecture 1"):
    tables.load_nats_bench(nats_fixture_dir, ["cifar10"], indices=[0, 1])  # 1: not in fixture
  with pytest.raises(IndexError, match="-1"):  # used to fill values[-1] = index 15624
    tables.load_nats_bench(nats_fixture_dir, ["cifar10"], indices=[-1])
  with pytest.raises(tables.BenchmarkDataError, match="unknown datasets \\['imagenet'\\]"):
    tables.load_nats_bench(nats_fixture_dir, ["imagenet"], indices=[0])
