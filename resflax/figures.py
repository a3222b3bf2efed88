"""Sweep figures: training curves per family (as in Figure 6 of He et al. 2015) and error against depth."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from matplotlib import ticker  # pylint: disable=g-import-not-at-top

from resflax import report

# Paper-column size: readable when printed at about 3.5 inches per panel.
PANEL_SIZE = (4.2, 3.2)
DPI = 150


def _depth_colors(depths: Sequence[int]) -> dict[int, Any]:
  cmap = plt.get_cmap("viridis")
  span = max(len(depths) - 1, 1)
  return {d: cmap(0.85 * i / span) for i, d in enumerate(sorted(depths))}


def plot_training_curves(
    curves: dict[tuple[str, int, int], list[dict[str, Any]]], path: pathlib.Path
) -> None:
  """Plot eval-mode training error (solid) and test error (dashed) over steps, a panel per family.

  `curves` maps (family, depth, seed) to that run's evaluation records, each with `step`,
  `train_error` and, where measured, `test_error`.
  """
  depths = sorted({depth for (_, depth, _) in curves})
  colors = _depth_colors(depths)
  fig, axes = plt.subplots(
      1, 2, figsize=(2 * PANEL_SIZE[0], PANEL_SIZE[1]), sharey=True, constrained_layout=True
  )
  for ax, family in zip(axes, report.FAMILIES):
    labelled = set()
    for (run_family, depth, _), records in sorted(curves.items()):
      if run_family != family or not records:
        continue
      steps = [r["step"] for r in records]
      label = f"{family}-{depth}" if depth not in labelled else None
      labelled.add(depth)
      ax.plot(steps, [100 * r["train_error"] for r in records], color=colors[depth], lw=1.2,
              marker="o", markersize=2.5, label=label)
      tests = [(r["step"], r["test_error"]) for r in records if r.get("test_error") is not None]
      if tests:
        ax.plot(*zip(*[(s, 100 * e) for s, e in tests]), color=colors[depth], lw=1.2, ls="--",
                marker="o", markersize=2.5)
    ax.set_title(f"{family} networks")
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if labelled:
      ax.legend(fontsize=8)
  axes[0].set_ylabel("error (%): train solid, test dashed")
  fig.savefig(path, dpi=DPI)
  plt.close(fig)


def plot_error_vs_depth(results: Sequence[dict[str, Any]], path: pathlib.Path) -> None:
  """Plot final train and test error (%) against depth for both families, with seed spread."""
  table = report.aggregate(results)
  fig, axes = plt.subplots(
      1, 2, figsize=(2 * PANEL_SIZE[0], PANEL_SIZE[1]), constrained_layout=True
  )
  styles = {"plain": dict(color="tab:red", marker="o"), "residual": dict(color="tab:blue",
                                                                          marker="s")}
  for ax, name, title in zip(axes, ("train_error", "test_error"), ("training error",
                                                                   "test error")):
    for family in report.FAMILIES:
      points = sorted((d, s[name]) for (f, d), s in table.items() if f == family and s[name].count)
      if not points:
        continue
      depths = [d for d, _ in points]
      means = [100 * s.mean for _, s in points]
      spreads = [100 * s.std for _, s in points]
      ax.errorbar(depths, means, yerr=spreads, capsize=3, label=family, **styles[family])
    ax.set_title(f"final {title}")
    ax.set_xlabel("depth (layers)")
    ax.set_xticks(sorted({d for (_, d) in table}))
    ax.set_ylabel(f"{title} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.savefig(path, dpi=DPI)
  plt.close(fig)
