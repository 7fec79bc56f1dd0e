"""Shared fixtures: the benchmark bundle comes from $HWNAS_DATA_DIR (set by .ci/run)."""

import os
import tempfile

# The tests check what programs compute, not how fast they run: XLA's cheapest optimisation
# level compiles their hundreds of small programs faster (BUILD_NOTES, "Test suite time").
# Read when JAX starts its backend, so set before any test module runs a computation.
os.environ["XLA_FLAGS"] = " ".join(filter(None, (
    os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true")))
# Several tests build the same jitted programs in separate calls and processes (a resumed
# run, a second controller, a method's own process, a command's subprocess): a compilation
# cache shared by them all compiles each once. Set in the environment, so that every
# process the tests start reads it too.
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ.get(
    "HWNAS_TEST_XLA_CACHE", os.path.join(tempfile.gettempdir(), "hwnas_jax_test_xla_cache"))
# Every program, however quick to compile: the suite compiles hundreds under half a second,
# and reading them back made a warm run 0.8x as long (BUILD_NOTES, version 0.9.0).
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

import jax  # pylint: disable=wrong-import-position
import pytest

from hwnas_jax.benchmark import tables

# The same, in case JAX was imported before this file (a plugin): its config read the
# environment then.
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def pytest_collection_finish(session):
  """A test module's `start_early(selected)` (checks in processes of their own, for the
  selected test functions of that module) runs once the tests are collected, beside them:
  the suite runs one test at a time, mostly on one core."""
  if session.config.option.collectonly or os.environ.get("PYTEST_XDIST_WORKER"):
    return
  selected = {}
  for item in session.items:
    module = getattr(item, "module", None)
    if module is not None and hasattr(module, "start_early"):
      selected.setdefault(module, set()).add(item.originalname)
  for module, names in selected.items():
    module.start_early(names)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
  """Each test its own cache folder: the measurement store of a live search goes there,
  never into the user's, and no test reads back another's probes."""
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def data_dir():
  path = os.environ.get(tables.DATA_DIR_ENV)
  if not path or not os.path.isdir(path):
    pytest.skip(f"${tables.DATA_DIR_ENV} is not set to the benchmark bundle")
  return path


@pytest.fixture(scope="session")
def benchmark(data_dir):
  return tables.load_benchmark(data_dir)


@pytest.fixture(scope="session")
def nats_fixture_dir(data_dir):
  path = os.path.join(os.path.dirname(os.path.abspath(data_dir)), "nats_fixture",
                      "NATS-tss-v1_0-3ffb9-simple")
  if not os.path.isdir(path):
    pytest.skip(f"NATS-Bench fixture not found beside the bundle at {path}")
  return path
