"""Methods written to cheat, for testing the harness (tests/integrity_test.py): none of them
is in the registry, and every number they reach in-process is one no method may reach.

Each tries one way to see more than its K probes or to be judged by rules of its own; `cheat`
tries them all. Whatever table it finds, it answers the best proxy within budget by that
table, measured once so that the record holds it; when it finds nothing it answers the best
proxy of the whole space unmeasured, which scores 0. Run isolated (the harness's default),
every attack finds nothing or changes nothing on the harness's side.
"""

from __future__ import annotations

import gc
import sys
import time

import numpy as np

from hwnas_jax.benchmark import searchspace
from hwnas_jax.search import interface


def _closure_objects(target) -> list:
  """What `target.measure` closes over (attack 1), one level deep."""
  cells = getattr(target.measure, "__closure__", None) or ()
  found = []
  for cell in cells:
    try:
      value = cell.cell_contents
    except ValueError:
      continue
    found.append(value)
    found.extend(c.cell_contents for c in getattr(value, "__closure__", None) or ())
    found.append(getattr(value, "__self__", None))  # a bound method's object (the device)
  return [f for f in found if f is not None]


def _frame_objects(depth: int = 8) -> list:
  """The locals of the frames above the method (attack 2)."""
  found, frame = [], sys._getframe(1)  # pylint: disable=protected-access
  for _ in range(depth):
    frame = frame.f_back
    if frame is None:
      break
    found.extend(frame.f_locals.values())
  return found


def _heap_objects(name: str) -> list:
  """The devices called `name` that the garbage collector knows of, youngest first
  (attack 6)."""
  found = []
  for obj in reversed(gc.get_objects()):
    fields = getattr(obj, "__dict__", None)  # no getattr on the object: some load libraries
    if isinstance(fields, dict) and "latency_ms" in fields and fields.get("name") == name:
      found.append(obj)
  return found


def _table_in(objects, num_archs: int) -> np.ndarray | None:
  for obj in objects:
    table = getattr(obj, "latency_ms", None)
    if isinstance(table, np.ndarray) and table.shape == (num_archs,):
      return table
  return None


def _budgets_in(objects) -> list[interface.ProbeBudget]:
  return [o for o in objects if isinstance(o, interface.ProbeBudget)]


def _answer(task: interface.Task, target, table: np.ndarray | None) -> int:
  """The best proxy within budget by a stolen table, measured; else the best proxy, not."""
  if table is None:
    return int(np.argmax(task.proxy))
  feasible = np.flatnonzero(table <= task.budget_ms)
  best = int(feasible[np.argmax(task.proxy[feasible])])
  target.measure(best)
  return best


def read_closure(task, target, rng):
  """Attack 1: the table of the device behind `measure`'s closure."""
  del rng
  return _answer(task, target, _table_in(_closure_objects(target), task.proxy.size))


def read_caller_frames(task, target, rng):
  """Attack 2: the episode's device in the harness's frames."""
  del rng
  return _answer(task, target, _table_in(_frame_objects(), task.proxy.size))


def raise_budget(task, target, rng):
  """Attack 3: a budget of 1e9 ms on the frozen task; answers the best proxy, measured."""
  del rng
  object.__setattr__(task, "budget_ms", 1e9)
  best = int(np.argmax(task.proxy))
  target.measure(best)
  return best


def write_table(task, target, rng):
  """Attack 4: the tables within reach (closure, frames) made 1e-6 ms, then the best proxy
  measured."""
  del rng
  for obj in _closure_objects(target) + _frame_objects():
    table = getattr(obj, "latency_ms", None)
    if isinstance(table, np.ndarray):
      try:
        table.setflags(write=True)
        table[:] = 1e-6
      except ValueError:
        pass
  best = int(np.argmax(task.proxy))
  target.measure(best)
  return best


def forge_record(task, target, rng):
  """Attack 5: a made-up probe of the best proxy at 1e-6 ms appended to the record."""
  del rng
  best = int(np.argmax(task.proxy))
  for budget in _budgets_in(_closure_objects(target)):
    budget.probes.append(interface.Probe(best, 1e-6))
  return best


def read_heap(task, target, rng):
  """Attack 6: any table device the garbage collector holds."""
  del rng
  return _answer(task, target, _table_in(_heap_objects(target.name), task.proxy.size))


def probe_past_budget(task, target, rng):
  """Attack 1 on the budget: its record cleared and its K raised, then 5 K probes, every
  refusal caught."""
  for budget in _budgets_in(_closure_objects(target)):
    budget.num_probes = 10**9
    budget.probes.clear()
  for index in rng.integers(task.proxy.size, size=5 * task.num_probes):
    try:
      target.measure(int(index))
    except interface.ProbeLimitExceeded:
      pass
  return None


def measure_out_of_range(task, target, rng):
  """Not an attack: an index outside the space, whose error must keep its type."""
  del task, rng
  return target.measure(searchspace.NUM_ARCHS)


def catch_refusal(task, target, rng):
  """Probe K+1 refused, the refusal caught, and an answer anyway."""
  del rng
  for index in range(task.num_probes + 1):
    try:
      target.measure(index)
    except interface.ProbeLimitExceeded:
      pass
  return 0


def cheat(task, target, rng):
  """Every attack at once: what it reads first, then what it forges."""
  objects = _closure_objects(target) + _frame_objects()
  table = _table_in(objects + _heap_objects(target.name), task.proxy.size)
  answer = _answer(task, target, table)
  for budget in _budgets_in(objects):
    budget.probes.append(interface.Probe(answer, 1e-6))
  del rng
  return answer


def never_answer(task, target, rng):
  """Holds its cell forever, unless the harness stops waiting."""
  del task, target, rng
  while True:
    time.sleep(60)


ATTACKS = {"closure": read_closure, "frames": read_caller_frames, "frozen_task": raise_budget,
           "table_write": write_table, "forged_record": forge_record, "heap": read_heap,
           "probe_past_budget": probe_past_budget, "all": cheat}
