"""The printed summary of the analyses: a few lines per analysis, errors in percent."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from resflax.analysis import pipeline

Record = dict[str, Any]


def _by_net(records: Sequence[Record]) -> dict[tuple[str, int], list[Record]]:
  grouped: dict[tuple[str, int], list[Record]] = {}
  for record in sorted(records, key=lambda r: (r["family"], r["depth"], r["step"])):
    grouped.setdefault((record["family"], record["depth"]), []).append(record)
  return grouped


def _state(step: int) -> str:
  return "initialised" if step == 0 else f"step {step}"


def _mean_std_text(layers: list[dict[str, Any]]) -> str:
  return f"{np.mean([layer['std'] for layer in layers]):.3f}" if layers else "-"


def response_lines(records: Sequence[Record]) -> list[str]:
  """Summarise each net's mean response std over its layers and over its residual branches."""
  lines = ["Layer responses (std on the test batch, evaluation mode), mean over layers / over "
           "residual branches:"]
  for (family, depth), net_records in _by_net(records).items():
    parts = [f"{_state(r['step'])} {_mean_std_text(r['layers'])} / {_mean_std_text(r['residuals'])}"
             for r in reversed(net_records)]
    lines.append(f"  {family}-{depth}: " + "; ".join(parts))
  return lines


def gradient_lines(norm_records: Sequence[Record],
                   correlation_records: Sequence[Record]) -> list[str]:
  """Summarise the stem and head gradient norms and the input-gradient correlation per state."""
  lines = ["Gradient norms of the stem conv and the head on the training batch, and the "
           "correlation of input gradients at neighbouring points:"]
  correlations = {(r["family"], r["depth"], r["step"]): r["correlation"]
                  for r in correlation_records}
  for (family, depth), net_records in _by_net(norm_records).items():
    parts = []
    for record in net_records:
      stem, head = record["layers"][0]["norm"], record["layers"][-1]["norm"]
      correlation = correlations.get((family, depth, record["step"]))
      correlation_text = "-" if correlation is None else f"{correlation:.3f}"
      parts.append(f"{_state(record['step'])}: stem {stem:.2e}, head {head:.2e}, "
                   f"correlation {correlation_text}")
    lines.append(f"  {family}-{depth}: " + "; ".join(parts))
  return lines


def _percent(value: float | None) -> str:
  return "-" if value is None else f"{100 * value:.2f}"


def identity_lines(records: Sequence[Record], notes: Sequence[str]) -> list[str]:
  """Tabulate the identity construction: training errors (%) and the logit check."""
  lines = [
      "Identity construction, training error (%) on the fixed training subset:",
      "| family | depths | shallow, trained | deepened | deep from scratch "
      "| deepened, then trained | max logit difference |",
      "|---|---:|---:|---:|---:|---:|---:|",
  ]
  for r in records:
    check = "" if r["logits_match"] else " MISMATCH"
    lines.append(
        f"| {r['family']} | {r['shallow_depth']} -> {r['deep_depth']} "
        f"| {_percent(r['shallow_train_error'])} | {_percent(r['deepened_train_error'])} "
        f"| {_percent(r['deep_train_error'])} | {_percent(r['deepened_trained_train_error'])} "
        f"| {r['max_logit_difference']:.1e} of {r['max_abs_logit']:.1f}{check} |")
    recorded = r["shallow_train_error_recorded"]
    if recorded is not None and abs(recorded - r["shallow_train_error"]) > 1e-9:
      lines.append(f"  {r['family']}-{r['shallow_depth']}: results.jsonl lists a training error "
                   f"of {_percent(recorded)}, not the {_percent(r['shallow_train_error'])} "
                   "measured here on its newest checkpoint.")
  lines.extend(f"  {note}" for note in notes)
  return lines


def summary_lines(results: dict[str, list[Record]], notes: Sequence[str]) -> list[str]:
  """Return the summary of every analysis in `results`."""
  lines = []
  if pipeline.RESPONSES_FILE in results:
    lines += response_lines(results[pipeline.RESPONSES_FILE]) + [""]
  if pipeline.GRADIENT_NORMS_FILE in results:
    lines += gradient_lines(results[pipeline.GRADIENT_NORMS_FILE],
                            results[pipeline.GRADIENT_CORRELATION_FILE]) + [""]
  if pipeline.IDENTITY_FILE in results:
    lines += identity_lines(results[pipeline.IDENTITY_FILE], notes) + [""]
  return lines
