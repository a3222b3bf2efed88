"""The three analyses of a sweep's runs, from loaded checkpoints to JSON records and figures.

Every record names its net by `family`, `depth` and `seed`, and its state by `step`: the
checkpoint's step, or 0 for the freshly initialised net of the run's seed.
"""

import dataclasses
import json
import logging
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from resflax.analysis import deepening
from resflax.analysis import gradients
from resflax.analysis import identity
from resflax.analysis import plots
from resflax.analysis import responses
from resflax.analysis import runs as sweep_runs
from resflax.analysis.inputs import Inputs
from resflax.analysis.loaded import LoadedRuns
from resflax.analysis.runs import AnalysisError
from resflax.analysis.runs import SweepRun

Record = dict[str, Any]

ANALYSES = ("responses", "gradients", "identity")
OUTPUT_DIR = "analysis"
RESPONSES_FILE = "layer_responses"
GRADIENT_NORMS_FILE = "gradient_norms"
GRADIENT_CORRELATION_FILE = "gradient_correlation"
IDENTITY_FILE = "identity"
DEEPENED_DIR = "deepened"

# The deepened net's logits must equal the shallow net's within this fraction of the largest
# logit: an estimate of the float32 rounding (about 6e-8 per operation) that a few hundred
# layers accumulate.
LOGIT_TOLERANCE = 1e-5


@dataclasses.dataclass(frozen=True)
class Settings:
  """Options of the analyses.

  Attributes:
    gradient_steps: checkpoint steps at which gradients are measured, besides step 0. None
      measures at every checkpoint a run kept.
    num_lines: lines of inputs, each between two test images, for the gradient correlation.
    line_points: inputs per line, evenly spaced.
    train_deepened: train each deepened net with the deep run's recipe (a full run's cost).
  """

  gradient_steps: tuple[int, ...] | None = None
  num_lines: int = 4
  line_points: int = 32
  train_deepened: bool = False

  def __post_init__(self) -> None:
    if self.num_lines < 1:
      raise AnalysisError(f"invalid num_lines {self.num_lines}: expected at least 1 line.")
    if self.line_points < 2:
      raise AnalysisError(f"invalid line_points {self.line_points}: a line needs at least 2 "
                          "points.")


def _net_record(run: SweepRun, step: int) -> Record:
  return {"family": run.family, "depth": run.depth, "seed": run.seed, "step": step}


def analyse_responses(runs: Sequence[SweepRun], inputs: Inputs,
                      loaded: LoadedRuns) -> list[Record]:
  """Measure layer and residual response stds on the test batch: newest checkpoint and step 0."""
  records = []
  for run in runs:
    model = loaded.model(run)
    step, trained = loaded.checkpoint(run)
    for state_step, variables in ((step, trained), (0, loaded.initial(run))):
      stds = responses.response_stds(model, variables, inputs.test_images)
      records.append({
          **_net_record(run, state_step),
          "layers": [{"path": path, "std": std} for path, std in stds["layers"]],
          "residuals": [{"path": path, "std": std} for path, std in stds["residuals"]],
      })
  return records


def _gradient_states(run: SweepRun, loaded: LoadedRuns,
                     steps: Sequence[int] | None) -> list[tuple[int, dict[str, Any]]]:
  steps = sweep_runs.checkpoint_steps(run) if steps is None else steps
  return [(0, loaded.initial(run))] + [loaded.checkpoint(run, step) for step in steps]


def _line_ends(inputs: Inputs, num_lines: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Return (starts, ends, classes) of lines between consecutive pairs of test images."""
  num_lines = min(num_lines, len(inputs.test_images) // 2)
  starts = inputs.test_images[0:2 * num_lines:2]
  ends = inputs.test_images[1:2 * num_lines:2]
  return starts, ends, inputs.test_labels[0:2 * num_lines:2]


def analyse_gradients(runs: Sequence[SweepRun], inputs: Inputs, loaded: LoadedRuns,
                      settings: Settings) -> tuple[list[Record], list[Record]]:
  """Measure per-layer loss-gradient norms on the training batch and the neighbour correlation
  of input gradients along lines of test inputs, at step 0 and at the chosen checkpoints.

  Returns (norm records, correlation records).
  """
  starts, ends, classes = _line_ends(inputs, settings.num_lines)
  norm_records, correlation_records = [], []
  for run in runs:
    model = loaded.model(run)
    for step, variables in _gradient_states(run, loaded, settings.gradient_steps):
      norms = gradients.layer_gradient_norms(model, variables, inputs.train_images,
                                             inputs.train_labels)
      norm_records.append({**_net_record(run, step),
                           "layers": [{"path": path, "norm": norm} for path, norm in norms]})
      correlation = gradients.gradient_correlation(model, variables, starts, ends, classes,
                                                   settings.line_points)
      correlation_records.append({**_net_record(run, step), "correlation": correlation})
  return norm_records, correlation_records


def _identity_pair(family_runs: Sequence[SweepRun]) -> tuple[SweepRun, SweepRun] | str:
  """Return the (shallowest, deepest) run of one family, or the reason there is no such pair."""
  ordered = sorted(family_runs, key=lambda run: run.depth)
  shallow, deep = ordered[0], ordered[-1]
  if shallow.depth == deep.depth:
    return f"{shallow.family}: one depth only ({shallow.depth}), nothing to deepen"
  if shallow.result.get("diverged"):
    return f"{shallow.family}: {shallow.name} diverged, nothing to deepen"
  try:
    deepening.check_deepenable(shallow.config, deep.config)
  except ValueError as error:
    return f"{shallow.family}: {error}"
  return shallow, deep


def _deepened_run_dir(workdir: pathlib.Path, shallow: SweepRun, deep: SweepRun) -> pathlib.Path:
  name = f"{shallow.family}-{shallow.depth}-to-{deep.depth}-seed{shallow.seed}"
  return workdir / OUTPUT_DIR / DEEPENED_DIR / name


def compare_identity(shallow: SweepRun, deep: SweepRun, inputs: Inputs,
                     loaded: LoadedRuns) -> tuple[Record, dict[str, Any]]:
  """Deepen the newest checkpoint of `shallow` to the net of `deep` and measure both.

  Returns the record (logit check, training errors on the fixed training subset and the errors
  results.jsonl lists) and the deepened variables.
  """
  step, variables = loaded.checkpoint(shallow)
  deepened = deepening.deepen(variables, shallow.config, deep.config)
  shallow_model, deep_model = loaded.model(shallow), loaded.model(deep)
  difference, largest = identity.max_logit_difference(
      shallow_model, variables, deep_model, deepened, inputs.test_images)

  dataset = inputs.dataset
  subset = identity.training_subset(dataset, shallow.config)
  batch_size = shallow.config.eval_batch_size
  shallow_error = identity.error_rate(shallow_model, variables, subset, dataset.mean,
                                      dataset.std, batch_size)
  deepened_error = identity.error_rate(deep_model, deepened, subset, dataset.mean, dataset.std,
                                       batch_size)
  record = {
      "family": shallow.family, "seed": shallow.seed, "shallow_depth": shallow.depth,
      "deep_depth": deep.depth, "shallow_step": step,
      "max_logit_difference": difference, "max_abs_logit": largest,
      "logits_match": difference <= LOGIT_TOLERANCE * max(largest, 1.0),
      "shallow_train_error": shallow_error,
      "deepened_train_error": deepened_error,
      "shallow_train_error_recorded": shallow.result.get("train_error"),
      "deep_train_error": deep.result.get("train_error"),
      "deepened_trained_train_error": None,
  }
  return record, deepened


def analyse_identity(runs: Sequence[SweepRun], inputs: Inputs, loaded: LoadedRuns,
                     settings: Settings, workdir: pathlib.Path) -> tuple[list[Record], list[str]]:
  """Deepen each family's shallowest run to the family's deepest depth and compare them.

  With `settings.train_deepened`, also train each deepened net with the deep run's recipe in
  `<workdir>/analysis/deepened/`. Returns (records, notes): one record per family (see
  `compare_identity`), and a note per family that has no pair to compare.
  """
  records, notes = [], []
  for family in sorted({run.family for run in runs}):
    pair = _identity_pair([run for run in runs if run.family == family])
    if isinstance(pair, str):
      notes.append(pair)
      continue
    shallow, deep = pair
    record, deepened = compare_identity(shallow, deep, inputs, loaded)
    if settings.train_deepened:
      run_dir = _deepened_run_dir(workdir, shallow, deep)
      logging.info("Training the deepened %s-%d in %s.", family, deep.depth, run_dir)
      result = identity.train_deepened(deepened, deep.config, inputs.dataset, run_dir)
      record["deepened_trained_train_error"] = result["train_error"]
    records.append(record)
  return records, notes


def write_json(path: pathlib.Path, payload: Any) -> None:
  """Write `payload` as indented JSON."""
  path.write_text(json.dumps(payload, indent=1) + "\n")


def _batch_description(inputs: Inputs) -> dict[str, Any]:
  return {"test_images": len(inputs.test_images), "train_images": len(inputs.train_images),
          "dataset": inputs.dataset.name}


def write_outputs(output_dir: pathlib.Path, inputs: Inputs,
                  results: dict[str, Any]) -> list[pathlib.Path]:
  """Write the JSON files and figures of the analyses in `results` and return their paths."""
  output_dir.mkdir(parents=True, exist_ok=True)
  batch = _batch_description(inputs)
  outputs = []
  figures = {
      RESPONSES_FILE: plots.plot_layer_responses,
      GRADIENT_NORMS_FILE: plots.plot_gradient_norms,
      GRADIENT_CORRELATION_FILE: plots.plot_gradient_correlation,
      IDENTITY_FILE: plots.plot_identity,
  }
  for name, plot in figures.items():
    if name not in results:
      continue
    records = results[name]
    write_json(output_dir / f"{name}.json", {"batch": batch, "records": records})
    outputs.append(output_dir / f"{name}.json")
    if records:
      plot(records, output_dir / f"{name}.png")
      outputs.append(output_dir / f"{name}.png")
  return outputs
