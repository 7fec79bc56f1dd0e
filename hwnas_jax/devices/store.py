"""Every real latency probe in an embedded SQLite database, so no measurement is lost.

A row holds the device, its runtime and settings, the architecture, every timing, the median
and spread, the time it was taken, and whether it failed (with the error). The default file
is `$XDG_CACHE_HOME/hwnas-jax/measurements.sqlite` (`~/.cache/...` without it). The database
runs in WAL mode and every write is one short transaction, retried while another process
holds the lock, so searches writing at once lose nothing.

`StoredDevice` wraps a live device for one search, keyed by everything that decides its
probes (`run_key`): the n-th probe of a search that already ran that far is read back
instead of measured, so a search killed halfway and started again replays its first probes
(a method given the same answers asks for the same architectures) and measures only the rest.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import sqlite3
import time
from typing import Any

import numpy as np

from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices.host import Measurement
from hwnas_jax.devices.interface import DeviceError

FILE_NAME = "measurements.sqlite"
SQLITE_HEADER = b"SQLite format 3\x00"
COLUMNS = ("id", "taken_at", "device", "runtime", "settings", "run_key", "step", "tag",
           "arch_index", "arch", "status", "error", "median_ms", "iqr_ms", "times_ms", "wall_s")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS probes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  taken_at TEXT NOT NULL,
  device TEXT NOT NULL,
  runtime TEXT NOT NULL,
  settings TEXT NOT NULL,
  run_key TEXT,
  step INTEGER,
  tag TEXT NOT NULL,
  arch_index INTEGER NOT NULL,
  arch TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
  error TEXT,
  median_ms REAL,
  iqr_ms REAL,
  times_ms TEXT,
  wall_s REAL);
CREATE INDEX IF NOT EXISTS probes_by_run ON probes (run_key, step);
CREATE INDEX IF NOT EXISTS probes_by_device ON probes (device);
"""
RETRIES = 20
# Tags of measurements a resumed search reads back; a "check" after the search is always new.
REPLAYED_TAGS = ("probe", "reference")


def default_path() -> str:
  """The store in the user's cache folder (XDG_CACHE_HOME, else ~/.cache)."""
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(cache, "hwnas-jax", FILE_NAME)


def run_key(**fields) -> str:
  """A short, stable hash of what decides a search's probes (JSON of the sorted fields)."""
  return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


class MeasurementStore:
  """The SQLite file at `path` (created with its folder when missing)."""

  def __init__(self, path: str | None = None):
    self.path = path or default_path()
    if os.path.isdir(self.path):
      raise ValueError(f"--store {self.path!r} is a folder; give a file such as "
                       f"{os.path.join(self.path, FILE_NAME)!r}")
    if os.path.isfile(self.path) and os.path.getsize(self.path) > 0:
      with open(self.path, "rb") as f:
        if f.read(16) != SQLITE_HEADER:  # SQLite would take a short text file for a new store
          raise ValueError(f"--store {self.path!r} is not a measurement store (not SQLite)")
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    try:
      self._connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
      self._retry(lambda c: c.execute("PRAGMA journal_mode=WAL"))
      self._retry(lambda c: c.executescript(_SCHEMA))
    except sqlite3.DatabaseError as error:
      raise ValueError(f"--store {self.path!r} is not a measurement store ({error})") from None

  def close(self) -> None:
    self._connection.close()

  def _retry(self, action):
    """`action(connection)`, retried with a growing pause while the database is locked."""
    for attempt in range(RETRIES):
      try:
        return action(self._connection)
      except sqlite3.OperationalError as error:
        if "locked" not in str(error) and "busy" not in str(error) or attempt == RETRIES - 1:
          raise
        time.sleep(0.01 * (attempt + 1))
    return None

  def add(self, *, device: str, runtime: str, settings: dict, index: int, status: str = "ok",
          tag: str = "probe", run: str | None = None, step: int | None = None,
          times_ms=None, median_ms: float | None = None, iqr_ms: float | None = None,
          wall_s: float | None = None, error: str | None = None) -> int:
    """One probe, in its own transaction; returns its row id."""
    row = (datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
           device, runtime, json.dumps(settings, sort_keys=True, default=str), run, step, tag,
           int(index), searchspace.index_to_string(index), status, error,
           _finite_or_none(median_ms), _finite_or_none(iqr_ms),
           None if times_ms is None else json.dumps([float(t) for t in times_ms]),
           _finite_or_none(wall_s))

    def insert(connection):
      with connection:  # BEGIN ... COMMIT
        return connection.execute(
            f"INSERT INTO probes ({', '.join(COLUMNS[1:])}) VALUES "
            f"({', '.join('?' * (len(COLUMNS) - 1))})", row).lastrowid
    return self._retry(insert)

  def find(self, run: str, step: int, tag: str = "probe") -> dict | None:
    """The successful probe `step` of search `run`, if one was recorded."""
    rows = self.rows("run_key = ? AND step = ? AND tag = ? AND status = 'ok' ORDER BY id",
                     (run, step, tag))
    return rows[-1] if rows else None

  def rows(self, where: str = "1", params: tuple = ()) -> list[dict]:
    """Rows as dicts (times_ms and settings decoded), in the order they were taken."""
    cursor = self._retry(lambda c: c.execute(
        f"SELECT {', '.join(COLUMNS)} FROM probes WHERE {where}", params))
    out = []
    for values in cursor.fetchall():
      row = dict(zip(COLUMNS, values))
      row["times_ms"] = None if row["times_ms"] is None else json.loads(row["times_ms"])
      row["settings"] = json.loads(row["settings"])
      out.append(row)
    return out

  def device_rows(self, device: str | None = None) -> list[dict]:
    return self.rows("1 ORDER BY id") if device is None else self.rows(
        "device = ? ORDER BY id", (device,))


def _finite_or_none(value):
  return None if value is None or not math.isfinite(float(value)) else float(value)


def noise_level(rows: list[dict]) -> dict:
  """The device's noise from earlier searches: sigma of log-latency between measurements of
  one architecture with one set of settings (pooled over architectures measured at least
  twice), as `devices.noise` models a probe; also the median relative IQR within a probe."""
  groups: dict[tuple, list[float]] = {}
  relative_iqr = []
  for row in rows:
    if row["status"] != "ok" or not row["median_ms"]:
      continue
    key = (row["device"], json.dumps(row["settings"], sort_keys=True), row["arch_index"])
    groups.setdefault(key, []).append(math.log(row["median_ms"]))
    if row["iqr_ms"] is not None:
      relative_iqr.append(row["iqr_ms"] / row["median_ms"])
  ss = sum(float(np.sum((np.asarray(v) - np.mean(v)) ** 2)) for v in groups.values())
  dof = sum(len(v) - 1 for v in groups.values())
  return {"sigma": math.sqrt(ss / dof) if dof else None, "ss": ss, "dof": dof,
          "architectures_repeated": sum(len(v) > 1 for v in groups.values()),
          "measurements": sum(len(v) for v in groups.values()),
          "median_relative_iqr": float(np.median(relative_iqr)) if relative_iqr else None}


class StoredDevice:
  """A live device whose every probe goes into `store`, and whose probes of search `run`
  that were recorded before are read back instead of measured (`replayed` counts them)."""

  def __init__(self, device, store: MeasurementStore, run: str):
    self.device, self.store, self.run = device, store, run
    self.name = device.name
    self.records: list[Measurement] = []
    self.replayed = 0
    self._steps: dict[str, int] = {}
    self._settings = device.settings() if hasattr(device, "settings") else {}
    self._runtime = getattr(device, "runtime", None) or self._settings.get("backend", "unknown")

  def settings(self) -> dict[str, Any]:
    return self._settings

  def measure(self, index: int, tag: str = "probe") -> float:
    index = searchspace.check_index(index)
    step = self._steps[tag] = self._steps.get(tag, 0) + 1
    stored = self.store.find(self.run, step, tag) if tag in REPLAYED_TAGS else None
    if stored is not None and stored["arch_index"] == index:
      self.replayed += 1
      self.records.append(_replayed_measurement(stored))
      return stored["median_ms"]
    common = dict(device=self.name, runtime=self._runtime, settings=self._settings,
                  index=index, tag=tag, run=self.run, step=step)
    inner = getattr(self.device, "records", None)
    before = len(inner) if inner is not None else 0
    try:
      latency_ms = self.device.measure(index, tag=tag) if inner is not None \
          else self.device.measure(index)
    except DeviceError as error:
      self.store.add(status="failed", error=str(error), **common)
      raise
    record = inner[-1] if inner is not None and len(inner) > before else None
    timings = getattr(self.device, "timings", None)
    times_ms = timings[-1] if timings else None
    self.store.add(times_ms=times_ms, median_ms=latency_ms,
                   iqr_ms=None if record is None else record.iqr_ms,
                   wall_s=None if record is None else record.wall_s, **common)
    self.records.append(record or _replayed_measurement(
        {"arch_index": index, "median_ms": latency_ms, "iqr_ms": None, "times_ms": None,
         "tag": tag}))
    return latency_ms


def _replayed_measurement(row: dict) -> Measurement:
  """A stored probe as the record a live measurement leaves (nothing built, nothing run)."""
  times = np.asarray(row["times_ms"] or [row["median_ms"]], np.float64)
  nan = math.nan
  return Measurement(
      index=row["arch_index"], arch=searchspace.index_to_string(row["arch_index"]),
      latency_ms=row["median_ms"], iqr_ms=nan if row["iqr_ms"] is None else row["iqr_ms"],
      std_ms=float(np.std(times)) if row["times_ms"] else nan, min_ms=float(times.min()),
      max_ms=float(times.max()), repeats=len(times), build_s=0.0, compile_s=0.0, wall_s=0.0,
      reused_executable=True, tag="replayed" if row.get("id") else row["tag"])
