"""Shared entry-point plumbing: bad input ends in one readable line, not a traceback."""

import os
import sys

from absl import app

from experiments.configs import default
from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import searchspace
from hwnas_jax.benchmark.tables import BenchmarkDataError
from hwnas_jax.devices.interface import DeviceError
from hwnas_jax.metatrain import config as config_lib

USER_ERRORS = (BenchmarkDataError, DeviceError, ValueError, KeyError, FileNotFoundError,
               IndexError, TypeError)


def run(main):
  """`absl.app.run(main)`, printing user errors as `error: ...` and exiting with 2."""

  def guarded(argv):
    try:
      return main(argv)
    except USER_ERRORS as error:
      message = error.args[0] if isinstance(error, KeyError) and error.args else error
      print(f"error: {message}", file=sys.stderr)
      sys.exit(2)

  app.run(guarded)


def checked_config(config):
  """The config, its keys checked against default.py's and its values against their rules."""
  config_lib.check_keys(config, default.get_config())
  config_lib.validate(config)
  return config


def proxy_files(items) -> dict[str, str]:
  """--proxy_files entries `dataset:PATH.npz` as a dict, each dataset known and each file there."""
  files = {}
  for item in items:
    dataset, sep, path = item.partition(":")
    if not sep or not path:
      raise ValueError(f"--proxy_files entry {item!r} is not dataset:PATH.npz")
    if dataset not in searchspace.DATASETS:
      raise ValueError(f"--proxy_files names dataset {dataset!r}; known: "
                       f"{', '.join(searchspace.DATASETS)}")
    if dataset in files:
      raise ValueError(f"--proxy_files names {dataset!r} twice")
    if not os.path.isfile(path):
      raise FileNotFoundError(f"--proxy_files: {path!r} does not exist")
    files[dataset] = path
  return files


def checked_output(path: str | None, overwrite_note: bool = True) -> str | None:
  """An output file path checked before any work: not a folder, its folder creatable, and a
  note when an existing file will be replaced (results are never overwritten silently)."""
  if not path:
    return path
  if os.path.isdir(path):
    raise ValueError(f"--output {path!r} is a folder; give a file path such as "
                     f"{os.path.join(path, 'results.json')!r}")
  folder = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as error:
    raise ValueError(f"--output {path!r}: cannot create its folder ({error})") from None
  if not os.access(folder, os.W_OK):
    raise ValueError(f"--output {path!r}: its folder is not writable")
  if os.path.exists(path) and overwrite_note:
    print(f"note: {path} exists and will be replaced when this run finishes")
  return path


def check_proxy(benchmark, name: str, datasets) -> str:
  """`name` (benchmark/aggregate.py's grammar) checked against every dataset's proxy terms."""
  for dataset in datasets:
    aggregate.parse(name, benchmark.proxy_terms(dataset))
  return name
