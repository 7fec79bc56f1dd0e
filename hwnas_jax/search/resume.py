"""Finished cells written as they finish, so that an interrupted evaluation resumes.

`CellLog` keeps one JSON line per finished cell in a file beside the output
(`OUTPUT.partial.jsonl`), after a first line with the run's settings. A rerun with the same
settings reads its cells back instead of running them again; cells are deterministic (their
episodes' seeds depend on the cell only), so a resumed run writes the same results as an
uninterrupted one. A log of other settings is set aside with a note, never mixed in.
"""

from __future__ import annotations

import json
import os
from typing import Callable


def cell_key(method: str, device: str, dataset: str, budget) -> str:
  """What identifies a cell within one run's settings."""
  return json.dumps([method, device, dataset, budget.budget_ms, budget.percentile])


def partial_path(output: str) -> str:
  return output + ".partial.jsonl"


class CellLog:
  """The finished cells of one run (`finished`: key -> row), appended as they finish."""

  def __init__(self, path: str, settings: dict, log: Callable[[str], None] = print):
    self.path = path
    self.finished: dict[str, dict] = {}
    header = json.dumps({"settings": settings}, sort_keys=True)
    lines = []
    if os.path.isfile(path):
      with open(path) as f:
        lines = f.read().splitlines()
    if lines and lines[0] == header:
      for line in lines[1:]:
        try:
          entry = json.loads(line)
          self.finished[entry["key"]] = entry["row"]
        except (ValueError, KeyError, TypeError):
          break  # a line cut short by the interruption: the cells after it run again
      log(f"resuming: {len(self.finished)} finished cell(s) read back from {path}")
    elif lines:
      log(f"note: {path} holds cells of a run with other settings; they are not used and "
          "the file is started afresh")
    with open(path, "w") as f:
      f.write(header + "\n")
      for key, row in self.finished.items():
        f.write(json.dumps({"key": key, "row": row}) + "\n")

  def append(self, key: str, row: dict) -> None:
    """Record a finished cell (flushed and synced: an interruption loses at most the cell
    that was running)."""
    self.finished[key] = row
    with open(self.path, "a") as f:
      f.write(json.dumps({"key": key, "row": row}) + "\n")
      f.flush()
      os.fsync(f.fileno())

  def remove(self) -> None:
    """The run finished and its output is written: the log is no longer needed."""
    if os.path.exists(self.path):
      os.remove(self.path)
