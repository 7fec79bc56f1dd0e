"""Plots of searches: proxy against latency, the probes, the budget and the answer."""

from __future__ import annotations

import numpy as np


def pareto_front(latency_ms: np.ndarray, proxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Best proxy reachable with latency <= x, as the steps (x, best) of a staircase."""
  ok = np.isfinite(latency_ms)
  order = np.argsort(latency_ms[ok], kind="stable")
  lat, best = latency_ms[ok][order], np.maximum.accumulate(proxy[ok][order])
  steps = np.r_[True, best[1:] > best[:-1]]
  return lat[steps], best[steps]


def plot_search(record: dict, proxy: np.ndarray, path: str, background: np.ndarray | None = None,
                background_label: str = "all architectures (table)",
                extra_answers: list[dict] | None = None) -> None:
  """Proxy versus latency: the probes, the budget, the answer; the space behind if known."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, ax = plt.subplots(figsize=(7.5, 5))
  if background is not None:
    indices = np.flatnonzero(np.isfinite(background))
    sparse = indices.size < 2000  # a measured sample rather than a whole table
    ax.scatter(background[indices], proxy[indices], s=10 if sparse else 3,
               c="0.6" if sparse else "0.75", alpha=0.6 if sparse else 0.35, lw=0,
               label=background_label, rasterized=True)
    front_x, front_y = pareto_front(background[indices], proxy[indices])
    ax.step(front_x, front_y, where="post", c="0.35", lw=1, label="front (max proxy, latency <= x)")
  probes = record["probes"]
  if probes:
    x = np.array([p["latency_ms"] for p in probes])
    y = np.array([p["proxy"] for p in probes])
    inside = np.array([p["within_budget"] for p in probes])
    ax.scatter(x[inside], y[inside], s=36, c="tab:blue", label="probe, within budget", zorder=3)
    ax.scatter(x[~inside], y[~inside], s=36, c="tab:red", marker="x",
               label="probe, over budget", zorder=3)
    for p in probes:
      ax.annotate(str(p["step"]), (p["latency_ms"], p["proxy"]), textcoords="offset points",
                  xytext=(4, 3), fontsize=7)
  ax.axvline(record["budget_ms"], c="k", ls="--", lw=1,
             label=f"budget {record['budget_ms']:.3g} ms")
  answer = record["answer"]
  if answer is not None and answer["latency_ms"] is not None:
    status = "valid" if record["valid"] else "INVALID"
    ax.scatter([answer["latency_ms"]], [answer["proxy"]], s=260, marker="*", c="gold",
               edgecolors="k", zorder=4, label=f"answer #{answer['index']} ({status})")
    check = record.get("check")
    if check is not None and check["latency_ms"] != answer["latency_ms"]:
      ax.scatter([check["latency_ms"]], [answer["proxy"]], s=90, marker="*", facecolors="none",
                 edgecolors="k", zorder=4, label=f"answer re-measured {check['latency_ms']:.3g} ms")
      ax.plot([answer["latency_ms"], check["latency_ms"]], [answer["proxy"]] * 2, c="k", lw=0.8)
  for extra in extra_answers or []:
    ax.scatter([extra["latency_ms"]], [extra["proxy"]], s=70, marker=extra.get("marker", "D"),
               c=extra.get("color"), edgecolors="k", zorder=4, label=extra.get("label"))
  ax.set_xlabel(f"latency on {record['device']} (ms)")
  ax.set_ylabel(f"accuracy proxy ({record['dataset']}, naswot+logsynflow+skip)")
  ax.set_title(f"{record['method'] or 'search'} on {record['device']}, K={record['num_probes']}, "
               f"seed {record['seed']}")
  handles, labels = ax.get_legend_handles_labels()
  unique = dict(zip(labels, handles))
  ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)
