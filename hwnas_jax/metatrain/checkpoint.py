"""A meta-training workdir on disk: its config, and per seed a checkpoint and metrics.

  WORKDIR/config.json               the config and what data it trained on
  WORKDIR/seed_<s>/checkpoint.msgpack   the `TrainState` after the last saved update
  WORKDIR/seed_<s>/metrics.jsonl        one line per update
  WORKDIR/seed_<s>/training_curve.png   held-out synthetic score against random search

Writes are atomic (a temporary file, then a rename), so an interruption loses at most the
updates since the last checkpoint, and a resumed run rewrites exactly those.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from typing import Any

import flax.serialization
import jax
import ml_collections
import numpy as np

from hwnas_jax.metatrain import config as config_lib

CONFIG = "config.json"
CHECKPOINT = "checkpoint.msgpack"
METRICS = "metrics.jsonl"
CURVE = "training_curve.png"
QUOTES = "\"'"  # around a KeyError's key, twice over in ConfigDict's AttributeError


def seed_dir(workdir: str, seed: int) -> str:
  return os.path.join(workdir, f"seed_{seed}")


def seeds_of(config) -> list[int]:
  """The seeds a config trains: `seed`, `seed + 1`, ... (`num_seeds` of them)."""
  return [int(config.seed) + i for i in range(int(config.num_seeds))]


def _write_atomic(path: str, payload: bytes) -> None:
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(payload)
  os.replace(tmp, path)


def check_run(workdir: str, config, fresh: bool = False) -> bool:
  """True if `workdir` holds a run of `config` to resume; ValueError, before anything is
  written, for a workdir that cannot hold it.

  Refused: a file; a folder that cannot be created; a run with another config (beyond
  `config_lib.RESUMABLE`), a config.json that cannot be read, or checkpoints without a
  config.json (starting over would overwrite them). `--fresh` starts afresh instead.
  """
  if not workdir:
    raise ValueError("--workdir is empty; give the folder of the run")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir {workdir!r} is a file, not a folder")
  parent = os.path.dirname(os.path.abspath(workdir))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
    raise ValueError(f"--workdir {workdir!r} cannot be created: {parent!r} is not a "
                     "writable folder")
  if fresh or not os.path.isdir(workdir):
    return False
  if not os.access(workdir, os.W_OK):
    raise ValueError(f"--workdir {workdir!r} is not writable")
  path = os.path.join(workdir, CONFIG)
  hint = "Use another --workdir, or --fresh to start afresh (it deletes that run's checkpoints)"
  if not os.path.isfile(path):
    found = [s for s in os.listdir(workdir) if s.startswith("seed_") and os.listdir(
        os.path.join(workdir, s))]
    if found:
      raise ValueError(f"{workdir!r} holds {', '.join(sorted(found))} but no {CONFIG}: "
                       f"starting over would overwrite them. {hint}")
    return False
  try:
    saved = read_config(workdir)
  except ValueError as error:
    raise ValueError(f"{error}. {hint}") from None
  changed = config_lib.differences(saved.to_dict(), config)
  if changed:
    raise ValueError(
        f"{workdir!r} holds a run with another config ({'; '.join(changed)}): resuming it "
        f"would continue the old run. {hint}")
  return True


LOCK = ".lock"


@contextlib.contextmanager
def locked(workdir: str):
  """Hold `workdir` for one run: a second run into it (which would interleave its metrics
  and checkpoints) is refused while the first holds the lock; the lock ends with the
  process, even a killed one (fcntl)."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK)
  with open(path, "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "another process"
      raise ValueError(f"{workdir!r} is in use by another run ({holder}, lock {path}); wait "
                       "for it to end, or give another --workdir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def open_run(workdir: str, config, source: str, fresh: bool = False,
             in_context_start=None) -> bool:
  """Prepare `workdir` for `config` (`check_run` first); True if it holds a run to resume.

  `fresh` removes the checkpoints, metrics and config of a run already there.
  `in_context_start`: (prior mean, prior scale) the controllers started from
  (`train.fit_in_context_start`), kept so that their untrained start is rebuilt exactly,
  whatever bundle is at hand later.
  """
  resuming = check_run(workdir, config, fresh)
  path = os.path.join(workdir, CONFIG)
  if fresh and os.path.isdir(workdir):
    for name in os.listdir(workdir):
      if name.startswith("seed_") or name == CONFIG:
        target = os.path.join(workdir, name)
        shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
  os.makedirs(workdir, exist_ok=True)
  for seed in seeds_of(config):
    os.makedirs(seed_dir(workdir, seed), exist_ok=True)
  record = {"config": config.to_dict(), "source": source}
  if in_context_start is not None:
    record["in_context_start"] = {"prior_mean": np.asarray(in_context_start[0]).tolist(),
                                  "prior_scale": float(in_context_start[1])}
  payload = json.dumps(record, indent=1)
  _write_atomic(path, payload.encode())
  return resuming


# Config keys added after runs were saved, with the value those runs trained under: the
# paper's proxy and no penalty for an episode without a valid answer.
KEYS_ADDED_LATER = {"proxy": "paper", "invalid_penalty": 0.0, "held_out_family": "",
                    "num_probes_range": (), "noise_told_share": 0.0,
                    "episode_minibatches": False, "num_probes_power": 0.0,
                    "prior_fitted_weight": 0.5, "in_context_prior": config_lib.FLAT_START}


def read_in_context_start(workdir: str) -> tuple[np.ndarray, float] | None:
  """The (prior mean, prior scale) a workdir's controllers started from, or None (a flat
  start, or a run saved before starts were kept)."""
  with open(os.path.join(workdir, CONFIG)) as f:
    start = json.load(f).get("in_context_start")
  if start is None:
    return None
  return np.asarray(start["prior_mean"], np.float32), float(start["prior_scale"])


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with, its values checked (`config_lib.validate`), so
  a damaged config.json is named here rather than failing deep inside a model."""
  path = os.path.join(workdir, CONFIG)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no meta-training run in {workdir!r} (looked for {path})")
  try:
    with open(path) as f:
      config = ml_collections.ConfigDict(json.load(f)["config"])
    for key, value in KEYS_ADDED_LATER.items():
      if key not in config:
        config[key] = value
    config_lib.validate(config)
  except (KeyError, AttributeError) as error:  # a key the config was saved without
    raise ValueError(f"{path!r} is not a meta-training config: it lacks the key "
                     f"{str(error).strip(QUOTES)!r}") from None
  except (ValueError, TypeError) as error:
    raise ValueError(f"{path!r} is not a meta-training config: {error}") from None
  return config


def _serializable(state) -> dict:
  """A `TrainState` as a plain dict with its key as raw data (what msgpack can hold)."""
  return {**dict(state), "key": jax.random.key_data(state.key)}


def save(workdir: str, seed: int, state) -> None:
  """One seed's unbatched `TrainState`."""
  payload = flax.serialization.to_bytes(_serializable(state))
  _write_atomic(os.path.join(seed_dir(workdir, seed), CHECKPOINT), payload)


def restore(workdir: str, seed: int, template):
  """That seed's saved `TrainState` (shaped like `template`), or None if it has none."""
  path = os.path.join(seed_dir(workdir, seed), CHECKPOINT)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, "rb") as f:
      restored = flax.serialization.from_bytes(_serializable(template), f.read())
  except Exception as error:  # msgpack and shape errors alike: say which file
    raise ValueError(f"cannot read the checkpoint {path!r} ({error}); remove it, or start "
                     "afresh with --fresh") from error
  shapes = lambda tree: [np.shape(x) for x in jax.tree.leaves(tree)]
  if shapes(restored) != shapes(_serializable(template)):  # flax does not compare them
    raise ValueError(f"the checkpoint {path!r} holds arrays of other shapes than "
                     f"{os.path.join(workdir, CONFIG)} describes (was it edited?); restore the "
                     "config it was trained with, or start afresh with --fresh")
  restored["key"] = jax.random.wrap_key_data(restored["key"])
  return type(template)(**restored)


def append_metrics(workdir: str, seed: int, metrics: dict[str, Any]) -> None:
  with open(os.path.join(seed_dir(workdir, seed), METRICS), "a") as f:
    f.write(json.dumps(metrics) + "\n")


def read_metrics(workdir: str, seed: int) -> list[dict[str, Any]]:
  path = os.path.join(seed_dir(workdir, seed), METRICS)
  if not os.path.isfile(path):
    return []
  rows = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError as error:
          if not line.endswith("\n"):  # the last line, cut by an interruption: resume drops it
            break
          raise ValueError(f"{path}: line {number} is not JSON ({error}); the file was "
                           "edited or damaged: remove that line, or rerun with --fresh") from None
  return rows


def truncate_metrics(workdir: str, seed: int, step: int) -> None:
  """Drop the lines of updates after `step`: a resumed run replays and rewrites them."""
  kept = [m for m in read_metrics(workdir, seed) if m["step"] <= step]
  payload = "".join(json.dumps(m) + "\n" for m in kept)
  _write_atomic(os.path.join(seed_dir(workdir, seed), METRICS), payload.encode())


def trained_seeds(workdir: str) -> list[int]:
  """The seeds of `workdir` that have a checkpoint."""
  config = read_config(workdir)
  seeds = [s for s in seeds_of(config)
           if os.path.isfile(os.path.join(seed_dir(workdir, s), CHECKPOINT))]
  if not seeds:
    raise FileNotFoundError(f"{workdir!r} has no checkpoint yet")
  return seeds
