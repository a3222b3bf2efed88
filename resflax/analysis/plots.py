"""Figures of the analyses, in the style of the sweep's figures (`resflax.figures`).

Each function takes the JSON records the analyses write and saves one PNG. Plain nets are red
and dashed, residual nets blue and solid, and deeper nets are darker.
"""

import pathlib
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from resflax import figures
from resflax import report
from resflax.analysis import responses

Record = dict[str, Any]

_FAMILY_COLORMAPS = {"plain": "Reds", "residual": "Blues"}
_FAMILY_LINESTYLES = {"plain": "--", "residual": "-"}


def _net_styles(records: Sequence[Record]) -> dict[tuple[str, int], dict[str, Any]]:
  """Return the line style of every (family, depth) in `records`."""
  styles = {}
  for family in report.FAMILIES:
    depths = sorted({r["depth"] for r in records if r["family"] == family})
    colormap = plt.get_cmap(_FAMILY_COLORMAPS[family])
    for rank, depth in enumerate(depths):
      shade = 0.45 + 0.5 * rank / max(len(depths) - 1, 1)
      styles[(family, depth)] = dict(color=colormap(shade), ls=_FAMILY_LINESTYLES[family])
  return styles


def _save(fig: plt.Figure, path: pathlib.Path) -> None:
  fig.savefig(path, dpi=figures.DPI)
  plt.close(fig)


def plot_layer_responses(records: Sequence[Record], path: pathlib.Path) -> None:
  """Plot each layer's response std against its index, raw and sorted by magnitude.

  One row for the trained nets (step > 0) and one for the freshly initialised nets (step 0),
  where both occur, as in Figure 7 of He et al. 2015 but on a log scale, since the responses
  of deep plain nets can exceed the others' many times over.
  """
  rows = [(title, [r for r in records if (r["step"] > 0) == trained])
          for title, trained in (("trained", True), ("initialised", False))]
  rows = [(title, selected) for title, selected in rows if selected]
  styles = _net_styles(records)
  fig, axes = plt.subplots(len(rows), 2, squeeze=False, constrained_layout=True,
                           figsize=(2 * figures.PANEL_SIZE[0], len(rows) * figures.PANEL_SIZE[1]))
  for (title, selected), (raw_ax, sorted_ax) in zip(rows, axes):
    for record in sorted(selected, key=lambda r: (r["family"], r["depth"])):
      stds = [layer["std"] for layer in record["layers"]]
      style = styles[(record["family"], record["depth"])]
      label = f"{record['family']}-{record['depth']}"
      indices = np.arange(1, len(stds) + 1)
      raw_ax.plot(indices, stds, lw=1.0, label=label, **style)
      sorted_ax.plot(indices, responses.sorted_by_magnitude(stds), lw=1.0, label=label, **style)
    raw_ax.set_title(f"{title} nets, layers in network order")
    sorted_ax.set_title(f"{title} nets, layers sorted by std")
    raw_ax.set_ylabel("std of response")
    for ax in (raw_ax, sorted_ax):
      ax.set_yscale("log")
      ax.set_xlabel("layer index")
      ax.grid(alpha=0.3, which="both")
    raw_ax.legend(fontsize=7)
  _save(fig, path)


def plot_gradient_norms(records: Sequence[Record], path: pathlib.Path) -> None:
  """Plot the loss-gradient norm of each weighted layer on a log scale, one panel per net.

  Panels are ordered by family (rows) and depth (columns). Each line is one step, and step 0 is
  the freshly initialised net.
  """
  families = [f for f in report.FAMILIES if any(r["family"] == f for r in records)]
  depths = sorted({r["depth"] for r in records})
  steps = sorted({r["step"] for r in records})
  colormap = plt.get_cmap("viridis")
  colors = {step: colormap(0.85 * rank / max(len(steps) - 1, 1)) for rank, step in enumerate(steps)}
  fig, axes = plt.subplots(
      len(families), len(depths), squeeze=False, constrained_layout=True, sharey=True,
      figsize=(len(depths) * figures.PANEL_SIZE[0], len(families) * figures.PANEL_SIZE[1]))
  for row, family in enumerate(families):
    for column, depth in enumerate(depths):
      ax = axes[row][column]
      for record in records:
        if record["family"] != family or record["depth"] != depth:
          continue
        norms = [layer["norm"] for layer in record["layers"]]
        label = "initialised" if record["step"] == 0 else f"step {record['step']}"
        ax.plot(np.arange(1, len(norms) + 1), norms, lw=1.0, color=colors[record["step"]],
                label=label)
      ax.set_yscale("log")
      ax.set_title(f"{family}-{depth}")
      ax.set_xlabel("layer index")
      ax.grid(alpha=0.3, which="both")
      if ax.has_data():
        ax.legend(fontsize=7)
    axes[row][0].set_ylabel("gradient norm")
  _save(fig, path)


def _newest(records: Sequence[Record]) -> list[Record]:
  """Keep, of each (family, depth), the record of the largest step."""
  newest: dict[tuple[str, int], Record] = {}
  for record in records:
    key = (record["family"], record["depth"])
    if key not in newest or record["step"] > newest[key]["step"]:
      newest[key] = record
  return list(newest.values())


def plot_gradient_correlation(records: Sequence[Record], path: pathlib.Path) -> None:
  """Plot the correlation of input gradients at neighbouring points against depth.

  One line per family for the freshly initialised nets (step 0) and one for the newest
  checkpoint of each net.
  """
  states = {False: [r for r in records if r["step"] == 0],
            True: _newest([r for r in records if r["step"] > 0])}
  fig, ax = plt.subplots(figsize=figures.PANEL_SIZE, constrained_layout=True)
  for family in report.FAMILIES:
    for trained, selected in states.items():
      points = sorted((r["depth"], r["correlation"]) for r in selected
                      if r["family"] == family and r["correlation"] is not None)
      if not points:
        continue
      color = plt.get_cmap(_FAMILY_COLORMAPS[family])(0.85 if trained else 0.5)
      ax.plot(*zip(*points), marker="o" if trained else "s", color=color,
              ls=_FAMILY_LINESTYLES[family],
              label=f"{family}, {'trained' if trained else 'initialised'}")
  ax.set_xlabel("depth (layers)")
  ax.set_ylabel("correlation of neighbouring\ninput gradients")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  _save(fig, path)


# Bars of the identity figure: the record key and its label.
IDENTITY_BARS = (
    ("shallow_train_error", "shallow, trained"),
    ("deepened_train_error", "deepened (identity blocks)"),
    ("deep_train_error", "deep, trained from scratch"),
    ("deepened_trained_train_error", "deepened, then trained"),
)


def plot_identity(records: Sequence[Record], path: pathlib.Path) -> None:
  """Plot, per family, the training errors (%) of the identity construction as grouped bars."""
  bars = [(key, label) for key, label in IDENTITY_BARS
          if any(r.get(key) is not None for r in records)]
  fig, ax = plt.subplots(figsize=figures.PANEL_SIZE, layout="constrained")
  width = 0.8 / max(len(bars), 1)
  colormap = plt.get_cmap("viridis")
  for rank, (key, label) in enumerate(bars):
    offset = (rank - (len(bars) - 1) / 2) * width
    measured = [(index, 100 * r[key]) for index, r in enumerate(records) if r.get(key) is not None]
    drawn = ax.bar([index + offset for index, _ in measured], [error for _, error in measured],
                   width, label=label, color=colormap(0.85 * rank / max(len(bars) - 1, 1)))
    ax.bar_label(drawn, fmt="%.1f", fontsize=6)
  ax.set_xticks(range(len(records)))
  ax.set_xticklabels([f"{r['family']}\n{r['shallow_depth']} -> {r['deep_depth']}" for r in records])
  ax.set_ylabel("training error (%)")
  ax.grid(alpha=0.3, axis="y")
  fig.legend(fontsize=7, loc="outside upper center", ncols=2)
  _save(fig, path)
