"""The NAS-Bench-201 / NATS-Bench topology search space as arrays.

A cell is a DAG on 4 nodes with 6 edges, each carrying one of 5 operations, so the
space holds 5**6 = 15,625 architectures. Everything in the project indexes them in
NATS-Bench order (the order of the official meta file); that order is embedded in
`assets/nb201_order.txt.gz` (one line of 6 operation digits per index) so the
package works without any benchmark file.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import operator
import re
from typing import Sequence

import numpy as np

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NUM_OPS = len(OPS)
NUM_EDGES = 6
NUM_ARCHS = NUM_OPS**NUM_EDGES
# Edge e connects node EDGES[e][0] -> EDGES[e][1]; this is the order ops appear in
# the string "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|".
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}
IMAGE_SIZE = {"cifar10": 32, "cifar100": 32, "ImageNet16-120": 16}
DATASETS = tuple(NUM_CLASSES)

_ARCH_RE = re.compile(r"^\|([a-z_0-9]+)~0\|\+\|([a-z_0-9]+)~0\|([a-z_0-9]+)~1\|\+"
                      r"\|([a-z_0-9]+)~0\|([a-z_0-9]+)~1\|([a-z_0-9]+)~2\|$")


@functools.lru_cache(maxsize=None)
def arch_ops() -> np.ndarray:
  """(15625, 6) int32 operation indices (into OPS), NATS-Bench index order."""
  raw = importlib.resources.files("hwnas_jax").joinpath("assets/nb201_order.txt.gz").read_bytes()
  lines = gzip.decompress(raw).decode().split()
  ops = np.array([[int(c) for c in line] for line in lines], dtype=np.int32)
  assert ops.shape == (NUM_ARCHS, NUM_EDGES), ops.shape
  ops.setflags(write=False)
  return ops


# An architecture's base-5 code, ops @ CODE_WEIGHTS, indexes `code_to_index()`.
CODE_WEIGHTS = NUM_OPS ** np.arange(NUM_EDGES - 1, -1, -1)


@functools.lru_cache(maxsize=None)
def code_to_index() -> np.ndarray:
  """(15625,) NATS-Bench index of each base-5 code (the inverse of the index order)."""
  lookup = np.empty(NUM_ARCHS, dtype=np.int64)
  lookup[arch_ops() @ CODE_WEIGHTS] = np.arange(NUM_ARCHS)
  lookup.setflags(write=False)
  return lookup


@functools.lru_cache(maxsize=None)
def mutation_table() -> np.ndarray:
  """(15625, NUM_EDGES, NUM_OPS - 1) int64: the index of each architecture with one edge's
  operation moved on by 1 .. NUM_OPS - 1 (mod NUM_OPS), so a mutation is one look-up."""
  ops = arch_ops().astype(np.int64)
  table = np.empty((NUM_ARCHS, NUM_EDGES, NUM_OPS - 1), np.int64)
  for edge in range(NUM_EDGES):
    for shift in range(1, NUM_OPS):
      child = ops.copy()
      child[:, edge] = (child[:, edge] + shift) % NUM_OPS
      table[:, edge, shift - 1] = code_to_index()[child @ CODE_WEIGHTS]
  table.setflags(write=False)
  return table


def _check_ops(ops: Sequence[int]) -> np.ndarray:
  """`ops` as (6,) int64 operation indices; raises ValueError unless whole numbers in range."""
  array = np.asarray(ops)
  ok = array.shape == (NUM_EDGES,) and (np.issubdtype(array.dtype, np.integer) or (
      np.issubdtype(array.dtype, np.floating) and np.all(array == np.round(array))))
  if not ok or array.min() < 0 or array.max() >= NUM_OPS:
    raise ValueError(f"expected {NUM_EDGES} integer operation indices in [0, {NUM_OPS}), "
                     f"got {array.tolist()!r}")
  return array.astype(np.int64)


def ops_to_index(ops: Sequence[int]) -> int:
  ops = _check_ops(ops)
  return int(code_to_index()[int(ops @ CODE_WEIGHTS)])


def ops_to_string(ops: Sequence[int]) -> str:
  o = [OPS[i] for i in _check_ops(ops)]
  return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"


def string_to_ops(arch: str) -> np.ndarray:
  if not isinstance(arch, str):
    raise TypeError(f"architecture string expected, got {type(arch).__name__}: {arch!r}")
  match = _ARCH_RE.match(arch.strip())
  if not match or any(name not in OPS for name in match.groups()):
    raise ValueError(f"not a NAS-Bench-201 architecture string: {arch!r} "
                     f"(expected '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' with ops in {OPS})")
  return np.array([OPS.index(name) for name in match.groups()], dtype=np.int32)


def index_to_string(index: int) -> str:
  return ops_to_string(arch_ops()[check_index(index)])


def string_to_index(arch: str) -> int:
  return ops_to_index(string_to_ops(arch))


def check_index(index: int) -> int:
  """`index` as a Python int; TypeError unless an integer, IndexError unless in range."""
  try:
    if isinstance(index, (bool, np.bool_)):
      raise TypeError
    index = operator.index(index)  # int, numpy or JAX integer scalars; never a float
  except TypeError:
    raise TypeError(f"architecture index must be an integer, got {type(index).__name__}: "
                    f"{index!r}") from None
  if not 0 <= index < NUM_ARCHS:
    raise IndexError(f"architecture index {index} outside [0, {NUM_ARCHS})")
  return index


def one_hot(ops: np.ndarray | None = None) -> np.ndarray:
  """(..., 6, 5) float32 one-hot encoding; default: the whole space."""
  ops = arch_ops() if ops is None else np.asarray(ops)
  return np.eye(NUM_OPS, dtype=np.float32)[ops]


def op_counts(ops: np.ndarray | None = None) -> np.ndarray:
  """(..., 5) float32 count of each operation over the 6 edges."""
  return one_hot(ops).sum(axis=-2)


# --- FLOPs and parameters -------------------------------------------------------------
# Counted the way NATS-Bench reports them: multiply-accumulates of the Conv2d and Linear
# layers for one image (pooling is free), parameters of every layer (batch-norm affine
# terms included), both in millions. Network: TinyNetwork with C=16, N=5.

def _conv(c_in, c_out, k, hw_out):
  return k * k * c_in * c_out * hw_out * hw_out, k * k * c_in * c_out


def _bn(c):
  return 0.0, 2 * c


def _cell_cost(ops: Sequence[int], channels: int, hw: int) -> tuple[float, float]:
  """FLOPs and params of one cell (every edge keeps channels and resolution)."""
  flops = params = 0.0
  for op in ops:
    name = OPS[int(op)]
    if name in ("nor_conv_1x1", "nor_conv_3x3"):
      k = 1 if name == "nor_conv_1x1" else 3
      f, p = _conv(channels, channels, k, hw)
      flops, params = flops + f, params + p + _bn(channels)[1]
  return flops, params


def _reduction_cost(c_in: int, c_out: int, hw_out: int) -> tuple[float, float]:
  """ResNet basic block, stride 2, with an avg-pool + 1x1-conv shortcut."""
  fa, pa = _conv(c_in, c_out, 3, hw_out)
  fb, pb = _conv(c_out, c_out, 3, hw_out)
  fd, pd = _conv(c_in, c_out, 1, hw_out)
  return fa + fb + fd, pa + pb + pd + 2 * _bn(c_out)[1]


def flops_params(ops: Sequence[int], dataset: str = "cifar10", channels: int = 16,
                 num_cells: int = 5) -> tuple[float, float]:
  """(MFLOPs, M params) of one architecture's network, as NATS-Bench reports them."""
  if dataset not in NUM_CLASSES:
    raise ValueError(f"unknown dataset {dataset!r}; known: {list(NUM_CLASSES)}")
  hw, num_classes = IMAGE_SIZE[dataset], NUM_CLASSES[dataset]
  flops, params = _conv(3, channels, 3, hw)
  params += _bn(channels)[1]
  c = channels
  for stage in range(3):
    if stage > 0:
      hw //= 2
      f, p = _reduction_cost(c, 2 * c, hw)
      flops, params, c = flops + f, params + p, 2 * c
    f, p = _cell_cost(ops, c, hw)
    flops, params = flops + num_cells * f, params + num_cells * p
  params += _bn(c)[1] + c * num_classes + num_classes
  flops += c * num_classes + num_classes
  return flops / 1e6, params / 1e6


@functools.lru_cache(maxsize=None)
def _cost_per_edge_op(dataset: str) -> tuple[np.ndarray, np.ndarray]:
  """The network with empty cells (MFLOPs, M params), and what one edge op adds (5, 2)."""
  # Costs are linear in the cell's ops, so one edge at a time gives every increment.
  base = np.array(flops_params([], dataset))
  with_one_edge = np.array([flops_params([op], dataset) for op in range(NUM_OPS)])
  return base, with_one_edge - base


@functools.lru_cache(maxsize=None)
def flops_params_table(dataset: str = "cifar10") -> tuple[np.ndarray, np.ndarray]:
  """(15625,) MFLOPs and (15625,) M params for the whole space, NATS-Bench order."""
  base, per_op = _cost_per_edge_op(dataset)
  counts = op_counts()
  flops = base[0] + counts @ per_op[:, 0]
  params = base[1] + counts @ per_op[:, 1]
  for a in (flops, params):
    a.setflags(write=False)
  return flops, params


# --- the cell as a graph --------------------------------------------------------------

def dead_edges(ops: np.ndarray) -> np.ndarray:
  """(..., 6) bool: the edge cannot affect the cell's output (`none`, or off every live path)."""
  ops = np.asarray(ops)
  nz = ops != OPS.index("none")
  fwd = {0: np.ones(ops.shape[:-1], bool)}  # node reachable from the input node
  for node in (1, 2, 3):
    fwd[node] = np.any([fwd[s] & nz[..., e] for e, (s, t) in enumerate(EDGES) if t == node],
                       axis=0)
  bwd = {3: np.ones(ops.shape[:-1], bool)}  # node reaches the output node
  for node in (2, 1, 0):
    bwd[node] = np.any([bwd[t] & nz[..., e] for e, (s, t) in enumerate(EDGES) if s == node],
                       axis=0)
  live = np.stack([nz[..., e] & fwd[s] & bwd[t] for e, (s, t) in enumerate(EDGES)], axis=-1)
  return ~live


def live_op_counts(ops: np.ndarray | None = None) -> np.ndarray:
  """(..., 5) float32 count of each operation over the live edges; default: the whole space."""
  ops = arch_ops() if ops is None else np.asarray(ops)
  return (one_hot(ops) * ~dead_edges(ops)[..., None]).sum(axis=-2)


@functools.lru_cache(maxsize=None)
def live_flops_params_table(dataset: str = "cifar10") -> tuple[np.ndarray, np.ndarray]:
  """(15625,) MFLOPs and (15625,) M params of the cells' live convolutions (all 15 cells).

  A structural accuracy proxy: a convolution on a dead edge costs FLOPs in NATS-Bench's
  count but does nothing for accuracy, and stem, reductions and head are the same in
  every architecture, so they are left out (the empty cell has 0).
  """
  _, per_op = _cost_per_edge_op(dataset)  # raises on an unknown dataset
  live = live_op_counts().astype(np.float64) @ per_op
  flops, params = np.ascontiguousarray(live[:, 0]), np.ascontiguousarray(live[:, 1])
  for a in (flops, params):
    a.setflags(write=False)
  return flops, params
