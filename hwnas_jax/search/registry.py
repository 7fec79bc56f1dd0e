"""Every search method and reference by name: the top of the search layer.

`make_methods(name, checkpoint)` gives a list with one method per trained seed for the
meta-trained controllers, one method for a hand-written baseline, and None for a reference
(which the harness scores from the table itself).
"""

from __future__ import annotations

from typing import Callable

from hwnas_jax.metatrain import checkpoint as checkpoint_lib
from hwnas_jax.benchmark import checks
from hwnas_jax.search import baselines
from hwnas_jax.search import deploy
from hwnas_jax.search import interface
from hwnas_jax.search import protocol

CONTROLLERS = ("controller", "paper_controller")
UNTRAINED = "untrained_"  # `untrained_controller`: a workdir's controller at its initial weights
NAMES = (*baselines.BASELINES, *CONTROLLERS, *(UNTRAINED + c for c in CONTROLLERS),
         *protocol.REFERENCES)


def check_names(names) -> list[str]:
  """The method names as a list; ValueError for none, an unknown one or one named twice."""
  return checks.names("methods", names, NAMES)


def regressions(workdir: str) -> list[str]:
  """A warning per seed whose last evaluation in metrics.jsonl is below its first (the
  nearest to its untrained start): meta-training made it worse."""
  warnings = []
  for seed in checkpoint_lib.trained_seeds(workdir):
    scores = [(row["step"], row["eval_score"]) for row in checkpoint_lib.read_metrics(workdir, seed)
              if "eval_score" in row]
    if len(scores) >= 2 and scores[-1][1] < scores[0][1]:
      warnings.append(f"warning: seed {seed} of {workdir!r} scores {scores[-1][1]:.4g} at its "
                      f"last evaluation (update {scores[-1][0]}), below {scores[0][1]:.4g} at its "
                      f"first (update {scores[0][0]}): meta-training made it worse")
  return warnings


def make_methods(name: str, checkpoint: str | None = None, proxy: str | None = None,
                 log: Callable[[str], None] = print) -> list[interface.Method] | None:
  """The method(s) called `name`; None for a reference of `protocol.REFERENCES`.

  A controller comes from `checkpoint`: one meta_train --workdir, or several separated by
  commas (the first that trained `name` is used), with one method per trained seed. When
  it was trained on another proxy than the evaluation's `proxy`, `log` says so.
  """
  check_names([name])
  if name in protocol.REFERENCES:
    return None
  if name in baselines.BASELINES:
    return [baselines.BASELINES[name]]
  if not checkpoint:
    raise ValueError(f"method {name!r} needs --checkpoint (the --workdir of a meta_train run)")
  untrained = name.startswith(UNTRAINED)
  found = []
  for workdir in checkpoint.split(","):
    # The config and the checkpoints are checked before a model is built (seconds of jit).
    config = checkpoint_lib.read_config(workdir)
    if config.name == name.removeprefix(UNTRAINED):
      checkpoint_lib.trained_seeds(workdir)
      config, methods = deploy.load_methods(workdir, untrained)
      if not untrained:
        for line in regressions(workdir):
          log(line)
      if proxy is not None and config.get("proxy", "paper") != proxy:
        log(f"note: {name} of {workdir!r} was meta-trained on proxy "
            f"{config.get('proxy', 'paper')!r} and is evaluated with proxy {proxy!r}")
      return methods
    found.append(f"{workdir!r} holds a {config.name!r} run")
  raise ValueError(f"no {name!r} run in --checkpoint: {'; '.join(found)}")
