"""Checks too long for the test suite's five minutes on two cores; run them with

  python -m pytest -q benchmarks/long_checks_test.py

The suite (`tests/`) runs a shorter form of each.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import lab_test  # pylint: disable=wrong-import-position  # its network and architectures

from hwnas_jax.benchmark import lab  # pylint: disable=wrong-import-position
from hwnas_jax.benchmark import proxies  # pylint: disable=wrong-import-position


def test_vmapped_blocks_equal_the_loop_for_every_family():
  """vmap_size > 1 against the loop, every proxy family (the suite: the default ones)."""
  images = np.random.default_rng(0).normal(size=(8, 3, 8, 8)).astype(np.float32)
  batches = proxies.prepare_images(images, batch_size=4)
  values = {}
  for vmap_size in (1, 4):
    setup = lab.Setup(lab_test.TINY, lab.PROXIES, 1, (8, 8, 3), vmap_size=vmap_size,
                      az_batch=4)
    values[vmap_size] = lab.score(setup, lab.prepare(setup, batches, images, seed=0),
                                  lab_test.ARCHS)
  for name in lab.PROXIES:
    np.testing.assert_allclose(values[4][name], values[1][name], rtol=1e-4, atol=1e-4,
                               err_msg=name)
