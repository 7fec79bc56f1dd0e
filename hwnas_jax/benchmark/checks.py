"""Checks of names given by a user (devices, datasets, methods, ...), one wording everywhere."""

from __future__ import annotations

from typing import Iterable, Sequence


def names(what: str, values: Iterable, known: Sequence | None = None) -> list:
  """`values` as a list: one or more, each in `known` (when given), none twice (a name
  given twice would count its cells twice). ValueError naming `what` and what is known."""
  values = list(values)
  choices = f"; known: {', '.join(map(str, known))}" if known is not None else ""
  if not values:
    raise ValueError(f"{what} is empty" + (f"; give one or more of: "
                                           f"{', '.join(map(str, known))}" if known else ""))
  if known is not None:
    unknown = [v for v in values if v not in known]
    if unknown:
      raise ValueError(f"{what}: unknown {', '.join(map(repr, unknown))}{choices}")
  twice = sorted({v for v in values if values.count(v) > 1}, key=str)
  if twice:
    raise ValueError(f"{what} names {', '.join(map(repr, twice))} twice")
  return values
