"""Commands a test only reads the result of, started as soon as the tests are collected:
conftest.py calls each test module's `start_early(selected)`, so they run beside the other
tests, on the core a one-test-at-a-time suite leaves idle."""

import atexit
import subprocess


def start(argv, **popen_kwargs) -> subprocess.Popen:
  process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             **popen_kwargs)
  atexit.register(process.kill)  # an interrupted session leaves nothing running
  return process


def finish(process: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
  """Its exit status and output; killed if it runs past `timeout` seconds."""
  try:
    stdout, stderr = process.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    process.kill()
    raise
  return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
