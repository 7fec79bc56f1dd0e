"""The proxy lab on a tiny network: the reference values, the pruning, the vmapped path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hwnas_jax.benchmark import lab
from hwnas_jax.benchmark import network
from hwnas_jax.benchmark import proxies
from hwnas_jax.benchmark import searchspace

TINY = network.TinyNetwork(num_classes=3, channels=4, num_cells=2)
ALL = lab.PROXIES
# Real ones, an empty cell, all skips, identity cells, a cell whose output is always zero.
ARCHS = np.concatenate([searchspace.arch_ops()[[0, 1, 6111, 100, 5000, 12]],
                        np.array([[0] * 6, [1] * 6, [0, 0, 0, 1, 0, 0], [1, 0, 0, 0, 1, 0],
                                  [3, 0, 0, 0, 0, 0]])]).astype(np.int32)


@pytest.fixture(scope="module", autouse=True)
def fast_compile():
  """Tiny networks: compile, don't optimise."""
  old = dict(lab.COMPILER_OPTIONS)
  lab.COMPILER_OPTIONS.update({"xla_backend_optimization_level": 0})
  lab.family_program.cache_clear()
  yield
  lab.COMPILER_OPTIONS.clear()
  lab.COMPILER_OPTIONS.update(old)
  lab.family_program.cache_clear()


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).normal(size=(8, 3, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def batches(images):
  return proxies.prepare_images(images, batch_size=4)


@pytest.fixture(scope="module")
def setup():
  return lab.Setup(TINY, ALL, 1, (8, 8, 3), az_batch=4)


@pytest.fixture(scope="module")
def shared(setup, batches, images):
  return lab.prepare(setup, batches, images, seed=0)


@pytest.fixture(scope="module")
def values(setup, shared):
  return lab.score(setup, shared, ARCHS)


def test_naswot_and_logsynflow_equal_the_reference(values):
  """Same weights as `proxies`' flax network (init 0 of seed 0): NASWOT to rounding (a sign
  flip or two of a ReLU at 0), the float32
  rescaled log-synflow to 1e-5 of the float64 one."""
  shapes = network.param_shapes(TINY.clone(relu_kernel=False))
  params = network.sample_params(jax.random.fold_in(jax.random.key(0), 0), shapes)
  images = np.random.default_rng(0).normal(size=(8, 3, 8, 8)).astype(np.float32)
  batches = proxies.prepare_images(images, batch_size=4)
  naswot = jax.jit(lambda p, x, o: proxies.naswot_logdet(TINY, p, x, o))
  with jax.enable_x64(True):
    synflow = jax.jit(lambda p, o: proxies.logsynflow_value(TINY, p, o, (8, 8, 3)))
    for i, ops in enumerate(ARCHS):
      logdet = np.mean([float(naswot(params, jnp.asarray(b), jnp.asarray(ops))) for b in batches])
      expected = logdet if np.isfinite(logdet) else proxies.SINGULAR_NASWOT
      assert values["naswot"][i] == pytest.approx(expected, rel=1e-4, abs=1e-9), ops
      assert values["logsynflow"][i] == pytest.approx(float(synflow(params, jnp.asarray(ops))),
                                                      rel=1e-5), ops


def test_plan_prunes_only_what_no_proxy_reads():
  plan = lab.plan_archs(np.array([[0, 3, 3, 3, 2, 0],    # node 1 zero: edges 2, 4 read it
                                  [3, 3, 3, 1, 2, 0],    # edge 5 none: node 2 is dead
                                  [3, 0, 3, 1, 0, 0]]))  # node 1 read by a dead conv only
  np.testing.assert_array_equal(plan["run_all"], [[0, 3, 0, 3, 0, 0], [3, 3, 3, 1, 2, 0],
                                                  [3, 0, 3, 1, 0, 0]])
  np.testing.assert_array_equal(plan["run_out"], [[0, 0, 0, 3, 0, 0], [3, 0, 0, 1, 2, 0],
                                                  [0, 0, 0, 1, 0, 0]])
  np.testing.assert_array_equal(plan["run_naswot"][2], [3, 0, 0, 1, 0, 0])  # node 1 kept
  np.testing.assert_array_equal(plan["reads"], [[2, 2, 0], [2, 2, 0], [1, 1, 0]])


def test_pruning_changes_no_value(setup, shared, values):
  """Running every edge (no pruning) gives the same values."""
  plan = lab.plan_archs(ARCHS)
  for key in ("run_all", "run_naswot", "run_out"):
    plan[key] = plan["ops"]
  unpruned = {}
  for family in lab.FAMILIES:
    unpruned.update(lab.finish(family, lab.run_family(setup, shared, family, plan), ARCHS))
  for name in ALL:
    np.testing.assert_allclose(unpruned[name], values[name], rtol=1e-4, atol=1e-5,
                               err_msg=name)


def test_equal_computations_run_once(setup, shared, values):
  """Architectures that differ only where nothing is computed get the same raw values; the
  log-synflow of each still counts its own (dead) convolutions. Every call scores as many
  architectures as ARCHS (the rest of them as filler), so no new shape is compiled."""
  ops = np.array([[3, 3, 3, 1, 2, 0], [3, 2, 4, 1, 2, 0]])  # edges 1, 2 feed a dead node 2
  filler = ARCHS[:len(ARCHS) - len(ops)]
  got = lab.score(setup, shared, np.concatenate([ops, filler]))
  assert got["az_expressivity"][0] == got["az_expressivity"][1]
  assert got["logsynflow"][0] != got["logsynflow"][1]
  one = [lab.score(setup, shared, np.concatenate([o[None], ARCHS[:len(ARCHS) - 1]]))
         for o in ops]
  for name in ALL:
    np.testing.assert_allclose(got[name][:2], [o[name][0] for o in one], rtol=1e-6,
                               err_msg=name)
    np.testing.assert_allclose(got[name][2:], values[name][:len(filler)], rtol=1e-6,
                               err_msg=name)


def test_vmapped_blocks_equal_the_loop(values, batches, images):
  """vmap_size > 1 (the masked supernet, for accelerators) computes the same values: here
  for the default proxies' families (every family: benchmarks/long_checks_test.py). As many
  architectures as three blocks of 4, so that `lax.map` has no remainder to trace and
  compile as a second program."""
  setup = lab.Setup(TINY, lab.DEFAULT_PROXIES, 1, (8, 8, 3), vmap_size=4, az_batch=4)
  ops = np.concatenate([ARCHS, ARCHS[:-len(ARCHS) % setup.vmap_size]])  # the first again
  vmapped = lab.score(setup, lab.prepare(setup, batches, images, seed=0), ops)
  for name in lab.DEFAULT_PROXIES:
    np.testing.assert_allclose(vmapped[name][:len(ARCHS)], values[name], rtol=1e-4, atol=1e-4,
                               err_msg=name)


def test_known_values(values):
  index = {tuple(o): i for i, o in enumerate(ARCHS.tolist())}
  empty, identity = index[(0,) * 6], index[(0, 0, 0, 1, 0, 0)]
  assert values["naswot"][empty] == proxies.SINGULAR_NASWOT  # no ReLU sees the images
  assert values["az_trainability"][identity] == -np.inf  # the authors' value for an identity
  assert values["az_expressivity"][empty] == -np.inf  # all features zero: NaN -> -inf
  # A cell that is the identity gives the same network as skip + skip through node 1.
  same = index[(1, 0, 0, 0, 1, 0)]
  for name in ("naswot", "logsynflow", "az_expressivity"):
    assert values[name][same] == pytest.approx(values[name][identity], rel=1e-6)
  assert np.isfinite(values["meco"]).all()


def test_min_corr_eigenvalue_and_entropy_by_hand():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 1, 4, 5, 3)).astype(np.float32)
  x[..., 2] = 7.0  # a constant channel: its row and column are zeros, as MeCo sets NaN
  corr = np.corrcoef(x.reshape(-1, 3).T[:2])
  expected = min(np.linalg.eigvalsh(corr).min(), 0.0)
  assert float(lab.min_corr_eigenvalue(jnp.asarray(x))) == pytest.approx(expected, abs=1e-6)
  f = rng.normal(size=(2, 3, 4, 4, 5)).astype(np.float32)
  s = np.linalg.eigvalsh(np.cov(f.reshape(-1, 5).T, bias=True))
  p = s / s.sum()
  assert float(lab.covariance_entropy(jnp.asarray(f))) == pytest.approx(
      np.sum(-p * np.log(p + 1e-8)), rel=1e-4)


def test_conv_same_gradients_equal_autodiff():
  """Both VJPs in one jitted program a kernel size (run eagerly, each of their dozens of
  operations compiled on its own took seconds)."""
  x = jax.random.normal(jax.random.key(0), (1, 2, 6, 6, 4))
  g = jax.random.normal(jax.random.key(9), (1, 2, 6, 6, 5))
  both = jax.jit(lambda x, k, g: (jax.vjp(lab.conv, x, k)[1](g),
                                  jax.vjp(lambda a, k: lab.conv_same(a, k, True), x, k)[1](g)))
  for size in (1, 3):
    want, got = both(x, jax.random.normal(jax.random.key(size), (size, size, 4, 5)), g)
    for a, b in zip(want, got):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_az_nas_rank_prefers_the_better_on_every_count():
  values = {"az_expressivity": np.array([1.0, 2.0]), "az_progressivity": np.array([0.0, 1.0]),
            "az_trainability": np.array([-3.0, -1.0])}
  rank = lab.az_nas_rank(values, np.array([10.0, 20.0]))
  assert rank[1] == 0.0 and rank[0] == pytest.approx(4 * np.log(0.5))


def test_setup_refuses_unknown_proxies():
  with pytest.raises(ValueError, match="unknown proxies"):
    lab.Setup(TINY, ("naswot", "zico"), 1, (8, 8, 3))
