r"""Score architectures with the training-free proxies, resumably.

  python -m experiments.score_proxies --dataset=cifar10 \
    --images=$HWNAS_DATA_DIR/images_cifar10.npz --archs=0:15625 --output=proxies_cifar10.npz

`--archs` is a range `a:b` or a comma-separated list of NATS-Bench indices. The output
holds, in the order of `--archs`, `naswot`, `logsynflow`, `skip`, `flops`, `params` and
the indices under `index`: the layout of the bundle's `proxies_<dataset>.npz`, so
`bench.load_proxy_file` reads it when it covers all 15,625 architectures.
`images` (N, 3, H, W) comes from any `.npz`; uint8 images (ImageNet16) go in raw, as
FreeREA fed its stored batches (`--imagenet16_transform` applies its loaders' Normalize).
Every `--save_every` architectures the scores so far go to `<output>.partial.npz`; a
rerun with the same arguments continues from there.
"""

from __future__ import annotations

import os
import time

from absl import flags
from absl import logging
import numpy as np
import tqdm

from experiments import cli
from hwnas_jax.benchmark import network
from hwnas_jax.benchmark import proxies
from hwnas_jax.benchmark import searchspace

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Flags of the command; defined only when run as a program, so the module imports cleanly."""
  flags.DEFINE_enum("dataset", "cifar10", list(searchspace.DATASETS),
                    "Network's dataset (its number of classes).")
  flags.DEFINE_string("images", None, ".npz with `images` (N, 3, H, W).", required=True)
  flags.DEFINE_string("archs", "0:15625", "Indices: a:b or a comma-separated list.")
  flags.DEFINE_string("output", None, "Output .npz.", required=True)
  flags.DEFINE_integer("seed", 0, "Initialisations: key fold_in(key(seed), index).")
  flags.DEFINE_integer("num_inits", proxies.NUM_INITS, "Random initialisations per architecture.")
  flags.DEFINE_integer("batch_size", proxies.BATCH_SIZE, "Images per batch (NASWOT's K is B x B).")
  flags.DEFINE_integer("save_every", 25, "Architectures between saves of the partial file.")
  flags.DEFINE_bool("imagenet16_transform", False,
                    "Normalise uint8 images with ImageNet16's mean and std (not FreeREA's values).")


def parse_archs(spec: str) -> np.ndarray:
  """'a:b' or 'i,j,k' -> int64 indices, checked against the space."""
  spec = spec.strip()
  try:
    if ":" in spec:
      bounds = zip(spec.split(":"), (0, searchspace.NUM_ARCHS))
      start, stop = (int(x) if x else default for x, default in bounds)
      indices = np.arange(start, stop)
    else:
      indices = np.array([int(x) for x in spec.split(",") if x.strip()])
  except ValueError as error:
    raise ValueError(f"--archs must be a:b or a comma-separated list of ints, got {spec!r}"
                     ) from error
  if indices.size == 0:
    raise ValueError(f"--archs {spec!r} selects no architecture")
  bad = (indices < 0) | (indices >= searchspace.NUM_ARCHS)
  if bad.any():
    raise ValueError(f"--archs: index {int(indices[bad][0])} outside [0, {searchspace.NUM_ARCHS})")
  return indices.astype(np.int64)


def load_images(path: str) -> np.ndarray:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"images file not found: {path!r}")
  with np.load(path) as data:
    if "images" not in data.files:
      raise ValueError(f"{path!r} has no `images` array; it has {data.files}")
    return data["images"]


def _save(path: str, **arrays) -> None:
  """Write atomically, so an interruption never leaves a broken file."""
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)


def _resume(partial: str, indices: np.ndarray, seed: int, num_inits: int) -> dict[str, np.ndarray]:
  """Scores of an earlier run with the same arguments, else empty (NaN = not yet scored)."""
  empty = {"naswot": np.full(len(indices), np.nan), "logsynflow": np.full(len(indices), np.nan)}
  if not os.path.isfile(partial):
    return empty
  with np.load(partial) as old:
    same = (np.array_equal(old["index"], indices) and int(old["seed"]) == seed
            and int(old["num_inits"]) == num_inits)
    if not same:
      logging.warning("%s is from other arguments; starting afresh", partial)
      return empty
    return {"naswot": old["naswot"].copy(), "logsynflow": old["logsynflow"].copy()}


def score_archs(dataset: str, images: np.ndarray, indices: np.ndarray, output: str, *,
                seed: int = 0, num_inits: int = proxies.NUM_INITS,
                batch_size: int = proxies.BATCH_SIZE, save_every: int = 25,
                progress: bool = True, imagenet16_transform: bool = False,
                net: network.TinyNetwork | None = None) -> dict[str, np.ndarray]:
  """Score `indices`, resuming from `<output>.partial.npz`; writes and returns the table.

  `net` replaces the dataset's network (C=16, N=5), e.g. by a tiny one in tests.
  """
  batches = proxies.prepare_images(images, batch_size, imagenet16_transform)
  net = net or network.network_for(dataset)
  partial = output + ".partial.npz"
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  scores = _resume(partial, indices, seed, num_inits)
  todo = np.flatnonzero(np.isnan(scores["naswot"]) | np.isnan(scores["logsynflow"]))
  ops = searchspace.arch_ops()
  start = time.perf_counter()
  bar = tqdm.tqdm(todo, desc=f"{dataset} proxies", disable=not progress,
                  initial=len(indices) - len(todo), total=len(indices))
  for count, k in enumerate(bar, 1):
    naswot, synflow = proxies.score(net, ops[indices[k]], batches, index=int(indices[k]),
                                    seed=seed, num_inits=num_inits)
    scores["naswot"][k], scores["logsynflow"][k] = naswot, synflow
    if count % save_every == 0 or count == len(todo):
      _save(partial, index=indices, seed=seed, num_inits=num_inits, **scores)
  logging.info("%d architectures scored in %.1f s", len(todo), time.perf_counter() - start)
  flops, params = proxies.flops_params(indices, dataset)
  table = dict(naswot=scores["naswot"], logsynflow=scores["logsynflow"],
               skip=proxies.skip(ops[indices]), flops=flops, params=params, index=indices)
  _save(output, **table)
  if os.path.exists(partial):
    os.remove(partial)
  return table


def main(argv):
  del argv
  indices = parse_archs(FLAGS.archs)
  table = score_archs(FLAGS.dataset, load_images(FLAGS.images), indices, FLAGS.output,
                      seed=FLAGS.seed, num_inits=FLAGS.num_inits, batch_size=FLAGS.batch_size,
                      save_every=FLAGS.save_every,
                      imagenet16_transform=FLAGS.imagenet16_transform)
  print(f"wrote {len(table['index'])} architectures to {FLAGS.output}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
