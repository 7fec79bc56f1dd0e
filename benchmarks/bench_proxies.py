r"""Seconds per architecture to score naswot + logsynflow: JAX against PyTorch, this CPU.

  python -m benchmarks.bench_proxies --num_archs=24 --seed=0 [--data_dir=...]

Both sides do the same work per architecture on the bundle's CIFAR-10 images: 3 random
initialisations (He normal, fan_out) x 2 batches of 64 for NASWOT, and one float64
log-synflow pass per initialisation. JAX: `proxies.score` (one compiled program for every
architecture, `lax.switch` per edge; its one-off compilation is reported apart). PyTorch:
a specialised network per architecture (xautodl's TinyNetwork, written out below), NASWOT
by forward hooks on every nn.ReLU, log-synflow as FreeREA computes it. Architectures are
timed alternately (JAX, then PyTorch), so a busy machine slows both alike; the load
average is printed. Prints the means and the projection to all 15,625 architectures.
XLA uses its default thread pool (all cores); PyTorch `--torch_threads`.

PyTorch is a benchmark-only dependency, not a package requirement:
`pip install torch==2.13.0` (a CPU build).
"""

from __future__ import annotations

import os
import time

from absl import app
from absl import flags
import numpy as np
from scipy import stats

from hwnas_jax.benchmark import tables
from hwnas_jax.benchmark import network
from hwnas_jax.benchmark import proxies
from hwnas_jax.benchmark import searchspace

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Benchmark bundle (default: $HWNAS_DATA_DIR).")
flags.DEFINE_integer("num_archs", 24, "Architectures timed (drawn at random).")
flags.DEFINE_integer("seed", 0, "Seed of the draw.")
flags.DEFINE_string("dataset", "cifar10", "Images and network of this dataset.")
flags.DEFINE_integer("torch_threads", 1, "PyTorch intra-op threads. On a busy shared 2-core "
                     "machine 2 OpenMP threads ran 9x slower than 1 (spinning); use the faster.")


def torch_scorer():
  """A PyTorch TinyNetwork and FreeREA-style naswot / logsynflow (imported lazily)."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel

  class Zero(nn.Module):
    def forward(self, x):
      return x.mul(0.0)

  class BN(nn.BatchNorm2d):
    """A batch norm that synflow can switch off."""
    enabled = True

    def forward(self, x):
      return super().forward(x) if self.enabled else x

  def relu_conv_bn(c_in, c_out, k, stride=1):
    return nn.Sequential(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, bias=False), BN(c_out))

  def make_op(name, c):
    return {"none": Zero, "skip_connect": nn.Identity,
            "nor_conv_1x1": lambda: relu_conv_bn(c, c, 1),
            "nor_conv_3x3": lambda: relu_conv_bn(c, c, 3),
            "avg_pool_3x3": lambda: nn.AvgPool2d(3, 1, 1, count_include_pad=False)}[name]()

  class Cell(nn.Module):
    def __init__(self, ops, c):
      super().__init__()
      self.edges = nn.ModuleList(make_op(searchspace.OPS[o], c) for o in ops)

    def forward(self, x):
      nodes = [x]
      for j in range(1, 4):
        nodes.append(sum(self.edges[e](nodes[src])
                         for e, (src, dst) in enumerate(searchspace.EDGES) if dst == j))
      return nodes[3]

  class Reduction(nn.Module):
    def __init__(self, c_in, c_out):
      super().__init__()
      self.conv_a = relu_conv_bn(c_in, c_out, 3, 2)
      self.conv_b = relu_conv_bn(c_out, c_out, 3)
      self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x):
      return self.downsample(x) + self.conv_b(self.conv_a(x))

  class TinyNetwork(nn.Module):
    def __init__(self, ops, num_classes, c=16, n=5):
      super().__init__()
      self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), BN(c))
      layers = []
      for stage in range(3):
        if stage:
          layers.append(Reduction(c, 2 * c))
          c *= 2
        layers += [Cell(ops, c) for _ in range(n)]
      self.cells = nn.Sequential(*layers)
      self.lastact = nn.Sequential(BN(c), nn.ReLU(inplace=True))
      self.classifier = nn.Linear(c, num_classes)
      for m in self.modules():  # FreeREA's initialisation
        if isinstance(m, (nn.Conv2d, nn.Linear)):
          nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if isinstance(m, nn.Linear):
          nn.init.zeros_(m.bias)

    def forward(self, x):
      x = self.lastact(self.cells(self.stem(x)))
      return self.classifier(x.mean(dim=(2, 3)))

  @torch.no_grad()
  def naswot(net, images):
    codes = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: codes.append(out.flatten(1) > 0))
             for m in net.modules() if isinstance(m, nn.ReLU)]
    net(images)
    for h in hooks:
      h.remove()
    c = torch.cat(codes, dim=1).float()
    kernel = c @ c.t() + (1 - c) @ (1 - c).t()
    return torch.slogdet(kernel.double()).logabsdet.item()

  def logsynflow(net, image_shape):
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for m in net.modules():
      if isinstance(m, BN):
        m.enabled = False
    with torch.no_grad():
      for p in net.parameters():
        p.abs_()
    net.double().zero_grad()
    net(torch.ones((1,) + image_shape, dtype=torch.float64)).sum().backward()
    total = sum(torch.sum(torch.abs(m.weight * torch.log(m.weight.grad + proxies.LOG_EPS))).item()
                for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    net.float().load_state_dict(state)
    for m in net.modules():
      if isinstance(m, BN):
        m.enabled = True
    return total

  def score(ops, batches_nchw, num_classes, num_inits=proxies.NUM_INITS):
    logdets, synflows = [], []
    for _ in range(num_inits):
      net = TinyNetwork(ops, num_classes).train()
      logdets += [naswot(net, torch.from_numpy(b)) for b in batches_nchw]
      synflows.append(logsynflow(net, tuple(batches_nchw.shape[2:])))
    logdet = float(np.mean(logdets))
    return (logdet if np.isfinite(logdet) else proxies.SINGULAR_NASWOT), float(np.mean(synflows))

  return torch, score


def main(argv):
  del argv
  directory = tables.data_dir(FLAGS.data_dir)
  with np.load(os.path.join(directory, f"images_{FLAGS.dataset}.npz")) as data:
    images = data["images"]
  batches = proxies.prepare_images(images)  # NHWC for JAX
  batches_nchw = np.ascontiguousarray(np.transpose(batches, (0, 1, 4, 2, 3)))
  rng = np.random.default_rng(FLAGS.seed)
  indices = rng.choice(searchspace.NUM_ARCHS, size=FLAGS.num_archs, replace=False)
  ops = searchspace.arch_ops()
  net = network.network_for(FLAGS.dataset)
  torch, torch_score = torch_scorer()
  torch.set_num_threads(FLAGS.torch_threads)
  num_classes = searchspace.NUM_CLASSES[FLAGS.dataset]

  start = time.perf_counter()
  proxies.score(net, ops[0], batches, index=0)
  compile_s = time.perf_counter() - start
  torch_score(tuple(ops[0]), batches_nchw, num_classes)  # warm-up

  times = {"jax": [], "torch": []}
  values = {"jax": [], "torch": []}
  for i in indices:
    start = time.perf_counter()
    values["jax"].append(proxies.score(net, ops[i], batches, index=int(i)))
    times["jax"].append(time.perf_counter() - start)
    start = time.perf_counter()
    values["torch"].append(torch_score(tuple(ops[i]), batches_nchw, num_classes))
    times["torch"].append(time.perf_counter() - start)

  print(f"{FLAGS.num_archs} architectures (seed {FLAGS.seed}), {FLAGS.dataset} images, "
        f"{proxies.NUM_INITS} inits x {len(batches)} batches of {batches.shape[1]}; "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads; "
        f"load average {os.getloadavg()[0]:.1f}")
  print(f"JAX compilation (once): {compile_s:.1f} s")
  for name in ("jax", "torch"):
    t = np.array(times[name])
    print(f"{name:>5}: {t.mean():.2f} s/arch (median {np.median(t):.2f}); all 15,625: "
          f"{t.mean() * searchspace.NUM_ARCHS / 3600:.1f} h")
  print(f"speed-up JAX over PyTorch: {np.mean(times['torch']) / np.mean(times['jax']):.2f}x")
  jax_v, torch_v = np.array(values["jax"]), np.array(values["torch"])
  print("Spearman JAX vs PyTorch values: naswot "
        f"{stats.spearmanr(jax_v[:, 0], torch_v[:, 0]).statistic:.3f}, logsynflow "
        f"{stats.spearmanr(jax_v[:, 1], torch_v[:, 1]).statistic:.3f}")


if __name__ == "__main__":
  app.run(main)
