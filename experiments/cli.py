"""Shared entry-point plumbing: bad input ends in one readable line, not a traceback."""

import contextlib
import math
import os
import sys
import tempfile

from absl import app

from experiments.configs import default
from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import checks
from hwnas_jax.benchmark import searchspace
from hwnas_jax.benchmark.tables import BenchmarkDataError
from hwnas_jax.devices.interface import DeviceError
from hwnas_jax.metatrain import checkpoint
from hwnas_jax.metatrain import config as config_lib
from hwnas_jax.search import registry

# OSError: a path that cannot be read or written is the user's to fix, not a traceback.
USER_ERRORS = (BenchmarkDataError, DeviceError, ValueError, KeyError, OSError,
               IndexError, TypeError)


def run(main, define_flags=None):
  """Define the flags (`define_flags()`) and `absl.app.run(main)`, printing user errors as
  `error: ...` and exiting with 2."""

  def guarded(argv):
    try:
      return main(argv)
    except USER_ERRORS as error:
      fail(message(error))

  if define_flags is not None:
    with _flag_errors(sys.argv):  # a config flag reads its --config.KEY overrides here
      define_flags()

  def parse_flags(argv):
    with _flag_errors(argv):
      return app.parse_flags_with_usage(argv)

  app.run(guarded, flags_parser=parse_flags)


def message(error: BaseException) -> str:
  """What `run` prints for a user error (a KeyError's text without its quotes)."""
  return str(error.args[0] if isinstance(error, KeyError) and error.args else error)


def fail(text) -> None:
  print(f"error: {text}", file=sys.stderr)
  sys.exit(2)


@contextlib.contextmanager
def _flag_errors(argv):
  """A config file that cannot be loaded, or a `--config.KEY=` the config lacks, in one
  line (ml_collections raises them raw while the flags are defined or parsed)."""
  try:
    yield
  except (AttributeError, KeyError) as error:
    key = str(error).strip("\"'")
    overrides = [a for a in argv[1:] if a.startswith("--")
                 and key in a.split("=")[0].split(".")[1:]]
    if overrides:
      fail(f"{overrides[0]}: the config has no key {key!r} (the schema is "
           "experiments/configs/default.py)")
    fail(f"cannot load the flags ({type(error).__name__}: {error}); a --config file must "
         "define get_config() returning an ml_collections.ConfigDict")
  except (SyntaxError, ImportError, OSError, TypeError, ValueError) as error:
    fail(f"cannot load the flags: {type(error).__name__}: {error}")


def checked_config(config):
  """The config, its keys checked against default.py's and its values against their rules."""
  if not hasattr(config, "items") or not hasattr(config, "to_dict"):
    raise ValueError("the --config file's get_config() must return an "
                     f"ml_collections.ConfigDict, got {type(config).__name__}")
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
      raise FileNotFoundError(f"--proxy_files: {path!r} "
                              + ("is a folder, not a file" if os.path.isdir(path)
                                 else "does not exist"))
    files[dataset] = path
  return files


def checked_workdir(workdir: str, config, fresh: bool) -> str:
  """A meta-training --workdir checked before any work (`checkpoint.check_run`), with a
  note when --fresh is about to delete a run there."""
  checkpoint.check_run(workdir, config, fresh)
  if fresh and os.path.isfile(os.path.join(workdir, checkpoint.CONFIG)):
    print(f"note: --fresh: the run in {workdir} (its config, checkpoints and metrics) will be "
          "deleted")
  return workdir


def checked_output(path: str | None, overwrite_note: bool = True,
                   flag: str = "--output") -> str | None:
  """An output file path checked before any work: not a folder, its folder creatable, and a
  note when an existing file will be replaced (results are never overwritten silently)."""
  if not path:
    return path
  if os.path.isdir(path):
    raise ValueError(f"{flag} {path!r} is a folder; give a file path such as "
                     f"{os.path.join(path, 'results.json')!r}")
  folder = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as error:
    raise ValueError(f"{flag} {path!r}: cannot create its folder ({error})") from None
  _check_writable(folder, f"{flag} {path!r}: its folder")
  if os.path.exists(path) and overwrite_note:
    print(f"note: {path} exists and will be replaced when this run finishes")
  return path


def checked_folder(path: str, flag: str) -> str:
  """An output folder checked before any work: not a file, creatable and writable."""
  if not path:
    raise ValueError(f"{flag} is empty; give a folder")
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"{flag} {path!r} is a file, not a folder")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as error:
    raise ValueError(f"{flag} {path!r}: cannot create it ({error})") from None
  _check_writable(path, f"{flag} {path!r}")
  return path


def _check_writable(folder: str, what: str) -> None:
  """A file can be created in `folder` (tried: `os.access` says yes to root everywhere)."""
  try:
    with tempfile.TemporaryFile(dir=folder):
      pass
  except OSError as error:
    raise ValueError(f"{what} is not writable ({error.strerror or error})") from None


def names(flag: str, values, known) -> list[str]:
  """A list flag of names: one or more, each known, none twice."""
  return checks.names(flag, values, known)


def whole(flag: str, value, minimum: int = 1) -> int:
  """An integer flag checked against its least allowed value (absl checks only the type)."""
  if value is None or isinstance(value, bool) or value != int(value) or value < minimum:
    raise ValueError(f"{flag} must be a whole number >= {minimum}, got {value!r}")
  return int(value)


def number(flag: str, value, minimum: float = 0.0, inclusive: bool = True) -> float:
  """A float flag: finite, and >= `minimum` (> when not `inclusive`)."""
  ok = (value is not None and math.isfinite(value)
        and (value >= minimum if inclusive else value > minimum))
  if not ok:
    raise ValueError(f"{flag} must be a finite number {'>=' if inclusive else '>'} "
                     f"{minimum:g}, got {value!r}")
  return float(value)


def numbers(flag: str, values, minimum: float = 0.0, maximum: float = math.inf,
            allow_minimum: bool = False) -> list[float]:
  """A list flag of numbers in (minimum, maximum] ([minimum, ...] with `allow_minimum`),
  one or more, none twice."""
  values = list(values)
  if not values:
    raise ValueError(f"{flag} is empty; give one or more numbers")
  parsed = []
  for item in values:
    try:
      value = float(item)
    except (TypeError, ValueError):
      raise ValueError(f"{flag}: {item!r} is not a number") from None
    low_ok = value >= minimum if allow_minimum else value > minimum
    if not (math.isfinite(value) and low_ok and value <= maximum):
      interval = (f"{'[' if allow_minimum else '('}{minimum:g}, "
                  + ("inf)" if math.isinf(maximum) else f"{maximum:g}]"))
      raise ValueError(f"{flag}: {item!r} is outside {interval}")
    parsed.append(value)
  twice = sorted({v for v in parsed if parsed.count(v) > 1})
  if twice:
    raise ValueError(f"{flag} gives {', '.join(f'{v:g}' for v in twice)} twice")
  return parsed


def host_settings(fv, prefix: str) -> dict:
  """The host network's flags (`--{prefix}channels`, ...) as HostDevice arguments, checked:
  sizes and counts >= 1, warmup >= 0."""
  settings = {key: whole(f"--{prefix}{key}", fv[prefix + key].value,
                         minimum=0 if key == "warmup" else 1)
              for key in ("batch_size", "channels", "num_cells", "repeats", "warmup")}
  size = fv[prefix + "image_size"].value
  settings["image_size"] = None if size is None else whole(f"--{prefix}image_size", size)
  return settings


def note_unused_checkpoint(checkpoint: str | None, methods) -> None:
  """A note when --checkpoint is given but no method reads it (it would be ignored)."""
  if checkpoint and not any(m.removeprefix(registry.UNTRAINED) in registry.CONTROLLERS
                            for m in methods):
    print(f"note: --checkpoint {checkpoint!r} is not used: none of --methods "
          f"({', '.join(methods)}) is a controller")


def check_proxy(benchmark, name: str, datasets) -> str:
  """`name` (benchmark/aggregate.py's grammar) checked against every dataset's proxy terms."""
  for dataset in datasets:
    aggregate.parse(name, benchmark.proxy_terms(dataset))
  return name
