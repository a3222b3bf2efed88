"""All analyses of one sweep workdir: pick the runs of one seed, load the data once, run the
chosen analyses and write their JSON files and figures to `<workdir>/analysis/`."""

import dataclasses
import logging
import pathlib
from collections.abc import Sequence
from typing import Any

from resflax.analysis import pipeline
from resflax.analysis.inputs import load_inputs
from resflax.analysis.loaded import LoadedRuns
from resflax.analysis.runs import AnalysisError
from resflax.analysis.runs import SweepRun
from resflax.analysis.runs import read_sweep


@dataclasses.dataclass(frozen=True)
class AnalysisReport:
  """Results and output files of `analyse_workdir`.

  Attributes:
    results: records per output name (`pipeline.RESPONSES_FILE`, ...), for the analyses run.
    notes: reasons for parts that were skipped.
    outputs: the files written.
  """

  results: dict[str, list[dict[str, Any]]]
  notes: list[str]
  outputs: list[pathlib.Path]

  def identity_mismatches(self) -> list[str]:
    """Return the families whose deepened net's logits differ from the shallow net's."""
    records = self.results.get(pipeline.IDENTITY_FILE, [])
    return [record["family"] for record in records if not record["logits_match"]]


def select_seed(runs: Sequence[SweepRun], seed: int | None) -> list[SweepRun]:
  """Return the runs of `seed` (by default the smallest seed). Raise AnalysisError if none."""
  seeds = sorted({run.seed for run in runs})
  seed = seeds[0] if seed is None else seed
  selected = [run for run in runs if run.seed == seed]
  if not selected:
    raise AnalysisError(f"no run of seed {seed} in the sweep. Its seeds are "
                        f"{', '.join(map(str, seeds))}.")
  return selected


def check_analyses(analyses: Sequence[str]) -> None:
  """Raise AnalysisError for an empty list or a name not in `pipeline.ANALYSES`."""
  unknown = sorted(set(analyses) - set(pipeline.ANALYSES))
  if unknown or not analyses:
    raise AnalysisError(f"invalid analyses {', '.join(unknown) or '(none)'}: choose from "
                        f"{', '.join(pipeline.ANALYSES)}.")


def analyse_workdir(workdir: str | pathlib.Path,
                    analyses: Sequence[str] = pipeline.ANALYSES,
                    batch_size: int = 128,
                    seed: int | None = None,
                    settings: pipeline.Settings = pipeline.Settings()) -> AnalysisReport:
  """Run `analyses` on the runs of `seed` in a sweep workdir and write their outputs.

  `batch_size` is the size of the fixed test batch (layer responses, logit check, input lines)
  and of the fixed training batch (gradient norms). Raises AnalysisError for unusable input
  (no results.jsonl, missing checkpoints, unknown analyses) and data.DataUnavailableError when
  the sweep's data cannot be read.
  """
  workdir = pathlib.Path(workdir)
  check_analyses(analyses)
  runs = select_seed(read_sweep(workdir), seed)
  logging.info("Analysing %d runs of seed %d in %s: %s.", len(runs), runs[0].seed, workdir,
               ", ".join(analyses))
  inputs = load_inputs(runs, batch_size)
  loaded = LoadedRuns(inputs)
  results, notes = {}, []
  if "responses" in analyses:
    results[pipeline.RESPONSES_FILE] = pipeline.analyse_responses(runs, inputs, loaded)
  if "gradients" in analyses:
    norms, correlations = pipeline.analyse_gradients(runs, inputs, loaded, settings)
    results[pipeline.GRADIENT_NORMS_FILE] = norms
    results[pipeline.GRADIENT_CORRELATION_FILE] = correlations
  if "identity" in analyses:
    records, identity_notes = pipeline.analyse_identity(runs, inputs, loaded, settings, workdir)
    results[pipeline.IDENTITY_FILE] = records
    notes.extend(identity_notes)
  outputs = pipeline.write_outputs(workdir / pipeline.OUTPUT_DIR, inputs, results)
  return AnalysisReport(results, notes, outputs)
