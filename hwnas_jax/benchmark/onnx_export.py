"""One architecture of the NATS-Bench network as an ONNX model, built from the Flax weights.

The graph is written node by node with `onnx.helper` from the parameter tree that
`network.init_params` gives a static architecture, so it reads exactly the weights the Flax
network reads, in the NATS-Bench layout (stem, 3 stages of cells with a ResNet reduction
between them, BN-ReLU, global average pool, linear), NCHW as PyTorch and ONNX runtimes expect.

Two ways to export batch norm:
  * `batch_norm="inference"` (the default, what a deployed network runs): ONNX's
    `BatchNormalization` with running mean 0 and variance 1, which runtimes fold into the
    convolution before it; this is the network to time on a target.
  * `batch_norm="batch"`: normalised with the batch's own statistics (ReduceMean nodes),
    as the Flax network does; its output equals the Flax network's on the same images.
Both share every other node. `none` edges are left out, as in the Flax static network.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from hwnas_jax.benchmark import network
from hwnas_jax.benchmark import searchspace

OPSET = 17  # read by onnxruntime >= 1.13 and its mobile builds
BATCH_NORM_MODES = ("inference", "batch")
INPUT, OUTPUT = "images", "logits"


def parse_arch(arch: Any) -> int:
  """An architecture given as an index (int or digits) or a NATS-Bench string -> index."""
  if isinstance(arch, str) and not arch.strip().lstrip("-").isdigit():
    return searchspace.string_to_index(arch)
  try:
    index = int(arch)
  except (TypeError, ValueError):
    raise ValueError(f"architecture {arch!r} is neither an index nor a NATS-Bench string") \
        from None
  return searchspace.check_index(index)


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
  """What fixes the exported graph besides the architecture: the network and its input."""
  dataset: str = "cifar10"
  batch_size: int = 1
  image_size: int | None = None  # default: the dataset's
  channels: int = 16
  num_cells: int = 5
  batch_norm: str = "inference"

  def __post_init__(self):
    if self.dataset not in searchspace.NUM_CLASSES:
      raise ValueError(f"unknown dataset {self.dataset!r}; known: "
                       f"{list(searchspace.NUM_CLASSES)}")
    if self.batch_norm not in BATCH_NORM_MODES:
      raise ValueError(f"batch_norm must be one of {BATCH_NORM_MODES}, got {self.batch_norm!r}")
    for key in ("batch_size", "channels", "num_cells"):
      if int(getattr(self, key)) < 1:
        raise ValueError(f"{key} must be >= 1, got {getattr(self, key)!r}")
    if self.image_size is None:
      object.__setattr__(self, "image_size", searchspace.IMAGE_SIZE[self.dataset])
    elif int(self.image_size) < 4:
      raise ValueError(f"image_size must be >= 4, got {self.image_size!r}")

  def flax_network(self) -> network.TinyNetwork:
    return network.network_for(self.dataset, channels=self.channels, num_cells=self.num_cells)

  def input_shape(self) -> tuple[int, int, int, int]:
    """NCHW."""
    return (self.batch_size, 3, self.image_size, self.image_size)


class _Graph:
  """Accumulates nodes and weights; every method returns the name of its output tensor."""

  def __init__(self, helper, numpy_helper, batch_norm: str):
    self.helper, self.numpy_helper = helper, numpy_helper
    self.batch_norm = batch_norm
    self.nodes, self.weights = [], []
    self._count = 0

  def name(self, stem: str) -> str:
    self._count += 1
    return f"{stem}_{self._count}"

  def weight(self, stem: str, value: np.ndarray) -> str:
    name = self.name(stem)
    self.weights.append(self.numpy_helper.from_array(np.asarray(value, np.float32), name))
    return name

  def node(self, op: str, inputs: list[str], stem: str | None = None, **attrs) -> str:
    out = self.name(stem or op.lower())
    self.nodes.append(self.helper.make_node(op, inputs, [out], name=out, **attrs))
    return out

  def conv(self, x: str, kernel_hwio, stride: int = 1) -> str:
    kernel = np.transpose(np.asarray(kernel_hwio), (3, 2, 0, 1))  # HWIO -> OIHW
    pad = (kernel.shape[-1] - 1) // 2
    return self.node("Conv", [x, self.weight("kernel", kernel)], kernel_shape=list(kernel.shape[2:]),
                     strides=[stride, stride], pads=[pad] * 4)

  def bn(self, p: dict, x: str) -> str:
    scale, bias = np.asarray(p["scale"]), np.asarray(p["bias"])
    if self.batch_norm == "inference":
      zero, one = np.zeros_like(scale), np.ones_like(scale)
      return self.node("BatchNormalization",
                       [x, self.weight("scale", scale), self.weight("bias", bias),
                        self.weight("mean", zero), self.weight("var", one)],
                       epsilon=network.BN_EPS)
    # The batch's statistics over N, H, W (biased variance), as network.batch_norm.
    mean = self.node("ReduceMean", [x], axes=[0, 2, 3], keepdims=1)
    centred = self.node("Sub", [x, mean])
    var = self.node("ReduceMean", [self.node("Mul", [centred, centred])], axes=[0, 2, 3],
                    keepdims=1)
    eps = self.weight("eps", np.array(network.BN_EPS))
    inv_std = self.node("Reciprocal", [self.node("Sqrt", [self.node("Add", [var, eps])])])
    shape = (1, -1, 1, 1)
    scaled = self.node("Mul", [inv_std, self.weight("scale", scale.reshape(shape))])
    return self.node("Add", [self.node("Mul", [centred, scaled]),
                             self.weight("bias", bias.reshape(shape))])

  def relu_conv_bn(self, p: dict, x: str, stride: int = 1) -> str:
    return self.bn(p, self.conv(self.node("Relu", [x]), p["kernel"], stride))

  def add_all(self, terms: list[str]) -> str:
    total = terms[0]
    for term in terms[1:]:
      total = self.node("Add", [total, term])
    return total


def _edge(graph: _Graph, op: int, params: dict, edge: int, x: str) -> str:
  if op == network.SKIP:
    return x
  if op == network.POOL:
    return graph.node("AveragePool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4,
                      count_include_pad=0)
  return graph.relu_conv_bn(params[f"edge{edge}_{searchspace.OPS[op]}"], x)


def _cell(graph: _Graph, ops: tuple[int, ...], params: dict, x: str) -> str:
  """Node j = sum of its incoming edges (none edges left out; zeros when all are none)."""
  nodes = [x]
  for j in range(1, 4):
    terms = [_edge(graph, ops[e], params, e, nodes[src])
             for e, (src, dst) in enumerate(searchspace.EDGES)
             if dst == j and ops[e] != network.NONE]
    nodes.append(graph.add_all(terms) if terms
                 else graph.node("Mul", [x, graph.weight("zero", np.array(0.0))]))
  return nodes[3]


def _reduction(graph: _Graph, params: dict, x: str) -> str:
  a = graph.relu_conv_bn(params["conv_a"], x, stride=2)
  b = graph.relu_conv_bn(params["conv_b"], a)
  pooled = graph.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
  return graph.node("Add", [graph.conv(pooled, params["downsample"]["kernel"]), b])


def build_model(index: int, params: dict, spec: NetworkSpec):
  """The ONNX ModelProto of architecture `index` with the Flax parameters `params` (a static
  architecture's tree, or the full tree of every operation)."""
  import onnx  # pylint: disable=import-outside-toplevel  # an optional dependency
  from onnx import helper, numpy_helper  # pylint: disable=import-outside-toplevel
  ops = tuple(int(o) for o in searchspace.arch_ops()[searchspace.check_index(index)])
  params = jax.tree_util.tree_map(np.asarray, params)
  graph = _Graph(helper, numpy_helper, spec.batch_norm)
  x = graph.bn(params["stem"], graph.conv(INPUT, params["stem"]["kernel"]))
  for stage in range(3):
    if stage:
      x = _reduction(graph, params[f"reduction{stage}"], x)
    for i in range(spec.num_cells):
      x = _cell(graph, ops, params[f"cell{stage}_{i}"], x)
  x = graph.node("Relu", [graph.bn(params["lastact"], x)])
  pooled = graph.node("Flatten", [graph.node("GlobalAveragePool", [x])], axis=1)
  classifier = params["classifier"]
  graph.nodes.append(helper.make_node(
      "Gemm", [pooled, graph.weight("classifier_kernel", classifier["kernel"]),
               graph.weight("classifier_bias", classifier["bias"])], [OUTPUT], name=OUTPUT))
  num_classes = searchspace.NUM_CLASSES[spec.dataset]
  onnx_graph = helper.make_graph(
      graph.nodes, f"nats_bench_{index}",
      [helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT, spec.input_shape())],
      [helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT,
                                     (spec.batch_size, num_classes))],
      graph.weights)
  model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                            producer_name="hwnas-jax")
  model.ir_version = 8  # what onnxruntime >= 1.13 reads
  arch = searchspace.index_to_string(index)
  helper.set_model_props(model, {"arch": arch, "index": str(index), "dataset": spec.dataset,
                                 "batch_norm": spec.batch_norm,
                                 "channels": str(spec.channels),
                                 "num_cells": str(spec.num_cells)})
  onnx.checker.check_model(model, full_check=True)
  return model


def export(arch: Any, output: str, spec: NetworkSpec = NetworkSpec(), seed: int = 0) -> int:
  """Write architecture `arch` (index or string) as an ONNX file at `output`, with the
  weights `network.init_params(jax.random.key(seed), ...)` draws; returns its index."""
  import onnx  # pylint: disable=import-outside-toplevel
  index = parse_arch(arch)
  onnx.save(build_model(index, all_params(spec, seed), spec), output)
  return index


@functools.lru_cache(maxsize=4)
def all_params(spec: NetworkSpec, seed: int) -> dict:
  """The weights of every operation (a static architecture reads the same values from it),
  drawn once per network: exporting many architectures then costs no tracing."""
  return jax.tree_util.tree_map(np.asarray, network.init_params(
      jax.random.key(seed), None, network=spec.flax_network()))
