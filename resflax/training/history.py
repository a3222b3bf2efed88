"""Per-run metric history: JSON lines for the sweep and TensorBoard event files for people."""

import json
import logging
import os
import pathlib
from typing import Any

import tensorboardX

from resflax import jsonl

HISTORY_FILE = "history.jsonl"
TENSORBOARD_DIR = "tensorboard"
# Values of a record's "kind".
TRAIN, EVAL, DIVERGED = "train", "eval", "diverged"


def read_history(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """Return the records of a history file, skipping a truncated last line."""
  return jsonl.read_jsonl(path)


def truncate_history(path: str | os.PathLike[str], last_step: int) -> int:
  """Drop the records after step `last_step` from a history file and return how many were dropped.

  Divergence records are dropped at any step, because a run resumed from a checkpoint of
  `last_step` records its divergence again. The file is replaced atomically, so a crash
  leaves either the old or the new file.
  """
  path = pathlib.Path(path)
  if not path.exists():
    return 0
  records = read_history(path)
  kept_records = [r for r in records if r["step"] <= last_step and r["kind"] != DIVERGED]
  # A file whose last line was cut off is rewritten too, so later appends start on a new line.
  if len(kept_records) == len(records) and path.read_text().endswith("\n"):
    return 0
  temporary = path.with_name(path.name + ".tmp")
  temporary.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept_records))
  os.replace(temporary, path)
  return len(records) - len(kept_records)


class MetricWriter:
  """Writer of one run's records to `<workdir>/history.jsonl` and `<workdir>/tensorboard`.

  Created with `resume_step`, it first drops history records after that step and makes
  TensorBoard discard events after it, so a resumed run's history equals an uninterrupted
  run's. When `enabled` is False (processes other than 0) it writes nothing.
  """

  def __init__(self, workdir: str | os.PathLike[str], resume_step: int, enabled: bool = True):
    self.enabled = enabled
    self.path = pathlib.Path(workdir) / HISTORY_FILE
    self._tensorboard = None
    if not enabled:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    dropped = truncate_history(self.path, resume_step)
    if dropped:
      logging.info("Dropped %d history records after step %d from %s.", dropped, resume_step,
                   self.path)
    # purge_step makes TensorBoard ignore events of earlier sessions from this step on.
    self._tensorboard = tensorboardX.SummaryWriter(
        str(pathlib.Path(workdir) / TENSORBOARD_DIR),
        purge_step=resume_step + 1)

  def write(self, record: dict[str, Any]) -> None:
    """Append `record` (with an int `step` and a str `kind`) and its numbers as scalars."""
    if not self.enabled:
      return
    jsonl.append_jsonl(self.path, record)
    step, kind = record["step"], record["kind"]
    for key, value in record.items():
      is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
      if key not in ("step", "kind") and is_number:
        self._tensorboard.add_scalar(f"{kind}/{key}", value, step)

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()
      self._tensorboard = None
