"""Runs of a finished sweep: the lines of its results.jsonl and read-only access to checkpoints.

The sweep writes each run's checkpoints to `runs/<family>-<depth>-seed<seed>/checkpoints/<step>/`
with the items `state` (the TrainState as a nested dict) and `meta` (JSON with the config
fingerprint). Nothing here writes into a run's folder.
"""

import dataclasses
import pathlib
from typing import Any

import ml_collections
import orbax.checkpoint as ocp

from resflax import jsonl
from resflax import models
from resflax import sweep
from resflax.training import checkpoint
from resflax.training import loop

# Keys that every results.jsonl line written by the sweep has and the analyses read.
REQUIRED_KEYS = ("family", "depth", "seed", "run_dir", "config")


class AnalysisError(Exception):
  """Input that the analyses cannot use, such as a missing sweep, run or checkpoint. The message
  names the fix."""


@dataclasses.dataclass(frozen=True)
class SweepRun:
  """One line of results.jsonl.

  Attributes:
    family: "plain" or "residual".
    depth: weighted layers.
    seed: the run's seed.
    run_dir: the run's folder, absolute.
    config: the run's full config.
    result: the whole line, with `train_error`, `test_error`, `diverged`, ...
  """

  family: str
  depth: int
  seed: int
  run_dir: pathlib.Path
  config: ml_collections.ConfigDict
  result: dict[str, Any]

  @property
  def name(self) -> str:
    return sweep.run_name(self.family, self.depth, self.seed)

  @property
  def checkpoint_dir(self) -> pathlib.Path:
    return self.run_dir / loop.CHECKPOINT_DIR


def _parse_run(workdir: pathlib.Path, record: dict[str, Any], number: int) -> SweepRun:
  missing = [key for key in REQUIRED_KEYS if key not in record]
  if missing:
    raise AnalysisError(
        f"line {number} of {workdir / sweep.RESULTS_FILE} lacks {', '.join(missing)}, so "
        "it was not written by `python train.py`. Delete that line and rerun train.py to redo "
        "the run.")
  return SweepRun(
      family=record["family"],
      depth=int(record["depth"]),
      seed=int(record["seed"]),
      run_dir=(workdir / record["run_dir"]).resolve(),
      config=ml_collections.ConfigDict(record["config"]),
      result=record,
  )


def read_sweep(workdir: str | pathlib.Path) -> list[SweepRun]:
  """Read the runs listed in `<workdir>/results.jsonl`, ordered by seed, family and depth.

  Raises AnalysisError when the file is missing, empty, invalid or lacks the keys the
  analyses need.
  """
  workdir = pathlib.Path(workdir)
  path = workdir / sweep.RESULTS_FILE
  if not path.is_file():
    raise AnalysisError(
        f"{path} not found: {workdir} contains no finished sweep. Run "
        f"`python train.py --workdir {workdir}` first.")
  try:
    records = jsonl.read_jsonl(path)
  except ValueError as error:
    raise AnalysisError(str(error)) from None
  if not records:
    raise AnalysisError(
        f"{path} lists no finished run. Let `python train.py --workdir {workdir}` finish first.")
  runs = [_parse_run(workdir, record, number) for number, record in enumerate(records, start=1)]
  return sorted(runs, key=lambda run: (run.seed, run.family, run.depth))


def checkpoint_steps(run: SweepRun) -> list[int]:
  """Return the steps of the finished checkpoints of `run`, in increasing order.

  Raises AnalysisError when the run has none.
  """
  directory = run.checkpoint_dir
  steps = sorted(ocp.path.step.checkpoint_steps(directory)) if directory.is_dir() else []
  if not steps:
    raise AnalysisError(
        f"run {run.name} has no checkpoint in {directory}. Delete its line from "
        f"results.jsonl and rerun `python train.py` with the same --workdir to train it again.")
  return steps


def _check_fingerprint(run: SweepRun, meta: Any, path: pathlib.Path) -> None:
  saved = meta.get("config") if isinstance(meta, dict) else None
  if saved is None:
    raise AnalysisError(f"checkpoint {path} has no run metadata, so resflax did not write it.")
  expected = checkpoint.config_fingerprint(run.config)
  keys = set(saved) | set(expected)
  differing = sorted(key for key in keys if saved.get(key) != expected.get(key))
  if differing:
    raise AnalysisError(
        f"checkpoint {path} was written with a different config than results.jsonl lists for "
        f"run {run.name} (keys {', '.join(differing)}). Analyse a workdir whose runs and "
        "checkpoints come from one sweep.")


def load_variables(run: SweepRun, step: int | None = None) -> tuple[int, dict[str, Any]]:
  """Read the `params` and `batch_stats` of a checkpoint of `run`, by default the newest.

  Returns (step, variables) with the blocks unrolled (`block1` .. `blockN`), whichever layout
  the run was trained in. Raises AnalysisError when the checkpoint is missing, unreadable or
  from another config.
  """
  steps = checkpoint_steps(run)
  step = steps[-1] if step is None else step
  if step not in steps:
    raise AnalysisError(
        f"run {run.name} has no checkpoint of step {step}. Its checkpoints are of steps "
        f"{', '.join(map(str, steps))}.")
  path = run.checkpoint_dir / str(step)
  try:
    state = ocp.StandardCheckpointer().restore(path / checkpoint.STATE_ITEM)
    meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path / checkpoint.META_ITEM)
  # orbax and tensorstore raise many exception types for missing or damaged files.
  except Exception as error:  # pylint: disable=broad-exception-caught
    raise AnalysisError(
        f"checkpoint {path} is unreadable ({type(error).__name__}: {error}).") from error
  _check_fingerprint(run, meta, path)
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
  return step, models.unstack_blocks(variables)
