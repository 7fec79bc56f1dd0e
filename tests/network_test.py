"""The three forms of TinyNetwork compute the same network, with NATS-Bench's sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwnas_jax.benchmark import network
from hwnas_jax.benchmark import searchspace

# Two cells per stage, so the array forms go through their scan over cells.
TINY = network.TinyNetwork(num_classes=5, channels=4, num_cells=2)
ARCHS = ((3, 1, 0, 2, 4, 3), (0, 0, 0, 0, 0, 0), (1, 1, 1, 1, 1, 1), (4, 0, 0, 0, 2, 0),
         (2, 3, 3, 3, 3, 2))


@pytest.fixture(scope="module")
def params():
  return network.init_params(jax.random.key(0), network=TINY)


@pytest.fixture(scope="module")
def images():
  return jax.random.normal(jax.random.key(1), (4, 8, 8, 3))


def _forms(ops):
  return {"static": tuple(ops), "switch": jnp.asarray(ops, jnp.int32),
          "masked": jnp.asarray(searchspace.one_hot(np.array(ops)))}


FAST_COMPILE = {"xla_backend_optimization_level": 0}  # tiny networks: compile, don't optimise
# Compiled once per form (the static form runs eagerly).
_APPLY = jax.jit(lambda p, h, o: TINY.apply({"params": p}, h, o), compiler_options=FAST_COMPILE)


@pytest.mark.parametrize("ops", ARCHS)
def test_forms_agree(params, images, ops):
  outs = _forms(ops)
  static = TINY.apply({"params": params}, images, outs.pop("static"))
  for name, form_ops in outs.items():
    np.testing.assert_allclose(_APPLY(params, images, form_ops), static,
                               rtol=1e-5, atol=1e-5, err_msg=name)


def test_relu_kernel_agrees_across_forms(params, images):
  net = TINY.clone(relu_kernel=True)
  fn = jax.jit(lambda p, h, o: net.apply({"params": p}, h, o, mutable=["intermediates"])[1],
               compiler_options=FAST_COMPILE)
  for ops in ARCHS[:2]:
    forms = _forms(ops)
    static = net.apply({"params": params}, images, forms.pop("static"), mutable=["intermediates"])
    kernels = [np.asarray(static[1]["intermediates"]["relu_kernel"][0])]
    kernels += [np.asarray(fn(params, images, o)["intermediates"]["relu_kernel"][0])
                for o in forms.values()]
    for k in kernels[1:]:
      np.testing.assert_array_equal(k, kernels[0])


def test_relu_kernel_diagonal_counts_every_hooked_unit(params, images):
  """K[i, i] = number of ReLU units; all-none: only the reductions and the last ReLU."""
  net = TINY.clone(relu_kernel=True)
  _, state = net.apply({"params": params}, images, (0,) * 6, mutable=["intermediates"])
  kernel = np.asarray(state["intermediates"]["relu_kernel"][0])
  # reduction 1: 8x8x4 and 4x4x8; reduction 2: 4x4x8 and 2x2x16; last ReLU: 2x2x16.
  units = 256 + 128 + 128 + 64 + 64
  np.testing.assert_array_equal(kernel, np.full((4, 4), units))  # every code is 0


def test_none_architecture_ignores_the_images(params, images):
  logits = TINY.apply({"params": params}, images, (0,) * 6)
  np.testing.assert_array_equal(logits, np.broadcast_to(logits[0], logits.shape))


def test_specialised_params_are_a_subset_of_the_supernet(params):
  ops = (3, 1, 0, 2, 4, 3)
  sub = network.init_params(jax.random.key(0), ops, network=TINY)
  cell = sub["cell0_0"]
  assert sorted(cell) == ["edge0_nor_conv_3x3", "edge3_nor_conv_1x1", "edge5_nor_conv_3x3"]
  flat_sub = jax.tree_util.tree_leaves_with_path(sub)
  full = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(params)}
  for path, value in flat_sub:
    np.testing.assert_array_equal(value, full[jax.tree_util.keystr(path)])


def test_init_is_freereas_he_normal_fan_out():
  net = network.network_for("cifar10")
  params = network.init_params(jax.random.key(3), network=net)
  kernel = np.asarray(params["reduction2"]["conv_b"]["kernel"])  # 3x3, 64 -> 64
  assert abs(kernel.std() / np.sqrt(2.0 / (9 * 64)) - 1) < 0.02
  np.testing.assert_array_equal(params["reduction2"]["conv_b"]["scale"], 1.0)
  np.testing.assert_array_equal(params["classifier"]["bias"], 0.0)


@pytest.mark.parametrize("dataset", searchspace.DATASETS)
def test_parameter_count_matches_nats_bench(dataset):
  net = network.network_for(dataset)
  for index in (0, 1, 3, 6111):
    ops = tuple(int(o) for o in searchspace.arch_ops()[index])
    shapes = network.param_shapes(net, ops)
    count = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))
    expected = searchspace.flops_params(ops, dataset)[1] * 1e6
    assert count == pytest.approx(expected, abs=0.5), (dataset, index)


def test_bad_ops_are_refused(params, images):
  with pytest.raises(ValueError, match="ops must be"):
    TINY.apply({"params": params}, images, jnp.zeros((5,), jnp.int32))
  with pytest.raises(ValueError, match="6 operation"):
    TINY.apply({"params": params}, images, (1, 2, 3))
