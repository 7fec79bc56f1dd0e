r"""Score architectures with the training-free proxies of the lab, resumably.

  python -m experiments.score_proxies --dataset=cifar10 \
    --images=$HWNAS_DATA_DIR/images_cifar10.npz --archs=0:15625 --output=proxies_cifar10.npz \
    [--proxies=naswot,logsynflow,meco,az_expressivity,az_progressivity,az_trainability]

`--archs` is a range `a:b` or a comma-separated list of NATS-Bench indices. The output
holds, in the order of `--archs`, one float64 array per proxy of `--proxies` (default
naswot, logsynflow), `skip`, `flops`, `params` and the indices under `index`: the layout of
the bundle's `proxies_<dataset>.npz`, so `tables.load_proxy_file` reads it when it covers
all 15,625 architectures and holds naswot and logsynflow.
`images` (N, 3, H, W) comes from any `.npz`; uint8 images (ImageNet16) go in raw, as
FreeREA fed its stored batches (`--imagenet16_transform` applies its loaders' Normalize).
Architectures go through `hwnas_jax.benchmark.lab` `--chunk` at a time (one compiled call
per proxy family); architectures whose computations are equal (they differ only on edges
that compute nothing a proxy reads; the weights are shared) are computed once: 10,095
distinct NASWOT computations in the space, 9,445 log-synflow and AZ-NAS, 12,205 MeCo. Every
`--save_every` architectures the scores so far go to `<output>.partial.npz` (atomically); a
rerun with the same arguments continues from there. On a GPU, vmap blocks of
architectures (the masked supernet) with `--vmap_size`, e.g.

  python -m experiments.score_proxies --dataset=cifar10 --images=... --archs=0:15625 \
    --output=... --proxies=naswot,logsynflow,meco,az_expressivity,az_progressivity,\
az_trainability --chunk=1000 --vmap_size=50 --save_every=1000
"""

from __future__ import annotations

import os
import time
import zlib

from absl import flags
from absl import logging
import jax
import numpy as np

from experiments import cli
from hwnas_jax.benchmark import lab
from hwnas_jax.benchmark import network
from hwnas_jax.benchmark import progress as progress_lines
from hwnas_jax.benchmark import proxies
from hwnas_jax.benchmark import searchspace
from hwnas_jax.benchmark import tables

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Flags of the command; defined only when run as a program, so the module imports cleanly."""
  flags.DEFINE_enum("dataset", "cifar10", list(searchspace.DATASETS),
                    "Network's dataset (its number of classes).")
  flags.DEFINE_string("images", None, ".npz with `images` (N, 3, H, W).", required=True)
  flags.DEFINE_string("archs", "0:15625", "Indices: a:b or a comma-separated list.")
  flags.DEFINE_string("output", None, "Output .npz.", required=True)
  flags.DEFINE_integer("seed", 0, "Initialisations: keys fold_in(key(seed), i), shared by all.")
  flags.DEFINE_integer("num_inits", proxies.NUM_INITS,
                       "Initialisations for naswot and logsynflow.")
  flags.DEFINE_integer("batch_size", proxies.BATCH_SIZE, "Images per batch (NASWOT's K is B x B).")
  flags.DEFINE_integer("save_every", 100, "Architectures between saves of the partial file.")
  flags.DEFINE_list("proxies", list(lab.DEFAULT_PROXIES), f"Proxies, of {list(lab.PROXIES)}.")
  flags.DEFINE_integer("chunk", 25, "Architectures per compiled call.")
  flags.DEFINE_integer("vmap_size", 1, "Architectures vmapped at a time: 1 on a CPU (only the "
                       "chosen operations run); tens on a GPU (the masked supernet).")
  flags.DEFINE_integer("az_batch", lab.AZ_BATCH, "Gaussian images of the AZ-NAS proxies.")
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


def parse_proxies(names) -> tuple[str, ...]:
  names = tuple(n.strip() for n in names if n.strip())
  unknown = [n for n in names if n not in lab.PROXIES]
  if unknown or not names:
    raise ValueError(f"--proxies: unknown {unknown or 'none given'}; known: {list(lab.PROXIES)}")
  return tuple(dict.fromkeys(names))


def load_images(path: str) -> np.ndarray:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"images file not found: {path!r}")
  tables.check_npz(path)
  with np.load(path, allow_pickle=False) as data:
    if "images" not in data.files:
      raise ValueError(f"{path!r} has no `images` array; it has {data.files}")
    return data["images"]


def _save(path: str, **arrays) -> None:
  """Write atomically, so an interruption never leaves a broken file."""
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)


def _resume(partial: str, indices: np.ndarray, seed: int, num_inits: int,
            names: tuple[str, ...], az_batch: int = lab.AZ_BATCH,
            inputs: dict | None = None) -> dict[str, np.ndarray]:
  """Scores of an earlier run with the same arguments, else empty (NaN = not yet scored).
  `inputs` (the dataset and a checksum of the images) must match where the file has them."""
  empty = {name: np.full(len(indices), np.nan) for name in names}
  if not os.path.isfile(partial):
    return empty
  with np.load(partial) as old:
    same = (np.array_equal(old["index"], indices) and int(old["seed"]) == seed
            and int(old["num_inits"]) == num_inits and all(n in old.files for n in names)
            and ("az_batch" not in old.files or int(old["az_batch"]) == az_batch)
            and all(key not in old.files or old[key].item() == value
                    for key, value in (inputs or {}).items()))
    if not same:
      logging.warning("%s is from other arguments; starting afresh", partial)
      return empty
    return {name: old[name].astype(np.float64) for name in names}


def score_archs(dataset: str, images: np.ndarray, indices: np.ndarray, output: str, *,
                seed: int = 0, num_inits: int = proxies.NUM_INITS,
                batch_size: int = proxies.BATCH_SIZE, save_every: int = 100,
                progress: bool = True, imagenet16_transform: bool = False,
                net: network.TinyNetwork | None = None,
                proxy_names=lab.DEFAULT_PROXIES, chunk: int = 25,
                vmap_size: int = 1, az_batch: int = lab.AZ_BATCH) -> dict[str, np.ndarray]:
  """Score `indices`, resuming from `<output>.partial.npz`; writes and returns the table.

  `net` replaces the dataset's network (C=16, N=5), e.g. by a tiny one in tests.
  """
  names = parse_proxies(proxy_names)
  batches = proxies.prepare_images(images, batch_size, imagenet16_transform)
  net = net or network.network_for(dataset)
  partial = output + ".partial.npz"
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  inputs = {"dataset": dataset, "images_crc32": zlib.crc32(np.ascontiguousarray(images))}
  scores = _resume(partial, indices, seed, num_inits, names, az_batch, inputs)
  ops = searchspace.arch_ops()[indices]
  plan = lab.plan_archs(ops)
  work = {}  # family -> (rows still to score, their computation ids, representative rows)
  for family in sorted({lab.family_of(n) for n in names}):
    missing = np.any([np.isnan(scores[n]) for n in names if lab.family_of(n) == family], axis=0)
    rows = np.flatnonzero(missing)
    if len(rows):
      _, first, inverse = np.unique(lab.family_keys(family, plan)[rows], axis=0,
                                    return_index=True, return_inverse=True)
      work[family] = (rows, inverse.ravel(), rows[first])
  if work:
    setup = lab.Setup(net, names, num_inits, tuple(batches.shape[2:]), vmap_size, az_batch)
    shared = lab.prepare(setup, batches, images, seed)
  total = sum(len(reps) for _, _, reps in work.values())
  start, unsaved = time.perf_counter(), 0
  for family, (rows, inverse, reps) in work.items():
    # Counts architectures (a computation shared by several counts them all), one bar a family.
    bar = progress_lines.bar(total=len(rows), disable=not progress, unit="arch", smoothing=0.05,
                             desc=f"{dataset} {family} ({len(reps)} distinct computations)")
    for first in range(0, len(reps), chunk):
      raw = lab.run_family(setup, shared, family,
                           {k: v[reps[first:first + chunk]] for k, v in plan.items()}, chunk)
      members = np.flatnonzero((inverse >= first) & (inverse < first + chunk))
      expanded = jax.tree_util.tree_map(lambda a: a[inverse[members] - first], raw)
      for name, value in lab.finish(family, expanded, ops[rows[members]]).items():
        if name in scores:
          scores[name][rows[members]] = value
      unsaved += len(members)
      bar.update(len(members))
      if unsaved >= save_every or first + chunk >= len(reps):
        _save(partial, index=indices, seed=seed, num_inits=num_inits, az_batch=az_batch,
              **inputs, **scores)
        unsaved = 0
    bar.close()
  logging.info("%d distinct computations in %.1f s", total, time.perf_counter() - start)
  flops, params = proxies.flops_params(indices, dataset)
  table = dict(scores, skip=proxies.skip(ops), flops=flops, params=params, index=indices)
  _save(output, **table)
  if os.path.exists(partial):
    os.remove(partial)
  return table


def check_flags(fv) -> None:
  """Counts >= 1, the seed >= 0, the output a writable file that is not the images: checked
  before minutes of compiling, not after."""
  for flag in ("num_inits", "batch_size", "save_every", "chunk", "vmap_size", "az_batch"):
    cli.whole(f"--{flag}", getattr(fv, flag))
  cli.whole("--seed", fv.seed, minimum=0)
  cli.checked_output(fv.output)
  cli.check_not_an_input(fv.output, [fv.images])


def main(argv):
  del argv
  check_flags(FLAGS)
  indices = parse_archs(FLAGS.archs)
  table = score_archs(FLAGS.dataset, load_images(FLAGS.images), indices, FLAGS.output,
                      seed=FLAGS.seed, num_inits=FLAGS.num_inits, batch_size=FLAGS.batch_size,
                      save_every=FLAGS.save_every,
                      imagenet16_transform=FLAGS.imagenet16_transform,
                      proxy_names=FLAGS.proxies, chunk=FLAGS.chunk, vmap_size=FLAGS.vmap_size,
                      az_batch=FLAGS.az_batch)
  print(f"wrote {len(table['index'])} architectures to {FLAGS.output}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
