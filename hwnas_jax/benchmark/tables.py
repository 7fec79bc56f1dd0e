"""Benchmark tables: device latencies, test accuracies and proxy values per architecture.

Every array is indexed by the NATS-Bench architecture index (15,625 entries). Three
sources load into the same in-memory `Benchmark`:
  * the project's bundle (`latency_ms.npz`, `test_accuracy.npz`, `proxies_<dataset>.npz`),
    or any latency file of that layout, and folders of extra proxy tables (a proxy lab's
    `proxies_<dataset>.npz`) merged into the bundle's proxies;
  * the official HW-NAS-Bench pickle (`data["nasbench201"][dataname][metric][index]`);
  * NATS-Bench itself through the `nats_bench` package.
Test accuracies are for scoring only: nothing in meta-training or search reads them.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import zipfile
from typing import Iterable, Mapping, Sequence

import numpy as np

from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import checks
from hwnas_jax.benchmark import searchspace

DATA_DIR_ENV = "HWNAS_DATA_DIR"
PROXY_NAMES = aggregate.BUNDLE_TERMS  # every bundle proxy file has them
# PROTOCOL.md's split: the validation devices never inform anything fitted or trained.
VALIDATION_DEVICES = ("eyeriss", "fpga", "gold_6226", "titan_rtx_256")
# Device families (PROTOCOL.md), by name. A device not named here belongs to "other": an
# unknown device is the normal case, never an error. Studies that leave a family out read
# this table, so a new device of a known family is one line here.
FAMILIES = ("gpu_b1", "gpu_b32", "gpu_b256", "cpu", "phone", "other")
DEVICE_FAMILIES = {
    **{f"{gpu}_{batch}": f"gpu_b{batch}"
       for gpu in ("1080ti", "2080ti", "titan_rtx", "titanx") for batch in (1, 32, 256)},
    "gold_6226": "cpu", "gold_6240": "cpu", "silver_4114": "cpu",
    "pixel2": "phone", "samsung_s7": "phone", "pixel3": "phone",
    "eyeriss": "other", "fpga": "other",
}


def device_family(device: str) -> str:
  """The family of a device name (`DEVICE_FAMILIES`), "other" for any name it lacks."""
  return DEVICE_FAMILIES.get(device, "other")


def family_members(devices: Iterable[str]) -> dict[str, list[str]]:
  """{family: its devices among `devices`}, families in `FAMILIES` order, empty ones left out."""
  devices = list(devices)
  groups = {f: [d for d in devices if device_family(d) == f] for f in FAMILIES}
  return {f: members for f, members in groups.items() if members}
HWNASBENCH_DATANAMES = {"cifar10": "cifar10", "cifar100": "cifar100", "ImageNet16-120": "ImageNet"}


class BenchmarkDataError(ValueError):
  """A benchmark file is missing or malformed; the message says which and why."""


def data_dir(path: str | os.PathLike | None = None) -> str:
  """The bundle folder: `path` if given, else $HWNAS_DATA_DIR. Raises if neither exists."""
  candidate = path if path else os.environ.get(DATA_DIR_ENV)
  if not candidate:
    raise BenchmarkDataError(
        f"no benchmark folder given: pass --data_dir or set ${DATA_DIR_ENV} to the folder "
        "holding latency_ms.npz, test_accuracy.npz and proxies_<dataset>.npz")
  if not os.path.isdir(candidate):
    source = "argument" if path else f"${DATA_DIR_ENV}"
    raise BenchmarkDataError(f"benchmark folder {candidate!r} (from {source}) does not exist")
  return os.fspath(candidate)


def _require_file(path: str | os.PathLike) -> str:
  if os.path.isdir(path):
    raise BenchmarkDataError(f"{os.path.abspath(path)!r} is a folder, not a file")
  if not os.path.isfile(path):
    raise BenchmarkDataError(f"file not found: {os.path.abspath(path)!r}")
  return os.fspath(path)


def check_table(name: str, values: np.ndarray, *, positive: bool = False,
                allow_nan: bool = False, allow_minus_inf: bool = False,
                source: str = "") -> np.ndarray:
  """One value per architecture, finite (NaN, -inf only where allowed), positive if asked."""
  where = f" in {source}" if source else ""
  kind = getattr(values, "dtype", np.dtype(float)).kind
  if kind not in "iuf":  # a bool table would read as 1 ms (or accuracy 1) everywhere
    raise BenchmarkDataError(f"{name!r}{where}: values of type {values.dtype} are not "
                             "numbers; a table holds integers or floats")
  try:  # a copy: freezing it below must not freeze the caller's array
    values = np.array(values, dtype=np.float64)
  except (TypeError, ValueError) as error:
    raise BenchmarkDataError(f"{name!r}{where}: not numeric: {error}") from error
  if values.shape != (searchspace.NUM_ARCHS,):
    raise BenchmarkDataError(
        f"{name!r}{where}: expected {searchspace.NUM_ARCHS} values (one per architecture), "
        f"got shape {values.shape}")
  nan = np.isnan(values)
  if nan.any() and not allow_nan:
    raise BenchmarkDataError(f"{name!r}{where}: {int(nan.sum())} NaN values, "
                             f"first at index {int(np.argmax(nan))}")
  infinite = np.isposinf(values) | (np.isneginf(values) & (not allow_minus_inf))
  if infinite.any():
    raise BenchmarkDataError(f"{name!r}{where}: infinite values at index "
                             f"{int(np.argmax(infinite))}")
  if positive:
    bad = ~nan & (values <= 0)
    if bad.any():
      raise BenchmarkDataError(f"{name!r}{where}: {int(bad.sum())} latencies <= 0, first at "
                               f"index {int(np.argmax(bad))} ({values[np.argmax(bad)]})")
    fastest = np.nanmin(values) if (~nan).any() else MIN_LATENCY_MS
    if fastest < MIN_LATENCY_MS:
      raise BenchmarkDataError(f"{name!r}{where}: the fastest latency is {fastest:.3g} ms, "
                               f"below {MIN_LATENCY_MS:g} ms (a nanosecond): are these in "
                               "another unit? A latency table is in milliseconds")
  return frozen(values)


def frozen(values: np.ndarray) -> np.ndarray:
  """A read-only copy that nothing can make writable again: its memory is an immutable
  `bytes` object, so `setflags(write=True)` fails (a table shared by every cell and method
  stays as loaded). An array that is already such a copy is returned as it is."""
  base = values
  while isinstance(base, np.ndarray):
    base = base.base
  if isinstance(base, bytes) and not values.flags.writeable:
    return values
  values = np.ascontiguousarray(values)
  return np.frombuffer(values.tobytes(), values.dtype).reshape(values.shape)


def check_npz(path: str | os.PathLike) -> None:
  """BenchmarkDataError unless `path` is a zip archive, as `np.savez` writes (numpy would
  try other files as pickles and advise allow_pickle, which is never the fix)."""
  if not zipfile.is_zipfile(path):
    with open(path, "rb") as f:
      head = f.read(4)
    raise BenchmarkDataError(f"cannot read {os.fspath(path)!r} as .npz: it is not a zip "
                             f"archive of arrays, as np.savez writes (it starts with {head!r})")


def _load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  path = _require_file(path)
  check_npz(path)
  try:
    with np.load(path, allow_pickle=False) as data:
      return {key: data[key] for key in data.files}
  except Exception as error:  # a zip or npy error; say which file
    raise BenchmarkDataError(f"cannot read {path!r} as .npz: {error}") from error


def load_latency_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A latency `.npz`: one key per device, 15,625 latencies in ms each."""
  tables = _load_npz(path)
  if not tables:
    raise BenchmarkDataError(f"{path!r} holds no device")
  return {name: check_table(name, values, positive=True, source=os.fspath(path))
          for name, values in tables.items()}


def load_test_accuracy(path: str | os.PathLike) -> dict[str, np.ndarray]:
  tables = _load_npz(path)
  return {name: check_table(name, values, source=os.fspath(path)) for name, values in tables.items()}


MIN_LATENCY_MS = 1e-6


def check_varies(tables: Mapping[str, np.ndarray], path) -> dict[str, np.ndarray]:
  """Proxy tables, each with at least two values: a constant proxy ranks nothing."""
  for name, values in tables.items():
    finite = values[np.isfinite(values)]
    if finite.size and finite.min() == finite.max():
      raise BenchmarkDataError(f"proxy {name!r} in {os.fspath(path)!r} is {finite[0]:g} for "
                               "every architecture: a constant proxy ranks nothing")
  return dict(tables)


def load_proxy_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A proxy `.npz` (the bundle's `proxies_<dataset>.npz` or `score_proxies` output)."""
  tables = _load_npz(path)
  missing = [name for name in PROXY_NAMES if name not in tables]
  if missing:
    raise BenchmarkDataError(f"{path!r} lacks proxies {missing}; it has {sorted(tables)}")
  return check_varies({name: check_table(name, tables[name], source=os.fspath(path))
                       for name in tables if name != "index"}, path)


def load_extra_proxies(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A proxy lab's `.npz`: `index` (0..15624 in order) and one array per proxy name."""
  tables = _load_npz(path)
  index = tables.pop("index", None)
  if index is None or not np.array_equal(index, np.arange(searchspace.NUM_ARCHS)):
    got = "no 'index'" if index is None else f"'index' of shape {np.shape(index)}"
    raise BenchmarkDataError(f"{os.fspath(path)!r}: expected 'index' = "
                             f"0..{searchspace.NUM_ARCHS - 1} (every architecture, in order), "
                             f"got {got}")
  if not tables:
    raise BenchmarkDataError(f"{os.fspath(path)!r} holds no proxy besides 'index'")
  # -inf: the proxy's own verdict on a network whose output is always zero (AZ-NAS): worst.
  return check_varies({name: check_table(name, values, allow_minus_inf=True,
                                         source=os.fspath(path))
                       for name, values in tables.items()}, path)


def merge_proxies(into: Mapping[str, np.ndarray], extra: Mapping[str, np.ndarray],
                  dataset: str, source: str) -> dict[str, np.ndarray]:
  """`into` with the keys of `extra` (from file `source`) added.

  A key already there, or a structural term (computed from the architecture), must hold
  the same values (to float32 precision); it is then not added twice.
  """
  merged = dict(into)
  structural = aggregate.structural_terms(dataset)
  for name, values in extra.items():
    present = structural.get(name, merged.get(name))
    if present is None:
      merged[name] = values
    elif not np.allclose(values, present, rtol=1e-6, atol=0.0, equal_nan=True):
      what = "the structural term" if name in structural else "the proxy already loaded"
      raise BenchmarkDataError(f"proxy {name!r} of {dataset!r} in {source!r} differs from "
                               f"{what} of that name: rename it or drop one of them")
  return merged


def load_hwnasbench(path: str | os.PathLike, dataset: str = "cifar10",
                    metrics: Sequence[str] | None = None) -> dict[str, np.ndarray]:
  """Latency tables from the official HW-NAS-Bench pickle, keyed by device name.

  Entries that are negative (edgetpu: the compilation failed) become NaN: they are
  architectures the device cannot run, never a latency.
  """
  path = _require_file(path)
  if dataset not in HWNASBENCH_DATANAMES:
    raise BenchmarkDataError(f"unknown dataset {dataset!r}; known: {list(HWNASBENCH_DATANAMES)}")
  layout = "data['nasbench201'][dataname][metric][index]"
  try:
    with open(path, "rb") as f:
      data = pickle.load(f)
    per_metric = data["nasbench201"][HWNASBENCH_DATANAMES[dataset]]
    available = sorted(per_metric)
  except Exception as error:  # any unpickling or layout error; say which file and why
    raise BenchmarkDataError(
        f"{path!r} is not a HW-NAS-Bench pickle laid out as {layout}: {error!r}") from error
  names = list(metrics) if metrics else [
      m for m in available if isinstance(m, str) and m.endswith("_latency")]
  if not names:
    raise BenchmarkDataError(f"{path!r} has no *_latency metric for {dataset!r}; "
                             f"it has {available}")
  tables = {}
  for metric in names:
    if metric not in per_metric:
      raise BenchmarkDataError(f"{path!r} has no metric {metric!r}; it has {available}")
    column = per_metric[metric]
    try:
      if len(column) != searchspace.NUM_ARCHS:
        raise ValueError(f"{len(column)} entries")
      values = np.array([column[i] for i in range(searchspace.NUM_ARCHS)], dtype=np.float64)
    except Exception as error:  # wrong length, missing index, not numeric
      raise BenchmarkDataError(
          f"{metric!r} in {path!r}: expected {searchspace.NUM_ARCHS} numbers (one per "
          f"architecture, {layout}): {error}") from error
    values[values < 0] = np.nan
    tables[metric.removesuffix("_latency")] = check_table(
        metric, values, positive=True, allow_nan=True, source=path)
  return tables


def load_nats_bench(path: str | os.PathLike, datasets: Iterable[str] = searchspace.DATASETS,
                    indices: Iterable[int] | None = None) -> dict[str, np.ndarray]:
  """Test accuracies from NATS-Bench (`nats_bench`, 200 epochs, mean over seeds).

  cifar10 uses `test-accuracy`, cifar100 and ImageNet16-120 `valtest-accuracy` (the
  original test split). Indices not asked for are NaN, so a partial export still lines up.
  """
  from nats_bench import create  # optional dependency at import time

  path = os.fspath(path)
  if not os.path.exists(path):
    raise BenchmarkDataError(f"NATS-Bench not found at {os.path.abspath(path)!r}")
  datasets = list(datasets)
  unknown = [d for d in datasets if d not in searchspace.DATASETS]
  if unknown:
    raise BenchmarkDataError(f"unknown datasets {unknown}; known: {list(searchspace.DATASETS)}")
  # Checked first: a negative index would otherwise silently fill values[-1].
  indices = (range(searchspace.NUM_ARCHS) if indices is None
             else [searchspace.check_index(i) for i in indices])
  api = create(path, "tss", fast_mode=True, verbose=False)
  tables = {}
  for dataset in datasets:
    key = "test-accuracy" if dataset == "cifar10" else "valtest-accuracy"
    values = np.full(searchspace.NUM_ARCHS, np.nan)
    for i in indices:
      try:
        values[i] = api.get_more_info(i, dataset, hp="200", is_random=False)[key]
      except (AssertionError, FileNotFoundError, KeyError) as error:  # nats_bench asserts
        raise BenchmarkDataError(
            f"NATS-Bench at {os.path.abspath(path)!r} has no 200-epoch {dataset!r} record for "
            f"architecture {i}: {error}") from error
    tables[dataset] = values
  return tables


minmax = aggregate.minmax  # kept for callers; it lives with the aggregations


def combined_proxy(proxies: Mapping[str, np.ndarray], names: Sequence[str] = PROXY_NAMES) -> np.ndarray:
  """The mean of the min-max normalised proxies (the paper's with the default `names`).

  Kept for callers holding a bare dict of proxies; `Benchmark.proxy` is the way to ask.
  """
  return aggregate.combine("mean", [proxies[name] for name in names])


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """All tables of one benchmark; `latency_ms` may hold devices from several files."""
  latency_ms: Mapping[str, np.ndarray]
  test_accuracy: Mapping[str, np.ndarray]
  proxies: Mapping[str, Mapping[str, np.ndarray]]
  source: str = ""

  @property
  def devices(self) -> tuple[str, ...]:
    return tuple(self.latency_ms)

  @property
  def datasets(self) -> tuple[str, ...]:
    return tuple(d for d in searchspace.DATASETS if d in self.proxies)

  def latency(self, device: str) -> np.ndarray:
    if device not in self.latency_ms:
      raise KeyError(f"unknown device {device!r}; known devices: {', '.join(self.devices)}")
    return self.latency_ms[device]

  def proxy_terms(self, dataset: str) -> tuple[str, ...]:
    """The terms a proxy name may combine for `dataset`: its proxy tables, then structural."""
    return (*self._proxies_of(dataset), *aggregate.STRUCTURAL_TERMS)

  def proxy(self, dataset: str, name: str = aggregate.DEFAULT_PROXY) -> np.ndarray:
    """The named accuracy proxy of a dataset (`aggregate`'s grammar), larger = better.

    Free of charge and device independent; `paper` is PROTOCOL.md's reference proxy.
    """
    return aggregate.proxy(name, self._proxies_of(dataset), dataset)

  def named_proxies(self, dataset: str, names: Sequence[str]) -> list[np.ndarray]:
    """`proxy` of each name, computed together (each term ranked once)."""
    return aggregate.proxies_of(names, self._proxies_of(dataset), dataset)

  def _proxies_of(self, dataset: str) -> Mapping[str, np.ndarray]:
    if dataset not in self.proxies:
      raise KeyError(f"no proxies for dataset {dataset!r}; known: {', '.join(self.datasets)}")
    return self.proxies[dataset]

  def accuracy(self, dataset: str) -> np.ndarray:
    if dataset not in self.test_accuracy:
      raise KeyError(f"no test accuracy for dataset {dataset!r}; known: {sorted(self.test_accuracy)}")
    return self.test_accuracy[dataset]

  @property
  def training_devices(self) -> tuple[str, ...]:
    """Every device of the benchmark that is not a validation device."""
    return tuple(d for d in self.devices if d not in VALIDATION_DEVICES)

  def select_devices(self, names: Sequence[str]) -> "Benchmark":
    """The benchmark restricted to `names`: each known, and named once (a device named
    twice would count its cells twice)."""
    names = checks.names("devices", names)
    for name in names:
      self.latency(name)  # raises with the known names
    return dataclasses.replace(self, latency_ms={n: self.latency_ms[n] for n in names})


def load_benchmark(directory: str | os.PathLike | None = None, latency_file: str | None = None,
                   proxy_files: Mapping[str, str] | None = None,
                   proxy_dirs: Sequence[str | os.PathLike] = ()) -> Benchmark:
  """The bundle in `directory` (or $HWNAS_DATA_DIR); another latency or proxy file may replace its own.

  Each folder of `proxy_dirs` may hold `proxies_<dataset>.npz` files of extra proxies (a
  proxy lab's output); their keys join that dataset's proxies (`merge_proxies`). A folder
  without a dataset's file adds nothing to it.
  """
  directory = data_dir(directory)
  latency = load_latency_file(latency_file or os.path.join(directory, "latency_ms.npz"))
  accuracy = load_test_accuracy(os.path.join(directory, "test_accuracy.npz"))
  proxy_files = dict(proxy_files or {})
  for folder in proxy_dirs:
    if not os.path.isdir(folder):
      raise BenchmarkDataError(f"proxy folder {os.path.abspath(folder)!r} does not exist")
  proxies = {}
  for dataset in searchspace.DATASETS:
    path = proxy_files.get(dataset, os.path.join(directory, f"proxies_{dataset}.npz"))
    proxies[dataset] = merge_proxies({}, load_proxy_file(path), dataset, os.fspath(path))
    for folder in proxy_dirs:
      extra = os.path.join(folder, f"proxies_{dataset}.npz")
      if os.path.isfile(extra):
        proxies[dataset] = merge_proxies(proxies[dataset], load_extra_proxies(extra), dataset,
                                         extra)
  return Benchmark(latency, accuracy, proxies, source=os.path.abspath(directory))
