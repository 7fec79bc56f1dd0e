r"""Write one architecture of the NATS-Bench network as an ONNX file, to time on any target.

  python -m experiments.export --arch=14286 --dataset=cifar10 --output=model.onnx
  python -m experiments.export --arch='|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|' \
    --dataset=ImageNet16-120 --batch_size=1 --output=model.onnx

`--arch` is an index (NATS-Bench order) or an architecture string. The weights are
`network.init_params` of `--seed`; `--batch_norm=inference` (the default) exports batch norm
as a deployed network runs it, `batch` with the batch's statistics as the Flax network does
(`hwnas_jax.benchmark.onnx_export`). The model passes `onnx.checker`.
"""

from __future__ import annotations

from absl import flags

from experiments import cli
from hwnas_jax.benchmark import onnx_export
from hwnas_jax.benchmark import searchspace

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """Flags of the command (defined only when run as a program)."""
  flags.DEFINE_string("arch", None, "Architecture: index or NATS-Bench string.", required=True,
                      flag_values=fv)
  flags.DEFINE_enum("dataset", "cifar10", list(searchspace.DATASETS), "Dataset.", flag_values=fv)
  flags.DEFINE_string("output", None, "The .onnx file to write.", required=True, flag_values=fv)
  flags.DEFINE_integer("batch_size", 1, "Images per forward pass.", flag_values=fv)
  flags.DEFINE_integer("image_size", None, "Image side (default: the dataset's).",
                       flag_values=fv)
  flags.DEFINE_integer("channels", 16, "Channels C of the network.", flag_values=fv)
  flags.DEFINE_integer("num_cells", 5, "Cells N per stage.", flag_values=fv)
  flags.DEFINE_enum("batch_norm", "inference", list(onnx_export.BATCH_NORM_MODES),
                    "inference (deployed) or batch (the batch's statistics, as in Flax).",
                    flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the weights.", flag_values=fv)


def main(argv, fv: flags.FlagValues = FLAGS):
  del argv
  output = cli.checked_output(fv.output)
  index = onnx_export.parse_arch(fv.arch)
  size = fv.image_size
  spec = onnx_export.NetworkSpec(
      dataset=fv.dataset, batch_size=cli.whole("--batch_size", fv.batch_size),
      image_size=None if size is None else cli.whole("--image_size", size, minimum=4),
      channels=cli.whole("--channels", fv.channels),
      num_cells=cli.whole("--num_cells", fv.num_cells), batch_norm=fv.batch_norm)
  onnx_export.export(index, output, spec, cli.whole("--seed", fv.seed, minimum=0))
  print(f"wrote {output}: architecture {index} {searchspace.index_to_string(index)}, "
        f"{fv.dataset}, input {spec.input_shape()} (NCHW), batch norm {spec.batch_norm}")


if __name__ == "__main__":
  cli.run(main, define_flags)
