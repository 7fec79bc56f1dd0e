"""Tests of hwnas_jax.searchspace: the index order, conversions and FLOPs / params.

The index order is the contract everything else rests on (every table of the bundle,
HW-NAS-Bench and NATS-Bench are indexed by it), so it is checked against every line of
the bundle's nb201_archs.txt and against `nats_bench` on its own fixture.
"""

import os

import numpy as np
import pytest

from hwnas_jax.benchmark import searchspace

FIXTURE_INDICES = (0, 11, 284)  # the indices with full records in the NATS-Bench fixture


@pytest.fixture(scope="module")
def bundle_archs(data_dir):
  with open(os.path.join(data_dir, "nb201_archs.txt")) as f:
    return f.read().splitlines()


@pytest.fixture(scope="module")
def nats_api(nats_fixture_dir):
  nats_bench = pytest.importorskip("nats_bench")
  return nats_bench.create(nats_fixture_dir, "tss", fast_mode=True, verbose=False)


def test_arch_ops_shape_dtype_and_all_distinct():
  ops = searchspace.arch_ops()
  assert ops.shape == (searchspace.NUM_ARCHS, searchspace.NUM_EDGES) == (15625, 6)
  assert ops.dtype == np.int32
  assert ops.min() == 0 and ops.max() == searchspace.NUM_OPS - 1
  assert len(np.unique(ops, axis=0)) == searchspace.NUM_ARCHS
  with pytest.raises(ValueError):  # the cached table is shared: it must be read-only
    ops[0, 0] = 1


def test_order_matches_every_line_of_bundle(bundle_archs):
  assert len(bundle_archs) == searchspace.NUM_ARCHS
  ours = [searchspace.index_to_string(i) for i in range(searchspace.NUM_ARCHS)]
  mismatches = [i for i, (a, b) in enumerate(zip(ours, bundle_archs)) if a != b]
  assert not mismatches, f"first mismatching index: {mismatches[0]}"
  assert all(searchspace.string_to_index(line) == i for i, line in enumerate(bundle_archs))


def test_order_matches_nats_bench_meta_archs(nats_api):
  assert len(nats_api) == searchspace.NUM_ARCHS
  meta = list(nats_api.meta_archs)
  assert meta == [searchspace.index_to_string(i) for i in range(searchspace.NUM_ARCHS)]


@pytest.mark.parametrize("index", [0, 1, 11, 284, 6111, 9930, 3888, 15624])
def test_order_matches_nats_bench_item_arch_and_query(nats_api, index):
  arch = searchspace.index_to_string(index)
  assert nats_api[index] == arch
  assert nats_api.arch(index) == arch
  assert nats_api.query_index_by_arch(arch) == index


def test_round_trips_over_whole_space():
  ops = searchspace.arch_ops()
  for index in range(searchspace.NUM_ARCHS):
    arch = searchspace.index_to_string(index)
    assert searchspace.ops_to_index(ops[index]) == index
    assert searchspace.string_to_index(arch) == index
    np.testing.assert_array_equal(searchspace.string_to_ops(arch), ops[index])
    assert searchspace.ops_to_string(ops[index]) == arch


def test_known_architectures_and_conversion_types():
  # Index 0 of NATS-Bench, written out by hand.
  arch = ("|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+"
          "|nor_conv_1x1~0|skip_connect~1|skip_connect~2|")
  assert searchspace.string_to_index(arch) == 0
  assert searchspace.string_to_index(f"  {arch}\n") == 0  # a line read from a file
  ops = searchspace.string_to_ops(arch)
  assert ops.dtype == np.int32
  assert [searchspace.OPS[o] for o in ops] == [
      "avg_pool_3x3", "nor_conv_1x1", "skip_connect", "nor_conv_1x1", "skip_connect",
      "skip_connect"]
  # Integer scalars and op arrays of any integer type (numpy, lists) are accepted.
  assert searchspace.check_index(np.int64(11)) == 11
  assert isinstance(searchspace.check_index(np.int32(11)), int)
  assert searchspace.ops_to_index(list(ops)) == 0
  assert searchspace.ops_to_index(ops.astype(np.int64)) == 0
  assert searchspace.ops_to_index(ops.astype(np.float32)) == 0  # whole numbers as floats


@pytest.mark.parametrize("arch", [
    "",
    "|nor_conv_3x3~0|",
    "nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|none~2|",
    "|max_pool_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|none~3|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|",
    "|None~0|+|none~0|none~1|+|none~0|none~1|none~2|",
])
def test_bad_strings_raise_clear_errors(arch):
  with pytest.raises(ValueError, match="not a NAS-Bench-201 architecture string"):
    searchspace.string_to_index(arch)


def test_non_string_architecture_raises_type_error():
  with pytest.raises(TypeError, match="architecture string expected"):
    searchspace.string_to_ops(123)


@pytest.mark.parametrize("index", [-1, searchspace.NUM_ARCHS, 10**6])
def test_out_of_range_indices_raise(index):
  with pytest.raises(IndexError, match=r"outside \[0, 15625\)"):
    searchspace.index_to_string(index)
  with pytest.raises(IndexError, match=str(index)):
    searchspace.check_index(index)


@pytest.mark.parametrize("index", [2.5, 3.0, np.float64(3.0), "3", None, True])
def test_non_integer_indices_raise(index):
  # A float used to be truncated silently (2.5 -> architecture 2).
  with pytest.raises(TypeError, match="must be an integer"):
    searchspace.check_index(index)


@pytest.mark.parametrize("ops", [
    [0] * 5, [0] * 7, [[0] * 6], [-1, 0, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0], [0.5] * 6,
])
def test_bad_operation_vectors_raise(ops):
  with pytest.raises(ValueError, match="expected 6 integer operation indices"):
    searchspace.ops_to_index(ops)
  with pytest.raises(ValueError, match="expected 6 integer operation indices"):
    searchspace.ops_to_string(ops)  # -1 used to wrap around to the last op silently


def test_one_hot_and_op_counts_shapes_and_values():
  one_hot = searchspace.one_hot()
  counts = searchspace.op_counts()
  assert one_hot.shape == (searchspace.NUM_ARCHS, 6, 5) and one_hot.dtype == np.float32
  assert counts.shape == (searchspace.NUM_ARCHS, 5) and counts.dtype == np.float32
  np.testing.assert_array_equal(one_hot.sum(axis=-1), 1.0)
  np.testing.assert_array_equal(one_hot.argmax(axis=-1), searchspace.arch_ops())
  np.testing.assert_array_equal(counts.sum(axis=-1), 6.0)
  # One architecture, and a batch of them.
  ops = searchspace.arch_ops()[284]
  assert searchspace.one_hot(ops).shape == (6, 5)
  np.testing.assert_array_equal(searchspace.op_counts(ops), np.bincount(ops, minlength=5))
  assert searchspace.op_counts(searchspace.arch_ops()[:7]).shape == (7, 5)


@pytest.mark.parametrize("dataset", searchspace.DATASETS)
def test_flops_params_match_nats_bench(nats_api, dataset):
  flops_table, params_table = searchspace.flops_params_table(dataset)
  assert flops_table.shape == params_table.shape == (searchspace.NUM_ARCHS,)
  for index in FIXTURE_INDICES:
    cost = nats_api.get_cost_info(index, dataset, hp="200")
    flops, params = searchspace.flops_params(searchspace.arch_ops()[index], dataset)
    assert flops == pytest.approx(cost["flops"], abs=1e-5)
    assert params == pytest.approx(cost["params"], abs=1e-5)
    assert flops_table[index] == pytest.approx(cost["flops"], abs=1e-5)
    assert params_table[index] == pytest.approx(cost["params"], abs=1e-5)


@pytest.mark.parametrize("dataset", searchspace.DATASETS)
def test_flops_params_table_agrees_with_per_architecture_count(dataset):
  # The table is built from per-op increments; check that against the direct count.
  flops_table, params_table = searchspace.flops_params_table(dataset)
  for index in np.random.default_rng(0).choice(searchspace.NUM_ARCHS, 40, replace=False):
    flops, params = searchspace.flops_params(searchspace.arch_ops()[index], dataset)
    assert flops_table[index] == pytest.approx(flops, rel=1e-12)
    assert params_table[index] == pytest.approx(params, rel=1e-12)
  # Convolutions cost, parameter-free ops do not: all-conv3x3 is the largest network.
  biggest = searchspace.ops_to_index([searchspace.OPS.index("nor_conv_3x3")] * 6)
  assert int(np.argmax(flops_table)) == biggest and int(np.argmax(params_table)) == biggest


def test_flops_params_unknown_dataset_raises():
  with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
    searchspace.flops_params([0] * 6, "imagenet")


# --- the cell as a graph: dead edges and live convolutions ----------------------------

N_, S_, P_, C1, C3 = (searchspace.OPS.index(name) for name in (
    "none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3"))


def test_dead_edges_follow_the_cell_graph():
  np.testing.assert_array_equal(searchspace.dead_edges([N_] * 6), [True] * 6)
  np.testing.assert_array_equal(searchspace.dead_edges([C3] * 6), [False] * 6)
  # Only edge 0->3 carries an op: everything else is dead.
  np.testing.assert_array_equal(searchspace.dead_edges([N_, N_, N_, C3, N_, N_]),
                                [True, True, True, False, True, True])
  # Node 1 gets no input (edge 0->1 is none), so 1->2 and 1->3 are dead despite their ops.
  np.testing.assert_array_equal(searchspace.dead_edges([N_, S_, C3, N_, C3, C3]),
                                [True, False, True, True, True, False])
  # Node 2 reaches no output (2->3 is none): 0->2 and 1->2 are dead.
  np.testing.assert_array_equal(searchspace.dead_edges([C1, C3, C3, S_, P_, N_]),
                                [False, True, True, False, False, True])
  # Batched over the space, and the same as one architecture at a time.
  dead = searchspace.dead_edges(searchspace.arch_ops())
  assert dead.shape == (searchspace.NUM_ARCHS, 6) and dead.dtype == bool
  for index in (0, 11, 284, 15624):
    np.testing.assert_array_equal(dead[index],
                                  searchspace.dead_edges(searchspace.arch_ops()[index]))


def test_synthetic_dead_edges_is_the_search_space_one():
  from hwnas_jax.devices import synthetic
  assert synthetic.dead_edges is searchspace.dead_edges


@pytest.mark.parametrize("dataset", searchspace.DATASETS)
def test_live_flops_params_count_only_live_convolutions(dataset):
  live_flops, live_params = searchspace.live_flops_params_table(dataset)
  flops, params = searchspace.flops_params_table(dataset)
  assert live_flops.shape == live_params.shape == (searchspace.NUM_ARCHS,)
  assert not live_flops.flags.writeable
  empty = searchspace.flops_params([], dataset)
  index = searchspace.ops_to_index
  # No convolution, or none alive: 0.
  for ops in ([N_] * 6, [S_] * 6, [P_, S_, P_, S_, P_, S_], [N_, S_, C3, N_, C3, N_]):
    assert live_flops[index(ops)] == 0.0 and live_params[index(ops)] == 0.0
  # Every edge alive: the whole cell counts, i.e. NATS-Bench's count less the empty network.
  full = index([C3, C1, C3, S_, C1, C3])
  assert live_flops[full] == pytest.approx(flops[full] - empty[0], rel=1e-12)
  assert live_params[full] == pytest.approx(params[full] - empty[1], rel=1e-12)
  # A conv3x3 behind a none-cut path counts 0: only the 0->3 conv1x1 is alive here.
  cut, alone = index([N_, C1, C3, C1, C3, N_]), index([N_, N_, N_, C1, N_, N_])
  assert live_flops[cut] == live_flops[alone] > 0.0
  assert live_params[cut] == live_params[alone] > 0.0
  assert flops[cut] > flops[alone]  # NATS-Bench's count includes the dead convolutions
  # Never more than NATS-Bench's count of the cells.
  assert np.all(live_flops <= flops - empty[0] + 1e-9)
  assert np.all(live_params <= params - empty[1] + 1e-9)


def test_mutation_table_changes_one_edge_to_each_other_operation():
  table = searchspace.mutation_table()
  ops = searchspace.arch_ops()
  assert table.shape == (searchspace.NUM_ARCHS, searchspace.NUM_EDGES, searchspace.NUM_OPS - 1)
  children = ops[table]  # (N, edges, shifts, edges)
  changed = children != ops[:, None, None, :]
  for edge in range(searchspace.NUM_EDGES):  # exactly that edge changed, by its shift
    assert changed[:, edge, :, edge].all() and changed.sum(-1)[:, edge].max() == 1
    shifts = (children[:, edge, :, edge] - ops[:, edge, None]) % searchspace.NUM_OPS
    assert (shifts == np.arange(1, searchspace.NUM_OPS)).all()
