"""Analyse a finished sweep: layer responses, gradient flow and the identity construction.

  python -m resflax.analyze --workdir runs/quick
  python -m resflax.analyze --workdir runs/quick --analyses identity --train_deepened

Reads `<workdir>/results.jsonl` and the runs' checkpoints without changing them, and writes
JSON files and figures to `<workdir>/analysis/`.
"""

import logging
import sys

from absl import app
from absl import flags

from resflax import analysis
from resflax import cli
from resflax import data
from resflax import training

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a sweep finished by train.py.",
                               required=True)
_ANALYSES = flags.DEFINE_list("analyses", list(analysis.ANALYSES),
                              "Analyses to run, comma-separated: responses, gradients, identity.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 128,
    "Images in the fixed test batch (responses, logit check, input-gradient lines) and in the "
    "fixed training batch (gradient norms).")
_SEED = flags.DEFINE_integer("seed", None, "Seed whose runs are analysed (default: the smallest).")
_GRADIENT_STEPS = flags.DEFINE_list(
    "gradient_steps", None,
    "Checkpoint steps at which gradients are measured, besides the initialisation "
    "(default: every checkpoint a run kept).")
_NUM_LINES = flags.DEFINE_integer(
    "num_lines", 4, "Lines between pairs of test images along which input gradients are compared.")
_LINE_POINTS = flags.DEFINE_integer("line_points", 32, "Inputs per line, evenly spaced.")
_TRAIN_DEEPENED = flags.DEFINE_bool(
    "train_deepened", False,
    "Also train each deepened net with the deep run's recipe, in <workdir>/analysis/deepened/ "
    "(as long as one run of the sweep).")


def _gradient_steps() -> tuple[int, ...] | None:
  if _GRADIENT_STEPS.value is None:
    return None
  try:
    return tuple(int(step) for step in _GRADIENT_STEPS.value)
  except ValueError:
    raise analysis.AnalysisError(
        f"invalid --gradient_steps {','.join(_GRADIENT_STEPS.value)}: expected comma-separated "
        "step numbers, e.g. 200,400.") from None


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  cli.quiet_library_logs()
  try:
    settings = analysis.Settings(gradient_steps=_gradient_steps(), num_lines=_NUM_LINES.value,
                                 line_points=_LINE_POINTS.value,
                                 train_deepened=_TRAIN_DEEPENED.value)
    report = analysis.analyse_workdir(_WORKDIR.value, _ANALYSES.value, _BATCH_SIZE.value,
                                      _SEED.value, settings)
  except (analysis.AnalysisError, data.DataUnavailableError, training.CheckpointError) as error:
    logging.error("%s", error)
    return cli.EXIT_BAD_INPUT

  print("\n".join(analysis.summary_lines(report.results, report.notes)))
  if report.outputs:
    print(f"Written to {report.outputs[0].parent}: "
          + ", ".join(path.name for path in report.outputs))
  sys.stdout.flush()
  mismatches = report.identity_mismatches()
  if mismatches:
    logging.error("The deepened %s nets do not compute what their shallow nets compute: their "
                  "logits differ by more than float32 rounding.", " and ".join(mismatches))
    return 1
  return 0


if __name__ == "__main__":
  app.run(main)
