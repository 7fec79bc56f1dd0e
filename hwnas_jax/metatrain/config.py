"""What a meta-training config may say, checked before any work is done.

The schema is `experiments/configs/default.py` (the entry point passes it in): a key it
does not have is a typo, not a new setting. Values are checked here, so `--config.prior=foo`
or `num_devices=0` end in one readable error rather than a run that trains something else.
"""

from __future__ import annotations

import difflib
import math
import numbers

from hwnas_jax.benchmark import aggregate
from hwnas_jax.benchmark import tables
from hwnas_jax.devices import synthetic

NAMES = ("controller", "paper_controller")
PRIORS = ("mixture", "paper")
# Where the controller's in-context latency model starts: "flat" (every network costs the
# budget; versions up to 0.9.0), "fitted" to the synthetic prior, or fitted and widened
# ("fitted_wide", `train.fit_in_context_start`).
FLAT_START = "flat"
IN_CONTEXT_PRIORS = (FLAT_START, "fitted", "fitted_wide")
# Keys a resumed run may change: how long it trains and how often it reports.
RESUMABLE = ("num_updates", "eval_every", "checkpoint_every")


def _flat(config, prefix: str = "") -> dict:
  items = config.items() if hasattr(config, "items") else []
  flat = {}
  for key, value in items:
    if hasattr(value, "items"):
      flat.update(_flat(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def check_keys(config, schema) -> None:
  """ValueError naming every key of `config` that `schema` lacks (with close matches), or
  every key of `schema` that `config` lacks (a config file built from scratch)."""
  known = _flat(schema)
  missing = [key for key in known if key not in _flat(config)]
  if missing:
    raise ValueError(f"config lacks key(s) {', '.join(missing)}; start the config file from "
                     "experiments/configs/default.py's get_config()")
  unknown = [key for key in _flat(config) if key not in known]
  if unknown:
    hints = []
    for key in unknown:
      close = difflib.get_close_matches(key, known, n=1)
      hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ValueError(f"unknown config key(s) {', '.join(hints)}; the schema "
                     "(experiments/configs/default.py) has: " + ", ".join(sorted(known)))


def _whole(config, key: str, minimum: int = 1) -> int:
  value = config[key]
  if (isinstance(value, bool) or not isinstance(value, numbers.Real)
      or not math.isfinite(value) or value != int(value)):
    raise ValueError(f"config.{key} must be a whole number, got {value!r}")
  if value < minimum:
    raise ValueError(f"config.{key} must be >= {minimum}, got {value!r}")
  return int(value)


def _positive(config, key: str, allow_zero: bool = False) -> float:
  value = config[key]
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
    raise ValueError(f"config.{key} must be a finite number, got {value!r}")
  if value < 0 or (value == 0 and not allow_zero):
    raise ValueError(f"config.{key} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
  return float(value)


def _choice(config, key: str, choices) -> str:
  if config[key] not in choices:
    raise ValueError(f"config.{key}={config[key]!r} is not one of {', '.join(choices)}")
  return config[key]


def num_slots(config) -> int:
  """Steps of a meta-training episode: K, or the largest K of `config.num_probes_range`
  (episodes with a smaller K of their own stop early)."""
  probe_range = tuple(config.get("num_probes_range", ()))
  return max([int(config.num_probes), *(int(k) for k in probe_range[1:])])


def minibatch_items(config) -> tuple[int, str]:
  """(how many, of what) one shard's batch holds for PPO to split into minibatches."""
  episodes = config.num_devices // config.num_shards
  if config.get("episode_minibatches", False):
    return episodes, "episodes"
  return episodes * num_slots(config), "probe-steps"


def validate(config) -> None:
  """ValueError, with the key and the allowed values, for anything a run cannot use."""
  _choice(config, "name", NAMES)
  _choice(config, "prior", PRIORS)
  start = config.get("in_context_prior", FLAT_START)
  if start not in IN_CONTEXT_PRIORS:
    raise ValueError(f"config.in_context_prior={start!r} is not one of "
                     f"{', '.join(IN_CONTEXT_PRIORS)}")
  if start != FLAT_START and config.name != "controller":
    raise ValueError(f"config.in_context_prior={start!r} sets where the controller's "
                     f"in-context model starts; the {config.name!r} has none: leave it "
                     f"{FLAT_START!r}")
  if config.held_out_family:
    _choice(config, "held_out_family", tables.FAMILIES)
  try:
    aggregate.parse(config.proxy, terms=None)  # its terms are checked against the data
  except ValueError as error:
    raise ValueError(f"config.proxy: {error}") from None
  for key in ("num_probes", "num_devices", "num_updates", "hidden_size", "num_epochs",
              "num_minibatches", "eval_every", "eval_devices", "checkpoint_every",
              "num_shards", "num_seeds"):
    _whole(config, key)
  _whole(config, "seed", minimum=0)
  if config.seed + config.num_seeds > 2**31:  # seeds become int32/int64 keys
    raise ValueError(f"config.seed must be below 2**31 - config.num_seeds, got {config.seed!r}")
  if config.name == "paper_controller" and config.num_probes < 2:
    raise ValueError("the paper controller edits its first probe: config.num_probes >= 2")
  probe_range = config.get("num_probes_range", ())
  if probe_range:
    try:
      low, high = probe_range
      if not all(float(k).is_integer() and not isinstance(k, bool) for k in (low, high)):
        raise ValueError
    except (TypeError, ValueError):
      raise ValueError("config.num_probes_range must be () or two whole numbers (low, high), "
                       f"got {probe_range!r}") from None
    if not 1 <= low <= high:
      raise ValueError(f"config.num_probes_range must satisfy 1 <= low <= high, got "
                       f"{tuple(probe_range)}")
    if config.name == "paper_controller":
      raise ValueError("config.num_probes_range: the paper controller's history has a fixed "
                       "K; leave it ()")
  power = config.get("num_probes_power", 0.0)
  if (isinstance(power, bool) or not isinstance(power, numbers.Real)
      or not math.isfinite(power) or power < 0):
    raise ValueError(f"config.num_probes_power must be a finite number >= 0, got {power!r}")
  if power and not probe_range:
    raise ValueError("config.num_probes_power weighs the K of config.num_probes_range; set "
                     "the range or leave the power 0")
  weight = config.get("prior_fitted_weight", synthetic.FITTED_WEIGHT)
  if (isinstance(weight, bool) or not isinstance(weight, numbers.Real)
      or not 0 <= weight <= 1):
    raise ValueError(f"config.prior_fitted_weight must be a number in [0, 1], got {weight!r}")
  if weight != synthetic.FITTED_WEIGHT and config.prior != "mixture":
    raise ValueError("config.prior_fitted_weight weighs the mixture prior's components; the "
                     f"{config.prior!r} prior has none: leave it {synthetic.FITTED_WEIGHT}")
  told = config.get("noise_told_share", 0.0)
  if (isinstance(told, bool) or not isinstance(told, numbers.Real)
      or not 0 <= told <= 1):
    raise ValueError(f"config.noise_told_share must be a number in [0, 1], got {told!r}")
  if told and config.name == "paper_controller":
    raise ValueError("config.noise_told_share: the paper controller sees no noise level; "
                     "leave it 0")
  for key in ("learning_rate", "clip_eps", "max_grad_norm"):
    _positive(config, key)
  for key in ("vf_coef", "ent_coef", "gamma", "gae_lambda", "invalid_penalty"):
    _positive(config, key, allow_zero=True)
  for key in ("gamma", "gae_lambda"):
    if config[key] > 1:
      raise ValueError(f"config.{key} must be in [0, 1], got {config[key]!r}")
  try:
    low, high = (float(q) for q in config.budget_percentiles)
  except (TypeError, ValueError):
    raise ValueError("config.budget_percentiles must be two numbers (low, high), got "
                     f"{config.budget_percentiles!r}") from None
  if not 0 < low <= high <= 100:
    raise ValueError(f"config.budget_percentiles must satisfy 0 < low <= high <= 100, got "
                     f"{tuple(config.budget_percentiles)}")
  if not isinstance(config.get("episode_minibatches", False), bool):
    raise ValueError("config.episode_minibatches must be True or False, got "
                     f"{config.episode_minibatches!r}")
  items, what = minibatch_items(config)
  if config.num_devices % config.num_shards or items % config.num_minibatches:
    raise ValueError(f"config.num_devices={config.num_devices} must split into "
                     f"config.num_shards={config.num_shards} equal shards whose "
                     f"{items} {what} split into config.num_minibatches="
                     f"{config.num_minibatches}")


def differences(saved: Mapping, config) -> list[str]:
  """Keys (outside RESUMABLE) whose value differs between a saved config and `config`."""
  now, before = _flat(config), _flat(saved)
  keys = sorted(set(now) | set(before))
  return [f"{k}: {before.get(k, '<absent>')!r} -> {now.get(k, '<absent>')!r}" for k in keys
          if k not in RESUMABLE and _normal(before.get(k)) != _normal(now.get(k))]


def _normal(value):
  return list(value) if isinstance(value, (tuple, list)) else value
