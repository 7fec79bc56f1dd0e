"""Shared entry-point plumbing: bad input ends in one readable line, not a traceback."""

import sys

from absl import app

from hwnas_jax.bench import BenchmarkDataError

USER_ERRORS = (BenchmarkDataError, ValueError, KeyError, FileNotFoundError)


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
