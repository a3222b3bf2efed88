"""The depth sweep: train every (seed, depth, family) run of a config, then report.

Workdir layout:
  results.jsonl          one line per finished run; a run with a line is not trained again
  runs/<family>-<depth>-seed<seed>/   checkpoints, history.jsonl and TensorBoard events of one run
  summary.csv, summary.md, verdict.txt, training_curves.png, error_vs_depth.png
"""

from __future__ import annotations

import hashlib
import json
import logging
import pathlib
from collections.abc import Sequence
from typing import Any

import ml_collections

from resflax import jsonl
from resflax import report
from resflax import validation

RESULTS_FILE = "results.jsonl"
CURVES_FIGURE = "training_curves.png"
DEPTH_FIGURE = "error_vs_depth.png"

# Keys compared with the 2015 CIFAR-10 recipe when the verdict lists deviations from it.
RECIPE_KEYS = (
    "dataset", "validation_size", "width", "shortcut", "preactivation", "zero_init_residual", "batch_size",
    "num_steps", "learning_rate", "lr_boundaries", "lr_decay_factor", "momentum", "nesterov",
    "weight_decay", "weight_decay_on", "warmup_steps", "warmup_learning_rate", "warmup_min_depth",
    "normalize_std", "augment_pad", "augment_flip", "dtype",
)


def run_name(family: str, depth: int, seed: int) -> str:
  return f"{family}-{depth}-seed{seed}"


def run_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """Expand the sweep keys into one config per run: seed, then depth, then family order."""
  runs = []
  for seed in config.seeds:
    for depth in config.depths:
      for family in config.families:
        run = ml_collections.ConfigDict(config.to_dict())
        run.family, run.depth, run.seed = family, int(depth), int(seed)
        runs.append(run)
  return runs


def _result_determining_values(config: ml_collections.ConfigDict) -> dict[str, Any]:
  from resflax.training import checkpoint  # pylint: disable=g-import-not-at-top

  values = checkpoint.config_fingerprint(config)
  values["num_steps"] = config.num_steps
  return values


def fingerprint(config: ml_collections.ConfigDict) -> str:
  """Hash the config values that determine a run's final result, to catch stale results.

  These are the values a checkpoint must share with the run that resumes it, plus the run's
  length, which a checkpoint may extend but a finished result may not.
  """
  text = json.dumps(_result_determining_values(config), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def recipe_deviations(
    config: ml_collections.ConfigDict, recipe: ml_collections.ConfigDict
) -> list[str]:
  """List every result-relevant key whose value differs from the 2015 recipe's."""
  deviations = []
  for key in RECIPE_KEYS:
    value, paper = config.get(key), recipe.get(key)
    if isinstance(value, (list, tuple)) or isinstance(paper, (list, tuple)):
      value, paper = tuple(value or ()), tuple(paper or ())
    if value != paper:
      paper = "dataset default" if paper is None else paper
      deviations.append(f"{key} {value} (paper {paper})")
  return deviations


def _check_results_match(
    existing: dict[tuple[str, int, int], dict[str, Any]],
    runs: Sequence[ml_collections.ConfigDict],
    workdir: pathlib.Path,
) -> None:
  from resflax.training import checkpoint  # pylint: disable=g-import-not-at-top

  for run in runs:
    record = existing.get((run.family, run.depth, run.seed))
    if not record or record.get("fingerprint") == fingerprint(run):
      continue
    # Compared key by key, a missing key reading as None, so that keys added to the config
    # since the line was written (None by default) do not make it stale.
    saved = {key: value for key, value in record.get("config", {}).items()
             if key not in checkpoint.RESUMABLE_KEYS}
    saved["num_steps"] = record.get("config", {}).get("num_steps")
    current = json.loads(json.dumps(_result_determining_values(run), default=str))
    changed = [f"{key}: {saved.get(key)!r} there, {current.get(key)!r} now"
               for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key)]
    if changed or not record.get("config"):
      raise validation.ConfigError(
          f"{workdir / RESULTS_FILE} contains {run_name(run.family, run.depth, run.seed)} from a "
          f"different config ({'; '.join(changed) or 'see its config field'}); use another "
          "--workdir, or delete that line and the run's folder under runs/ to train it again"
      )


def train_runs(
    config: ml_collections.ConfigDict, workdir: pathlib.Path, is_writer: bool = True
) -> list[dict[str, Any]]:
  """Train every run that has no line in results.jsonl yet and return all results."""
  from resflax import data  # pylint: disable=g-import-not-at-top
  from resflax import training  # pylint: disable=g-import-not-at-top

  results_path = workdir / RESULTS_FILE
  runs = run_configs(config)
  existing = {(r["family"], int(r["depth"]), int(r["seed"])): r
              for r in jsonl.read_jsonl(results_path)}
  _check_results_match(existing, runs, workdir)
  pending = [r for r in runs if (r.family, r.depth, r.seed) not in existing]
  logging.info("sweep %s: %d runs, %d already finished in %s", config.name, len(runs),
               len(runs) - len(pending), results_path)
  if not pending:
    return _ordered_results(existing, runs)

  dataset = data.load_from_config(config)
  validation_split = getattr(dataset, "validation", None)
  logging.info("dataset %s from %s: %d train, %d validation, %d test examples", dataset.name,
               dataset.source, len(dataset.train),
               0 if validation_split is None else len(validation_split), len(dataset.test))

  for index, run in enumerate(pending, start=1):
    name = run_name(run.family, run.depth, run.seed)
    logging.info("run %d/%d %s started", index, len(pending), name)
    # train_and_evaluate logs the run's end, or its divergence, with its errors.
    result = training.train_and_evaluate(run, dataset, workdir / "runs" / name)
    result.update(run_dir=f"runs/{name}", fingerprint=fingerprint(run), config=run.to_dict())
    if result.get("diverged"):
      logging.warning("the sweep continues after %s diverged", name)
    if is_writer:
      jsonl.append_jsonl(results_path, result)
    existing[(run.family, run.depth, run.seed)] = result
  return _ordered_results(existing, runs)


def _ordered_results(existing, runs) -> list[dict[str, Any]]:
  return [existing[(r.family, r.depth, r.seed)] for r in runs
          if (r.family, r.depth, r.seed) in existing]


def load_curves(
    workdir: pathlib.Path, results: Sequence[dict[str, Any]]
) -> dict[tuple[str, int, int], list[dict[str, Any]]]:
  """Read the evaluation records of every run's history.jsonl."""
  curves = {}
  for result in results:
    history = jsonl.read_jsonl(workdir / result["run_dir"] / "history.jsonl")
    evaluations = [r for r in history if r.get("train_error") is not None]
    curves[(result["family"], int(result["depth"]), int(result["seed"]))] = evaluations
  return curves


def write_report(
    config: ml_collections.ConfigDict,
    recipe: ml_collections.ConfigDict,
    workdir: pathlib.Path,
    results: Sequence[dict[str, Any]],
) -> tuple[str, list[str]]:
  """Write the summary table, the figures and the verdict; return the table and verdict lines."""
  from resflax import figures  # pylint: disable=g-import-not-at-top

  rows = report.summary_rows(results)
  table = report.markdown_table(rows)
  report.write_summary_csv(rows, workdir / "summary.csv")
  (workdir / "summary.md").write_text(table + "\n")
  figures.plot_training_curves(load_curves(workdir, results), workdir / CURVES_FIGURE)
  figures.plot_error_vs_depth(results, workdir / DEPTH_FIGURE)
  lines = report.verdict(results, recipe_deviations(config, recipe))
  (workdir / "verdict.txt").write_text("\n".join(lines) + "\n")
  return table, lines
