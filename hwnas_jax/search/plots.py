"""Plots of searches: proxy against latency, the probes, the budget and the answer; and the
one colour table every plot of methods uses, so a method looks the same in each."""

from __future__ import annotations

import numpy as np

# One colour per method, in every plot (sweeps, host study): matplotlib's tab10 by name.
METHOD_COLORS = {
    "controller": "tab:blue", "paper_controller": "tab:cyan",
    "untrained_controller": "tab:gray", "untrained_paper_controller": "tab:olive",
    "lsq": "tab:orange", "random": "tab:green", "oracle": "black",
    "proxy_oracle": "tab:purple", "rea": "tab:brown",
}
_SPARE_COLORS = ("tab:red", "gold", "navy", "teal", "maroon")


def method_color(name: str) -> str:
  """The method's colour from METHOD_COLORS; a name not there gets a spare one, the same for
  the same name in every plot."""
  if name in METHOD_COLORS:
    return METHOD_COLORS[name]
  return _SPARE_COLORS[sum(name.encode()) % len(_SPARE_COLORS)]


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
  """`search_figure` written to `path` (PNG)."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig = search_figure(record, proxy, background, background_label, extra_answers)
  fig.savefig(path, dpi=130)
  plt.close(fig)


def search_figure(record: dict, proxy: np.ndarray, background: np.ndarray | None = None,
                  background_label: str = "all architectures (table)",
                  extra_answers: list[dict] | None = None):
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
  ax.set_ylabel(proxy_label(record))
  ax.set_title(f"{record['method'] or 'search'} on {record['device']}, K={record['num_probes']}, "
               f"seed {record['seed']}")
  handles, labels = ax.get_legend_handles_labels()
  unique = dict(zip(labels, handles))
  ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
  fig.tight_layout()
  _label_probes(fig, ax, probes)  # last: it places labels where the final layout has room
  return fig


def proxy_label(record: dict) -> str:
  """The y-label: the record's proxy (its name, benchmark/aggregate.py's grammar) and dataset."""
  return f"accuracy proxy {record.get('proxy') or '(not recorded)'} on {record['dataset']}"


# Offsets (points) tried in turn for a probe's step label, nearest first.
_LABEL_OFFSETS = [(4, 3), (4, -10), (-6, 8), (-6, -14), (8, 12), (8, -18), (-10, 16),
                  (-10, -22), (12, 20), (12, -26), (4, 28), (4, -34)]


def _label_probes(fig, ax, probes) -> None:
  """Each probed architecture's step numbers ("3,7" where it was probed twice), each label
  moved to the first offset where it overlaps no other label."""
  steps: dict[int, list[dict]] = {}
  for p in probes:
    steps.setdefault(p["index"], []).append(p)
  renderer = fig.canvas.get_renderer()
  placed = []
  for group in sorted(steps.values(), key=lambda g: (g[0]["latency_ms"], g[0]["proxy"])):
    text = ",".join(str(p["step"]) for p in group)
    label = ax.annotate(text, (group[0]["latency_ms"], group[0]["proxy"]),
                        textcoords="offset points", xytext=_LABEL_OFFSETS[0], fontsize=7)
    for offset in _LABEL_OFFSETS:
      label.xyann = offset
      box = label.get_window_extent(renderer)
      if not any(box.overlaps(other) for other in placed):
        break
    placed.append(label.get_window_extent(renderer))


def family_bars(rows: list[dict], methods: list[str]):
  """Mean accuracy per held-out family (bars per method): `experiments.family_study`'s rows."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  families = list(dict.fromkeys(r["family"] for r in rows))
  value = {(r["family"], r["method"]): r["mean_accuracy"] for r in rows
           if r["group"] == r["family"]}
  fig, ax = plt.subplots(figsize=(8, 4.5))
  width = 0.8 / len(methods)
  for m, method in enumerate(methods):
    x = np.arange(len(families)) + (m - (len(methods) - 1) / 2) * width
    ax.bar(x, [value[(f, method)] for f in families], width, label=method,
           color=method_color(method))
  ax.set_xticks(np.arange(len(families)), families)
  low = min(value.values())
  ax.set_ylim(max(0.0, low - 5.0), max(value.values()) + 1.0)
  ax.set_xlabel("device family held out of the prior, the proxy choice and meta-training")
  ax.set_ylabel("mean test accuracy of the answer (%)")
  ax.set_title("A device family never seen in training (its devices x 3 datasets x 3 budgets)")
  ax.grid(axis="y", alpha=0.3)
  fig.legend(*ax.get_legend_handles_labels(), fontsize=8, ncol=len(methods), loc="lower center")
  fig.tight_layout(rect=(0, 0.07, 1, 1))
  return fig
