"""JSON-lines files: results.jsonl of a sweep and history.jsonl of a run."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any


class JsonlError(ValueError):
  """A line that is not valid JSON, other than a truncated last line."""


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """Read a JSON-lines file; a missing file reads as empty.

  A truncated last line (a process killed while writing it) is skipped, because every writer
  in resflax appends whole lines. A bad line anywhere else raises JsonlError.
  """
  path = pathlib.Path(path)
  if not path.exists():
    return []
  records = []
  lines = path.read_text().splitlines()
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if number == len(lines):
        continue
      raise JsonlError(f"{path}:{number} is not valid JSON; fix or delete that line") from None
  return records


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
  """Append one record as a line, flushed before returning."""
  with pathlib.Path(path).open("a") as f:
    f.write(json.dumps(record, sort_keys=True) + "\n")
    f.flush()
