"""Shared entry-point plumbing: bad input ends in one readable line, not a traceback."""

import contextlib
import difflib
import inspect
import logging
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

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

  logging.getLogger("jax._src.xla_bridge").addFilter(_quiet_missing_tpu)
  if define_flags is not None:
    with _flag_errors(sys.argv):  # a config flag reads its --config.KEY overrides here
      define_flags()

  def parse_flags(argv):
    with _flag_errors(argv):
      try:
        return app.parse_flags_with_usage(argv)
      except SystemExit as stop:  # absl ends --help with status 1
        if stop.code == 1 and any(a in HELP_FLAGS for a in argv[1:]):
          entries = config_help(flags.FLAGS, argv)
          if entries:
            print("\n" + entries)
          sys.exit(0)
        raise

  signal.signal(signal.SIGTERM, _interrupt)
  _watch_signals()
  try:
    app.run(guarded, flags_parser=parse_flags)
  except KeyboardInterrupt as stop:
    interrupted(stop)


INTERRUPTED_EXIT = 130  # the shell's code for a program ended by Ctrl-C


def _interrupt(signum, frame) -> None:
  """SIGTERM ends a command as Ctrl-C does: one line, the work written so far kept."""
  del frame
  raise KeyboardInterrupt(signal.Signals(signum).name)


_ENDING = threading.Lock()


def interrupted(stop: KeyboardInterrupt) -> None:
  """One line for Ctrl-C or SIGTERM, no traceback, exit 130. `os._exit`: the interpreter's
  shutdown would wait on (or crash in) a compilation that XLA's threads are running; what
  the commands write is written atomically or line by line, and read back by their resume."""
  _ENDING.acquire()  # the first of the main thread and the watcher says it; the other waits
  print(f"\ninterrupted ({stop.args[0] if stop.args else 'Ctrl-C'}); finished work is kept "
        "where the command writes it as it goes", file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(INTERRUPTED_EXIT)  # pylint: disable=protected-access


def _watch_signals() -> None:
  """End the command at once, also while the main thread is inside a long C call (an XLA
  compilation runs for a minute and would only then see the KeyboardInterrupt): Python's
  C-level handler writes each signal to a wakeup pipe, which a daemon thread reads."""
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

  def watch() -> None:
    while True:
      number = os.read(read_fd, 1)
      if number and number[0] in (signal.SIGINT, signal.SIGTERM):
        name = "Ctrl-C" if number[0] == signal.SIGINT else "SIGTERM"
        time.sleep(0.5)  # a main thread in Python says it first, with its own cleanup
        interrupted(KeyboardInterrupt(name))

  threading.Thread(target=watch, name="signal-watch", daemon=True).start()


HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull")


def _quiet_missing_tpu(record: logging.LogRecord) -> bool:
  """Drop jax's note that no TPU library is installed (every CPU or GPU machine lacks one);
  which backend jax picks is unchanged, and its warnings still pass."""
  return not (record.levelno <= logging.INFO
              and record.getMessage().startswith("Unable to initialize backend 'tpu'"))


def config_help(fv: flags.FlagValues, argv) -> str:
  """The `--config.KEY` entries of every config flag, with the value the --config file given
  in `argv` (or the flag's default file) sets and default.py's comment on the key."""
  notes = _config_comments(inspect.getsource(default))
  parts = []
  for name in fv:
    flag = fv[name]
    if not isinstance(flag.value, ml_collections.ConfigDict):
      continue
    path = _flag_value(argv, name) or config_flags.get_config_filename(flag)
    try:
      scratch = flags.FlagValues()
      config_flags.DEFINE_config_file(name, path, "", flag_values=scratch, sys_argv=argv[:1])
      config = scratch[name].value
    except Exception as error:  # pylint: disable=broad-except
      parts.append(f"{name} entries: cannot load {path} ({type(error).__name__}: {error})")
      continue
    lines = [f"{name} entries (--{name}.KEY=VALUE; defaults from {path}):"]
    for key, value in sorted(_flat_items(config)):
      lines.append(f"  --{name}.{key}: {notes.get(key, '')}".rstrip())
      lines.append(f"    (default: {value!r})")
    parts.append("\n".join(lines))
  return "\n\n".join(parts)


def _flag_value(argv, name: str) -> str | None:
  """The last `--name=VALUE` or `--name VALUE` in `argv`."""
  found = None
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith(f"--{name}="):
      found = arg.split("=", 1)[1]
    elif arg == f"--{name}" and i + 1 < len(argv):
      found = argv[i + 1]
  return found


def _flat_items(config, prefix: str = ""):
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _flat_items(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def _config_comments(source: str) -> dict[str, str]:
  """`config.KEY = ...  # note` and comment lines just above a key (a one-word heading such
  as `# PPO` is not a note), by KEY."""
  notes, above = {}, []
  for line in source.splitlines():
    stripped = line.strip()
    if stripped.startswith("#"):
      above.append(stripped.lstrip("# "))
      continue
    match = re.match(r"config\.(\w+)\s*=[^#]*(?:#\s*(.*))?$", stripped)
    if match:
      sentence = " ".join(above) if above and " " in " ".join(above) else ""
      notes[match.group(1)] = match.group(2) or sentence
    above = []
  return notes


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
    key, close = _missing_key(error)
    overrides = [a for a in argv[1:] if a.startswith("--")
                 and key in a.split("=")[0].split(".")[1:]]
    if overrides:
      close = close or difflib.get_close_matches(key, default.get_config().keys(), 1)
      fail(f"{overrides[0]}: the config has no key {key!r}"
           + (f"; did you mean {close[0]!r}?" if close else "")
           + " (--help lists the keys; the schema is experiments/configs/default.py)")
    fail(f"cannot load the flags ({type(error).__name__}: {error}); a --config file must "
         "define get_config() returning an ml_collections.ConfigDict")
  except (SyntaxError, ImportError, OSError, TypeError, ValueError) as error:
    fail(f"cannot load the flags: {type(error).__name__}: {error}")
  except SystemExit as stop:  # absl's own exits (usage, --help) pass; a config's does not
    if stop.code not in (0, None) or any(a in HELP_FLAGS for a in argv[1:]):
      raise
    fail("cannot load the flags: the --config file ended the program (sys.exit) while it "
         "was loaded; nothing was run")
  except Exception as error:  # pylint: disable=broad-except
    fail(f"cannot load the flags: the --config file raised {type(error).__name__}: {error}")


def _missing_key(error: BaseException) -> tuple[str, list[str]]:
  """The key ml_collections could not find, and the close match it suggests, if any: its
  message is a KeyError inside an AttributeError, `'key'` then `Did you mean "other"...`."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  text = str(error.args[0]) if error.args else str(error)
  key = text.splitlines()[0].strip("\"' ") if text else ""
  suggestion = re.search(r'Did you mean "([^"]+)"', text)
  return key, [suggestion.group(1)] if suggestion else []


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


def check_not_an_input(output: str | None, inputs, flag: str = "--output") -> None:
  """ValueError when the output would be written over one of the command's input files
  (a latency or proxy file: the run would destroy what it read)."""
  if not output:
    return
  for path in inputs:
    if path and os.path.isfile(path) and os.path.realpath(path) == os.path.realpath(output):
      raise ValueError(f"{flag} {output!r} is an input of this command ({path}); give "
                       "another file for the results")


def file_stamps(paths) -> dict[str, list]:
  """(size, modification time) of each input file, and of a workdir's config and
  checkpoints: results computed from other versions of them are not resumed."""
  stamps = {}
  for path in filter(None, paths):
    found = [path] if os.path.isfile(path) else [
        os.path.join(folder, name) for folder, _, names in os.walk(path)
        for name in names if name in (checkpoint.CONFIG, checkpoint.CHECKPOINT)]
    for item in sorted(found):
      info = os.stat(item)
      stamps[os.path.abspath(item)] = [info.st_size, info.st_mtime_ns]
  return stamps


def write_atomic(path: str, text: str) -> None:
  """`text` at `path` through a temporary file beside it: an interruption leaves the old
  file or the new one, never half of one."""
  temporary = f"{path}.{os.getpid()}.tmp"
  with open(temporary, "w") as f:
    f.write(text)
  os.replace(temporary, path)


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
  settings["image_size"] = (None if size is None  # two stride-2 reductions: 4 pixels at least
                            else whole(f"--{prefix}image_size", size, minimum=4))
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
