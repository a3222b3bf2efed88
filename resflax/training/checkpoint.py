"""Checkpoints of one run with orbax-checkpoint: save every N steps, keep the newest k, resume.

Layout under the run's checkpoint directory, one folder per saved step:

  <step>/state   the TrainState as a nested dict of numpy arrays (no device axis)
  <step>/meta    JSON: the config keys that determine the trained state, and the loop's
                 partial logging sums, so a resumed run logs the same values

orbax writes each step to a temporary folder and renames it when complete, so a process killed
while saving leaves no step folder, only a temporary one that the next run deletes.
"""

import json
import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from resflax.training.state import TrainState

STATE_ITEM = "state"
META_ITEM = "meta"

# Config keys that may differ between a run and its resumption because they change how the
# run is observed, stored or how long it lasts, not the state reached at a given step. The
# remat keys trade memory for speed and keep the variable layout; gradients with and without
# remat agree to float rounding.
RESUMABLE_KEYS = frozenset({
    "name", "families", "depths", "seeds", "num_steps", "progress", "log_every", "eval_every",
    "checkpoint_every", "keep_checkpoints", "eval_batch_size", "data_dir", "idx_dir", "download",
    "compilation_cache_dir", "remat", "remat_group_size",
})


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be restored. The message names it and how to start fresh."""


def _start_fresh_hint(directory: str) -> str:
  return (f"To start this run from step 0, delete {directory} or use another --workdir; "
          "to resume from an older checkpoint, delete the newer step folders.")


def config_fingerprint(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Return the JSON-compatible config values that a resumed run must share with its checkpoint.

  Keys set to None (the default of optional keys) are left out, so a key added to the config
  in a later version does not make older checkpoints and results look stale.
  """
  values = json.loads(config.to_json_best_effort())
  return {key: value for key, value in values.items()
          if key not in RESUMABLE_KEYS and value is not None}


def create_checkpoint_manager(directory: str | os.PathLike[str],
                              max_to_keep: int) -> ocp.CheckpointManager:
  """Open (and create) the checkpoint directory of one run, keeping the newest `max_to_keep`.

  Saves run in a background thread, so call `wait_until_finished` before reading them and
  `close` at the end. Every process of a multi-process run must open and use the manager.
  """
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      create=True,
      # Temporary folders are left by processes killed while saving.
      cleanup_tmp_directories=True,
  )
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_names=(STATE_ITEM, META_ITEM))


def step_directory(manager: ocp.CheckpointManager, step: int) -> str:
  """Return the folder of the checkpoint of `step` (the manager's default naming)."""
  return os.path.join(str(manager.directory), str(step))


def save_checkpoint(manager: ocp.CheckpointManager, state: TrainState,
                    config: ml_collections.ConfigDict, loop_state: dict[str, Any]) -> None:
  """Start saving a host `state` at its step, with the config fingerprint and `loop_state`.

  `loop_state` must be JSON-compatible. Saving the same step twice is a no-op.
  """
  step = int(state.step)
  if step in manager.all_steps():
    return
  meta = {"config": config_fingerprint(config), "loop": loop_state}
  manager.save(step, args=ocp.args.Composite(**{
      STATE_ITEM: ocp.args.StandardSave(serialization.to_state_dict(state)),
      META_ITEM: ocp.args.JsonSave(meta),
  }), force=True)
  logging.info("Saving checkpoint of step %d to %s.", step, step_directory(manager, step))


def _describe_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
  # A missing key reads as None, as `config_fingerprint` leaves out keys set to None.
  keys = sorted(set(saved) | set(current))
  return [f"{key}: {saved.get(key)!r} in the checkpoint, {current.get(key)!r} now"
          for key in keys if saved.get(key) != current.get(key)]


def _check_like_target(restored: Any, target: Any, path: str) -> None:
  restored_structure = jax.tree.structure(restored)
  target_structure = jax.tree.structure(target)
  if restored_structure != target_structure:
    raise CheckpointError(
        f"Checkpoint {path} contains a different set of parameters or optimizer state than this "
        f"model and optimizer.")
  for (key_path, saved), expected in zip(jax.tree_util.tree_leaves_with_path(restored),
                                         jax.tree.leaves(target)):
    saved = np.asarray(saved)
    if saved.shape != np.shape(expected) or saved.dtype != np.asarray(expected).dtype:
      raise CheckpointError(
          f"Checkpoint {path} stores {jax.tree_util.keystr(key_path)} as {saved.dtype} "
          f"{saved.shape}, but this run expects {np.asarray(expected).dtype} "
          f"{np.shape(expected)}.")


def restore_checkpoint(
    manager: ocp.CheckpointManager, target: TrainState, config: ml_collections.ConfigDict
) -> tuple[TrainState, dict[str, Any]] | None:
  """Restore the newest checkpoint into the structure of the host state `target`.

  Returns (state, loop_state), or None when the directory has no checkpoint. Raises
  CheckpointError when the newest checkpoint is unreadable, was written with a different
  config (see `config_fingerprint`) or does not match `target`. It never falls back to an
  older checkpoint or to step 0.
  """
  manager.wait_until_finished()
  manager.reload()
  step = manager.latest_step()
  if step is None:
    return None
  path = step_directory(manager, step)
  directory = str(manager.directory)
  target_dict = serialization.to_state_dict(target)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.StandardRestore(target_dict),
        META_ITEM: ocp.args.JsonRestore(),
    }))
    meta = restored[META_ITEM]
    state_dict = restored[STATE_ITEM]
  # orbax and tensorstore raise many exception types for missing or damaged files.
  except Exception as error:  # pylint: disable=broad-exception-caught
    raise CheckpointError(f"Checkpoint {path} is unreadable or incompatible with this run "
                          f"({type(error).__name__}: {error}). "
                          f"{_start_fresh_hint(directory)}") from error

  if not isinstance(meta, dict) or "config" not in meta or "loop" not in meta:
    raise CheckpointError(f"Checkpoint {path} has no run metadata. {_start_fresh_hint(directory)}")
  differences = _describe_differences(meta["config"], config_fingerprint(config))
  if differences:
    raise CheckpointError(
        f"Checkpoint {path} was written with a different config ({'; '.join(differences)}). "
        f"Resume with the original config. {_start_fresh_hint(directory)}")
  try:
    _check_like_target(state_dict, target_dict, path)
  except CheckpointError as error:
    raise CheckpointError(f"{error} {_start_fresh_hint(directory)}") from None
  state = serialization.from_state_dict(target, state_dict)
  if int(state.step) != step:
    raise CheckpointError(f"Checkpoint {path} stores step {int(state.step)}, not {step}. "
                          f"{_start_fresh_hint(directory)}")
  logging.info("Restored checkpoint of step %d from %s.", step, path)
  return state, meta["loop"]
