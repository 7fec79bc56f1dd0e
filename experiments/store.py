r"""The measurement store: list, export, and a device's noise level from earlier searches.

  python -m experiments.store                         # every device: probes, failures, noise
  python -m experiments.store --device=onnxruntime    # its measurements, one line each
  python -m experiments.store --device=onnxruntime --noise   # sigma alone (for --noise_prior)
  python -m experiments.store --export=measurements.csv      # or .json

`--store` is the SQLite file (default: $XDG_CACHE_HOME/hwnas-jax/measurements.sqlite).
The noise level is the pooled spread of log-latency between measurements of one architecture
with one setting (`hwnas_jax.devices.store.noise_level`), the sigma of `devices.noise`.
"""

from __future__ import annotations

import csv
import json
import os

from absl import flags

from experiments import cli
from hwnas_jax.devices import store

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """Flags of the command (defined only when run as a program)."""
  flags.DEFINE_string("store", None, "The SQLite store (default: the user's cache folder).",
                      flag_values=fv)
  flags.DEFINE_string("device", None, "Only this device.", flag_values=fv)
  flags.DEFINE_bool("noise", False, "Print the device's noise sigma alone.", flag_values=fv)
  flags.DEFINE_string("export", None, "Write the rows to this .csv or .json file.",
                      flag_values=fv)


def summary_lines(rows: list[dict]) -> list[str]:
  """One line per device: probes taken, failed, architectures, noise sigma."""
  lines = [f"{'device':<24}{'ok':>6}{'failed':>8}{'archs':>7}{'sigma':>9}{'dof':>6}"
           f"{'rel iqr':>9}  last taken"]
  for device in dict.fromkeys(r["device"] for r in rows):
    mine = [r for r in rows if r["device"] == device]
    noise = store.noise_level(mine)
    sigma = "-" if noise["sigma"] is None else f"{noise['sigma']:.4f}"
    iqr = "-" if noise["median_relative_iqr"] is None else f"{noise['median_relative_iqr']:.3f}"
    lines.append(f"{device:<24}{sum(r['status'] == 'ok' for r in mine):>6}"
                 f"{sum(r['status'] == 'failed' for r in mine):>8}"
                 f"{len({r['arch_index'] for r in mine}):>7}{sigma:>9}{noise['dof']:>6}"
                 f"{iqr:>9}  {mine[-1]['taken_at']}")
  return lines


def row_line(row: dict) -> str:
  latency = "failed" if row["status"] != "ok" else f"{row['median_ms']:.4g} ms"
  return (f"{row['id']:>6} {row['taken_at']} {row['tag']:<9} {row['arch_index']:>6} "
          f"{latency:>12}" + (f"  {row['error']}" if row["error"] else ""))


def export_rows(rows: list[dict], path: str) -> None:
  """CSV (times and settings as JSON text) or JSON, by the file's extension."""
  if path.endswith(".json"):
    with open(path, "w") as f:
      json.dump(rows, f, indent=1)
    return
  if not path.endswith(".csv"):
    raise ValueError(f"--export {path!r}: give a .csv or .json file")
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(store.COLUMNS))
    writer.writeheader()
    for row in rows:
      writer.writerow({**row, "times_ms": json.dumps(row["times_ms"]),
                       "settings": json.dumps(row["settings"], sort_keys=True)})


def main(argv, fv: flags.FlagValues = FLAGS):
  del argv
  path = fv.store or store.default_path()
  if not os.path.isfile(path):
    raise ValueError(f"no measurement store at {path!r} (a live search creates it)")
  export = cli.checked_output(fv.export)
  rows = store.MeasurementStore(path).device_rows(fv.device)
  if fv.device and not rows:
    raise ValueError(f"no measurements of device {fv.device!r} in {path}")
  if fv.noise:
    if not fv.device:
      raise ValueError("--noise needs --device (the noise level is one device's)")
    noise = store.noise_level(rows)
    if noise["sigma"] is None:
      raise ValueError(f"device {fv.device!r} has no architecture measured twice in {path}: "
                       "its noise level is unknown")
    print(f"{noise['sigma']:.6g}")
    return
  print(f"{path}: {len(rows)} measurements")
  if fv.device:
    print("\n".join(row_line(r) for r in rows))
  print("\n".join(summary_lines(rows)))
  if export:
    export_rows(rows, export)
    print(f"wrote {export}")


if __name__ == "__main__":
  cli.run(main, define_flags)
