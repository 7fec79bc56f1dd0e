"""The training-free proxies on tiny networks, where their values are known."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import score_proxies
from hwnas_jax.benchmark import lab
from hwnas_jax.benchmark import tables
from hwnas_jax.benchmark import network
from hwnas_jax.benchmark import proxies
from hwnas_jax.benchmark import searchspace

TINY = network.TinyNetwork(num_classes=3, channels=4, num_cells=1)
CONV_ARCH = (3, 1, 0, 2, 4, 3)
NONE_ARCH = (0,) * 6


FAST_COMPILE = {"xla_backend_optimization_level": 0}  # tiny networks: compile, don't optimise


@pytest.fixture(scope="module", autouse=True)
def fast_compile():
  old, old_lab = dict(proxies.COMPILER_OPTIONS), dict(lab.COMPILER_OPTIONS)
  proxies.COMPILER_OPTIONS.update(FAST_COMPILE)
  lab.COMPILER_OPTIONS.update(FAST_COMPILE)
  proxies._jitted.cache_clear()
  proxies.jitted_scorers.cache_clear()
  lab.family_program.cache_clear()
  yield
  proxies.COMPILER_OPTIONS.clear()
  proxies.COMPILER_OPTIONS.update(old)
  lab.COMPILER_OPTIONS.clear()
  lab.COMPILER_OPTIONS.update(old_lab)
  proxies._jitted.cache_clear()
  proxies.jitted_scorers.cache_clear()
  lab.family_program.cache_clear()


@pytest.fixture(scope="module")
def params():
  return network.init_params(jax.random.key(0), network=TINY)


def _parts():
  """The jitted init, naswot and logsynflow that `proxies.score` uses (compiled once)."""
  return proxies.jitted_scorers(TINY, (8, 8, 3))


def _naswot(params, images, ops):
  with jax.enable_x64(True):
    return float(_parts()[1](params, jnp.asarray(images), jnp.asarray(ops)))


def _logsynflow(params, ops):
  with jax.enable_x64(True):
    return float(_parts()[2](params, jnp.asarray(ops)))


@pytest.fixture(scope="module")
def batches():
  """Two batches of four 8x8 images, NHWC, as `prepare_images` makes them."""
  images = np.random.default_rng(0).normal(size=(8, 3, 8, 8)).astype(np.float32)
  return proxies.prepare_images(images, batch_size=4)


def _kernel_sum_outside_cells(params) -> float:
  flat = jax.tree_util.tree_leaves_with_path(params)
  names = [(jax.tree_util.keystr(p), v) for p, v in flat]
  return sum(float(np.abs(v).sum()) for name, v in names
             if name.endswith("['kernel']") and "cell" not in name)


def test_relu_code_kernel_counts_agreements():
  x = np.random.default_rng(1).normal(size=(5, 3, 3, 2)).astype(np.float32)
  c = (x.reshape(5, -1) > 0).astype(np.float64)
  expected = c @ c.T + (1 - c) @ (1 - c).T
  np.testing.assert_array_equal(network.relu_code_kernel(jnp.asarray(x)), expected)


def test_naswot_of_a_duplicated_image_is_singular(params, batches):
  images = np.array(batches[0])
  images[1] = images[0]  # two equal rows of K
  assert _naswot(params, images, CONV_ARCH) == -np.inf
  assert np.isfinite(_naswot(params, batches[0], CONV_ARCH))
  naswot, _ = proxies.score(TINY, np.array(CONV_ARCH), images[None], num_inits=1)
  assert naswot == proxies.SINGULAR_NASWOT  # the bundle's value for a singular K


def test_naswot_of_the_empty_cell_is_singular(params, batches):
  """No ReLU sees the images: every code is the same, K has rank one."""
  assert _naswot(params, batches[0], NONE_ARCH) == -np.inf


def test_logsynflow_of_the_empty_cell(params):
  """Every gradient is zero, so each weight adds |w log 1e-6|; cell weights do not count."""
  expected = -np.log(proxies.LOG_EPS) * _kernel_sum_outside_cells(params)
  assert _logsynflow(params, NONE_ARCH) == pytest.approx(expected, rel=1e-6)


def test_logsynflow_forms_agree_and_grow_with_convolutions(params):
  """The specialised network (only its own weights) against the switch form."""
  own = network.init_params(jax.random.key(0), CONV_ARCH, network=TINY)
  with jax.enable_x64(True):
    static = jax.jit(lambda p: proxies.logsynflow_value(TINY, p, CONV_ARCH, (8, 8, 3)),
                     compiler_options=FAST_COMPILE)(own)
  switch = _logsynflow(params, CONV_ARCH)  # the masked form: test_score_batch_equals_...
  assert float(static) == pytest.approx(switch, rel=1e-9)
  assert switch > _logsynflow(params, NONE_ARCH) > 0


def test_logsynflow_refuses_float32(params):
  with pytest.raises(RuntimeError, match="float64"):
    proxies.logsynflow_value(TINY, params, jnp.asarray(CONV_ARCH), (8, 8, 3))


def test_score_batch_equals_one_at_a_time(batches):
  indices = np.array([1, 3])
  ops = searchspace.arch_ops()[indices]
  one = np.array([proxies.score(TINY, o, batches, index=i, num_inits=1)
                  for o, i in zip(ops, indices)])
  naswot, synflow = proxies.score_batch(TINY, ops, batches, indices=indices, num_inits=1)
  np.testing.assert_allclose(naswot, one[:, 0], rtol=1e-4)
  np.testing.assert_allclose(synflow, one[:, 1], rtol=1e-6)


def test_skip_known_values():
  np.testing.assert_allclose(proxies.skip(np.array([[1] * 6, [0] * 6, [2, 2, 2, 1, 2, 2]])),
                             [4 / 6, 0.0, 2.0])


def test_skip_equals_the_bundle_everywhere(benchmark):
  computed = proxies.skip(searchspace.arch_ops())
  for dataset in benchmark.datasets:
    np.testing.assert_array_equal(computed, benchmark.proxies[dataset]["skip"])


def test_flops_params_come_from_the_table():
  flops, params = proxies.flops_params(np.array([5, 6111]), "cifar100")
  table = searchspace.flops_params_table("cifar100")
  np.testing.assert_array_equal(flops, table[0][[5, 6111]])
  np.testing.assert_array_equal(params, table[1][[5, 6111]])


def test_prepare_images_batches_nhwc_and_keeps_raw_uint8():
  images = np.full((130, 3, 16, 16), 7, np.uint8)
  batches = proxies.prepare_images(images)
  assert batches.shape == (2, 64, 16, 16, 3) and batches.dtype == np.float32
  np.testing.assert_array_equal(batches, 7.0)
  normalised = proxies.prepare_images(images, imagenet16_transform=True)
  expected = (7 / 255 - np.array(proxies.IMAGENET16_MEAN)) / np.array(proxies.IMAGENET16_STD)
  np.testing.assert_allclose(normalised[0, 0, 0, 0], expected, rtol=1e-6)
  with pytest.raises(ValueError, match="at least"):
    proxies.prepare_images(images[:10])


def test_parse_archs():
  np.testing.assert_array_equal(score_proxies.parse_archs("3:6"), [3, 4, 5])
  np.testing.assert_array_equal(score_proxies.parse_archs("7, 1,15624"), [7, 1, 15624])
  with pytest.raises(ValueError, match="outside"):
    score_proxies.parse_archs("0:15626")
  with pytest.raises(ValueError, match="a:b"):
    score_proxies.parse_archs("x")


def test_score_archs_resumes_and_bench_loads_the_output(tmp_path, capsys):
  """A partial file with all but two architectures: the rerun scores only those two (its
  progress lines count 2 architectures a proxy family)."""
  images = np.random.default_rng(2).integers(0, 256, (4, 3, 8, 8), dtype=np.uint8)
  indices = np.arange(searchspace.NUM_ARCHS)
  output = os.fspath(tmp_path / "proxies.npz")
  done = np.full(searchspace.NUM_ARCHS, 123.0)
  done[[0, 5]] = np.nan
  score_proxies._save(output + ".partial.npz", index=indices, seed=0, num_inits=1,
                      naswot=done, logsynflow=done)
  table = score_proxies.score_archs("cifar10", images, indices, output, num_inits=1,
                                    batch_size=4, progress=True, net=TINY)
  bars = [line for line in capsys.readouterr().err.splitlines() if "arch" in line]
  finished = [line for line in bars if "100%" in line]
  assert finished and all("2/2 " in line for line in finished), bars
  assert "\r" not in "".join(bars)
  assert not os.path.exists(output + ".partial.npz")
  loaded = tables.load_proxy_file(output)
  assert sorted(loaded) == ["flops", "logsynflow", "naswot", "params", "skip"]
  np.testing.assert_array_equal(loaded["naswot"][1:5], 123.0)
  assert np.isfinite(loaded["naswot"][[0, 5]]).all() and (loaded["logsynflow"][[0, 5]] > 0).all()
  np.testing.assert_array_equal(table["index"], indices)
  np.testing.assert_array_equal(loaded["skip"], proxies.skip(searchspace.arch_ops()))


def test_parse_proxies():
  assert score_proxies.parse_proxies(["meco", " naswot", "meco"]) == ("meco", "naswot")
  with pytest.raises(ValueError, match="unknown"):
    score_proxies.parse_proxies(["zico"])
  with pytest.raises(ValueError, match="none given"):
    score_proxies.parse_proxies([""])


def test_check_compare_reports_the_new_proxies_and_az_nas():
  from experiments import check_proxies  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  index = np.arange(0, 15625, 50)
  accuracy = rng.normal(size=searchspace.NUM_ARCHS)
  computed = {"index": index, "skip": proxies.skip(searchspace.arch_ops()[index]),
              "flops": rng.normal(size=len(index)), "meco": accuracy[index],
              "az_expressivity": rng.normal(size=len(index)),
              "az_progressivity": rng.normal(size=len(index)),
              "az_trainability": rng.normal(size=len(index))}
  published = {name: rng.normal(size=searchspace.NUM_ARCHS) for name in tables.PROXY_NAMES}
  out = check_proxies.compare(computed, published, accuracy)
  assert out["rho_acc_meco"] == pytest.approx(1.0) and out["tau_acc_meco"] == pytest.approx(1.0)
  assert "rho_acc_az_nas" in out and "rho_naswot_vs_bundle" not in out
