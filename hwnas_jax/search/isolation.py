"""A method in a process of its own, reaching the harness only through `measure`.

Inside one Python process a method can read whatever the harness holds (the closure of
`measure`, its caller's frame, `gc.get_objects()`), so the probe budget, the record and the
tables are out of its reach only behind a process boundary. `Runner` starts one process per
method (a fresh interpreter: JAX does not survive `fork`) and keeps it for every episode of
a run; it sends the process each episode's task and generator, answers its `measure` calls
from the harness's `ProbeBudget`, and takes back its answer. The method's process writes
JSON of three shapes back (`measure`, `answer`, `error`), never a pickle, so it cannot run
code in the harness either. `Runner(isolated=False)` runs methods in-process: faster, for
trusted code only (tests, benchmarks).

What the boundary does not stop: a method that opens the benchmark's files on disk.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
from multiprocessing import connection
import pickle
import signal
import socket
import subprocess
import sys
import traceback

from hwnas_jax.benchmark import searchspace
from hwnas_jax.devices.interface import DeviceError
from hwnas_jax.search import interface

# Errors that keep their type across the boundary (both ways); any other becomes an
# `IsolationError` that carries the method's traceback.
_ERRORS = {error.__name__: error for error in (
    interface.ProbeLimitExceeded, DeviceError, ValueError, TypeError, IndexError, KeyError)}
_MAX_MESSAGE_BYTES = 1 << 20
# A method's process that sends nothing for this long (no probe, no answer) is ended and the
# cell fails with an error: a method that never answers must not hang the harness. Generous:
# the first message follows JAX's import and the method's compilation.
SILENCE_LIMIT_S = 600.0


class IsolationError(RuntimeError):
  """The method's process failed, died, or wrote something outside the protocol."""


class _MethodError(Exception):
  """The method raised `error` in its process; the two ends are still in step."""

  def __init__(self, error: Exception):
    super().__init__(error)
    self.error = error


def payload(method, name: str = "method") -> tuple[bytes, bool]:
  """(pickle, is_recipe): what the method's process rebuilds the method from.

  A method with a `recipe` (a picklable callable returning the method, e.g. a controller
  loaded from its workdir) is rebuilt from it; any other must pickle by reference (a
  function at module level of an importable module).
  """
  recipe = getattr(method, "recipe", None)
  try:
    return pickle.dumps(method if recipe is None else recipe), recipe is not None
  except Exception as error:  # pickle raises PicklingError, AttributeError or TypeError
    raise ValueError(
        f"method {name!r} cannot be sent to a process of its own ({error}); define it at "
        "module level of an importable module (or give it a picklable `recipe`), or run it "
        "in-process (isolated=False, --noisolate), for trusted code only") from None


class Runner:
  """Runs methods for the harness: `run(method, task, budget, rng) -> answer`.

  Isolated (the default), each method gets a process of its own at its first episode,
  kept for every later episode and run of this program (started once: seconds, JAX's
  import), and ended when the program ends or the process falls out of step.
  """

  def __init__(self, isolated: bool = True):
    self.isolated = isolated

  def start(self, methods) -> None:
    """Start the process of every method of `methods` ({name: [method, ...] or None}) at
    once, and wait until each has rebuilt its method: a method that cannot run isolated is
    refused here, before any episode, and start-up is not timed as search."""
    if not self.isolated:
      return
    workers = [_worker(method, name if len(seeds) == 1 else f"{name}[{position}]")
               for name, seeds in methods.items() for position, method in enumerate(seeds or ())]
    for worker in workers:
      worker.wait_ready()

  def run(self, method, task: interface.Task, budget: interface.ProbeBudget, rng,
          name: str = "method"):
    """The method's raw answer for one episode; every probe goes through `budget`."""
    if not self.isolated:  # a copy: the harness's own task stays as the harness made it
      return method(dataclasses.replace(task), budget.handle, rng)
    return _worker(method, name).run(task, budget, rng)


# id(method) -> (method, its process); the method is held so that its id is not reused.
_WORKERS: dict[int, tuple[object, "_Worker"]] = {}


def _worker(method, name: str) -> "_Worker":
  held = _WORKERS.get(id(method))
  if held is None or held[1].broken:
    held = _WORKERS[id(method)] = (method, _Worker(method, name))
  return held[1]


@atexit.register
def close_all() -> None:
  """End every method's process (also at exit; each ends by itself when the harness dies)."""
  while _WORKERS:
    _, (_, worker) = _WORKERS.popitem()
    worker.close()


class _Worker:
  """The harness's end of one method's process."""

  def __init__(self, method, name: str):
    self.name = name
    data, is_recipe = payload(method, name)
    ours, theirs = socket.socketpair()
    # A fresh interpreter (no fork: JAX's threads would not survive it) that never runs the
    # caller's main module, in a session of its own: Ctrl-C reaches the harness only.
    self._process = subprocess.Popen(
        [sys.executable, "-m", "hwnas_jax.search.isolation", str(theirs.fileno())],
        pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, start_new_session=True)
    theirs.close()
    self._conn = connection.Connection(ours.detach())
    self._conn.send((sys.path, data, is_recipe))
    self._task = None
    self._ready = False
    self.broken = False

  def wait_ready(self) -> None:
    """Block until the process has rebuilt the method (its first message)."""
    if self._ready:
      return
    try:
      kind, value = self._receive()
      if kind == "error":
        self._raise(value)
    except BaseException as error:  # a process that could not rebuild its method has ended
      self.close(in_step=isinstance(error, _MethodError))
      if isinstance(error, _MethodError):
        raise error.error from None
      raise
    self._ready = True

  def _raise(self, value: dict) -> None:
    error = _ERRORS.get(str(value.get("type")))  # the method's words, never trusted as code
    raise _MethodError(
        error(str(value.get("message", ""))) if error is not None else
        IsolationError(f"method {self.name!r} raised {value.get('type')}: "
                       f"{value.get('message')}\n{value.get('traceback', '')}"))

  def run(self, task: interface.Task, budget: interface.ProbeBudget, rng):
    """One episode. Anything but the method's own error (a dead process, a message outside
    the protocol, Ctrl-C or a device error on the harness's side) leaves the two ends out of
    step: the process is ended, and the method's next episode gets a fresh one."""
    try:
      return self._run(task, budget, rng)
    except _MethodError as error:
      raise error.error from None
    except BaseException:
      self.close(in_step=False)
      raise

  def _run(self, task: interface.Task, budget: interface.ProbeBudget, rng):
    if task is not self._task:  # the proxy travels once per task, not once per episode
      self._conn.send(("task", task))
      self._task = task
    self.wait_ready()
    self._conn.send(("episode", budget.name, rng))
    while True:
      kind, value = self._receive()
      if kind == "answer":
        return value
      if kind == "error":
        self._raise(value)
      try:
        reply = ("latency", budget.handle.measure(value))
      except tuple(_ERRORS.values()) as error:
        reply = ("error", type(error).__name__, str(error))
      self._conn.send(reply)

  def _receive(self) -> tuple[str, object]:
    """One message of the method's process, checked: ("measure", int), ("answer", int or
    None) or ("error", dict)."""
    try:
      if not self._conn.poll(SILENCE_LIMIT_S):
        raise IsolationError(f"method {self.name!r} sent nothing for {SILENCE_LIMIT_S:g} s "
                             "(no probe, no answer): its process was ended")
      raw = self._conn.recv_bytes(_MAX_MESSAGE_BYTES)
    except (EOFError, OSError):
      try:
        code = self._process.wait(5)
      except subprocess.TimeoutExpired:
        code = None
      raise IsolationError(f"the process of method {self.name!r} ended (exit code {code}) "
                           "before answering") from None
    try:
      message = json.loads(raw)
      (kind, value), = message.items()
      ok = ((kind in ("measure", "answer") and (value is None or type(value) is int)
             and (kind == "answer" or value is not None))
            or (kind == "error" and isinstance(value, dict)))
    except (ValueError, TypeError, AttributeError):
      ok = False
    if not ok:
      raise IsolationError(f"the process of method {self.name!r} wrote {raw[:80]!r}, which "
                           "is not a message of the protocol")
    return kind, value

  def close(self, in_step: bool = True) -> None:
    """Ask the process to stop (ended outright when it is `in_step` no more)."""
    if self.broken:
      return
    self.broken = True
    try:
      if in_step:
        self._conn.send(("stop", None))
      else:
        self._process.kill()
    except (OSError, ValueError):
      pass
    try:
      self._process.wait(5)
    except subprocess.TimeoutExpired:
      self._process.kill()
      self._process.wait()
    self._conn.close()


def _serve(conn) -> None:
  """The method's process: rebuild the method, then run episodes until told to stop."""
  send = lambda kind, value: conn.send_bytes(json.dumps({kind: value}).encode())
  try:
    path, data, is_recipe = conn.recv()
    sys.path[:] = path  # the caller's, so that its modules' methods unpickle
    method = pickle.loads(data)
    method = method() if is_recipe else method
  except Exception as error:  # pylint: disable=broad-except
    _send_error(send, error)
    return
  send("answer", None)  # ready
  task = None
  while True:
    try:
      kind, *args = conn.recv()
    except (EOFError, OSError):
      return
    if kind == "stop":
      return
    if kind == "task":
      task = args[0]
      continue
    name, rng = args

    def measure(index) -> float:
      send("measure", searchspace.check_index(index))
      reply = conn.recv()
      if reply[0] == "latency":
        return reply[1]
      raise _ERRORS[reply[1]](reply[2])

    try:
      send("answer", interface.checked_answer(method(task, interface.ProbeHandle(name, measure),
                                                     rng)))
    except Exception as error:  # pylint: disable=broad-except
      _send_error(send, error)


def _send_error(send, error: BaseException) -> None:
  send("error", {"type": type(error).__name__, "message": str(error),
                 "traceback": traceback.format_exc()})


if __name__ == "__main__":
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's to handle
  _serve(connection.Connection(int(sys.argv[1])))
