"""Sweep reports: the summary table, the figures and the verdict, computed from results.jsonl.

Errors are fractions in [0, 1] in the results and percentages in everything a person reads.
"""

from __future__ import annotations

import collections
import csv
import math
import pathlib
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

FAMILIES = ("plain", "residual")

# A change in training error smaller than this, in percentage points, is reported as no change.
DEFAULT_TOLERANCE_POINTS = 0.5


class Stat(collections.namedtuple("Stat", "mean std count")):
  """Mean and sample standard deviation of one quantity over seeds."""

  def format(self) -> str:
    if self.count == 0 or self.mean is None:
      return "-"
    text = f"{100 * self.mean:.2f}"
    if self.count > 1:
      text += f" ± {100 * self.std:.2f}"
    return text


def _stat(values: Sequence[float]) -> Stat:
  values = [v for v in values if v is not None and math.isfinite(v)]
  if not values:
    return Stat(None, None, 0)
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return Stat(statistics.fmean(values), std, len(values))


def aggregate(results: Iterable[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Stat]]:
  """Group finished, non-diverged runs by (family, depth) and average their errors over seeds."""
  grouped = collections.defaultdict(list)
  for result in results:
    if not result.get("diverged"):
      grouped[(result["family"], int(result["depth"]))].append(result)
  table = {}
  for key, runs in grouped.items():
    table[key] = {
        name: _stat([run.get(name) for run in runs])
        for name in ("train_error", "val_error", "test_error")
    }
  return table


def summary_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
  """Build one row per depth with train and test error (%) of each family."""
  table = aggregate(results)
  depths = sorted({int(r["depth"]) for r in results})
  rows = []
  for depth in depths:
    row = {"depth": str(depth)}
    for family in FAMILIES:
      stats = table.get((family, depth))
      for name in ("train_error", "test_error"):
        row[f"{family}_{name}"] = stats[name].format() if stats else "-"
    rows.append(row)
  return rows


def write_summary_csv(rows: Sequence[dict[str, str]], path: pathlib.Path) -> None:
  fieldnames = ["depth"] + [f"{f}_{n}" for f in FAMILIES for n in ("train_error", "test_error")]
  with path.open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)


def markdown_table(rows: Sequence[dict[str, str]]) -> str:
  """Format the summary rows as a Markdown table with errors in percent."""
  header = "| depth | plain train % | plain test % | residual train % | residual test % |"
  lines = [header, "|---:|---:|---:|---:|---:|"]
  for row in rows:
    cells = [row["depth"]] + [
        row[f"{f}_{n}"] for f in FAMILIES for n in ("train_error", "test_error")
    ]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _points(value: float) -> str:
  return f"{100 * value:.1f}%"


def _with_spread(stat: Stat) -> str:
  text = _points(stat.mean)
  if stat.count > 1:
    text += f" (± {100 * stat.std:.1f}, {stat.count} seeds)"
  return text


def sampling_noise(first: float, second: float, subset_size: int | None) -> float:
  """Return two standard errors of the difference of two error rates measured on n examples.

  Each rate is treated as a binomial proportion over the `subset_size` examples of the fixed
  training subset; None (size unknown) returns 0.
  """
  if not subset_size:
    return 0.0
  variance = (first * (1 - first) + second * (1 - second)) / subset_size
  return 2 * math.sqrt(variance)


def family_verdict(
    family: str,
    train_errors: dict[int, Stat],
    tolerance_points: float = DEFAULT_TOLERANCE_POINTS,
    subset_size: int | None = None,
) -> str:
  """Say whether a family's deepest net trains worse than a shallower one, and by how much.

  A change counts only when it exceeds both `tolerance_points` and the sampling noise of
  the `subset_size`-example training subset on which the errors were measured.
  """
  depths = sorted(d for d, s in train_errors.items() if s.count)
  if len(depths) < 2:
    return f"{family}: fewer than two depths finished, nothing to compare"
  shallowest, deepest = depths[0], depths[-1]
  best = min(depths, key=lambda d: train_errors[d].mean)
  deepest_error = train_errors[deepest]
  tolerance = max(tolerance_points / 100,
                  sampling_noise(train_errors[best].mean, deepest_error.mean, subset_size))
  if deepest_error.mean > train_errors[best].mean + tolerance:
    change = 100 * (deepest_error.mean - train_errors[best].mean)
    return (
        f"{family}: degrades beyond depth {best}, train error "
        f"{_with_spread(train_errors[best])} -> {_with_spread(deepest_error)} at {deepest} "
        f"(+{change:.1f} points)"
    )
  first = train_errors[shallowest]
  change = 100 * (deepest_error.mean - first.mean)
  if change < -100 * tolerance:
    return (
        f"{family}: no degradation, train error {_with_spread(first)} at {shallowest} -> "
        f"{_with_spread(deepest_error)} at {deepest} (depth {deepest} trains {-change:.1f} "
        f"points better than depth {shallowest})"
    )
  return (
      f"{family}: no clear change with depth, train error {_with_spread(first)} at "
      f"{shallowest} -> {_with_spread(deepest_error)} at {deepest} (differences below "
      f"{100 * tolerance:.1f} points, the sampling noise or tolerance)"
  )


def comparison_verdict(
    table: dict[tuple[str, int], dict[str, Stat]], subset_size: int | None = None
) -> str | None:
  """Compare residual with plain at the deepest depth both families finished."""
  common = sorted(
      d for (f, d) in table if f == "plain" and table.get(("residual", d)) is not None
  )
  if not common:
    return None
  depth = common[-1]
  plain = table[("plain", depth)]["train_error"]
  residual = table[("residual", depth)]["train_error"]
  if not (plain.count and residual.count):
    return None
  gap = 100 * (plain.mean - residual.mean)
  if gap >= 0:
    relation = f"residual trains {gap:.1f} points better than plain"
  else:
    relation = f"residual trains {-gap:.1f} points worse than plain"
  text = f"at depth {depth}: {relation} ({_points(residual.mean)} vs {_points(plain.mean)})"
  noise = 100 * sampling_noise(plain.mean, residual.mean, subset_size)
  if abs(gap) < noise:
    text += f", within the sampling noise of {noise:.1f} points"
  return text


def _train_examples(result: dict[str, Any]) -> int | None:
  """Return how many examples a result's `train_error` was measured on, None if unknown."""
  if result.get("train_examples"):
    return int(result["train_examples"])
  return result.get("config", {}).get("train_eval_size")


def verdict(
    results: Sequence[dict[str, Any]],
    deviations: Sequence[str] = (),
    tolerance_points: float = DEFAULT_TOLERANCE_POINTS,
) -> list[str]:
  """Build the verdict lines: one per family, the cross-family comparison, divergences, deviations."""
  table = aggregate(results)
  sizes = [size for size in map(_train_examples, results) if size]
  subset_size = min(sizes) if sizes else None
  lines = []
  for family in FAMILIES:
    train_errors = {d: s["train_error"] for (f, d), s in table.items() if f == family}
    if train_errors:
      lines.append(family_verdict(family, train_errors, tolerance_points, subset_size))
  comparison = comparison_verdict(table, subset_size)
  if comparison:
    lines.append(comparison)
  for result in results:
    if result.get("diverged"):
      lines.append(
          f"{result['family']}-{result['depth']} (seed {result['seed']}) diverged at step "
          f"{result.get('diverged_step')} and is left out of the numbers above"
      )
  if deviations:
    lines.append("differences from the 2015 CIFAR-10 recipe: " + "; ".join(deviations))
  return lines
