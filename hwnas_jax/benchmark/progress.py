"""Progress bars that suit where the output goes: a live bar on a terminal, and in a log file
or a pipe a few whole lines (tqdm's in-place `\\r` updates would fill one line with hundreds)."""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL_S = 30.0  # seconds between two progress lines when output is not a terminal


class _Lines:
  """A stream that writes each of tqdm's in-place updates as a line of its own."""

  def __init__(self, stream):
    self._stream = stream

  def write(self, text: str) -> None:
    line = text.replace("\r", "").strip()
    if line:
      self._stream.write(line + "\n")

  def flush(self) -> None:
    self._stream.flush()


class _LogBar(tqdm):
  """A bar for a log: a new postfix or description waits for the next line, rather than
  printing one of its own (tqdm refreshes on every `set_postfix` by default)."""

  def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
    del refresh
    super().set_postfix(ordered_dict, refresh=False, **kwargs)

  def set_description(self, desc=None, refresh=True):
    del refresh
    super().set_description(desc, refresh=False)


def is_terminal(stream) -> bool:
  isatty = getattr(stream, "isatty", None)
  try:
    return bool(isatty and isatty())
  except ValueError:  # a closed stream
    return False


def bar(iterable=None, **kwargs) -> tqdm:
  """`tqdm(iterable, **kwargs)` on stderr (or `file=`): as is on a terminal; elsewhere one line
  at most every LOG_INTERVAL_S seconds, plus the first and the last."""
  stream = kwargs.pop("file", None) or sys.stderr
  if is_terminal(stream):
    return tqdm(iterable, file=stream, **kwargs)
  kwargs["mininterval"] = max(kwargs.get("mininterval", 0.1), LOG_INTERVAL_S)
  kwargs["maxinterval"] = max(kwargs.get("maxinterval", 10.0), LOG_INTERVAL_S)
  kwargs.update(file=_Lines(stream), ascii=True, dynamic_ncols=False)
  return _LogBar(iterable, **kwargs)
