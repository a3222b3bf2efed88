"""Tests of checkpointing and resumption: kill and resume, corrupt and incompatible checkpoints.

`python tests/test_checkpoint.py WORKDIR` is the worker that the kill test starts and kills.
"""

import json
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from resflax import training
from resflax.training import history

import training_helpers

# Keys of history records that measure time, and so differ between two identical runs.
TIMING_KEYS = ("examples_per_second", "step_seconds", "eval_seconds")
# The kill test: the first checkpoint comes at step 20, and 280 more steps follow it, which
# gives the test time to kill the run before it ends.
KILL_CONFIG = dict(num_steps=300, checkpoint_every=20, eval_every=100, log_every=10,
                   keep_checkpoints=2)


def _kill_config():
  return training_helpers.small_config(**KILL_CONFIG)


def _template(config, dataset):
  """Return a host state with the structure of `config`'s model, to restore into."""
  model = training.build_model(config, dataset.num_classes)
  return jax.device_get(training.create_train_state(jax.random.key(0), model, config,
                                                    dataset.image_shape))


def _restore(workdir, config, dataset):
  manager = training.create_checkpoint_manager(pathlib.Path(workdir) / "checkpoints", 2)
  try:
    return training.restore_checkpoint(manager, _template(config, dataset), config)
  finally:
    manager.close()


def _without_timing(records):
  return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def _wait_for(path: pathlib.Path, process: subprocess.Popen, timeout: float) -> None:
  deadline = time.monotonic() + timeout
  while not path.exists():
    if process.poll() is not None:
      raise AssertionError(f"the run exited with {process.returncode} before {path} appeared:\n"
                           f"{process.stdout.read()[-5000:]}")
    if time.monotonic() > deadline:
      raise AssertionError(f"{path} did not appear within {timeout} s")
    time.sleep(0.01)


@pytest.mark.slow
def test_killed_run_resumes_to_same_result(tmp_path):
  dataset = training_helpers.synthetic_dataset()
  killed_dir = tmp_path / "killed"
  command = training_helpers.python_command(__file__, str(killed_dir))
  env = training_helpers.subprocess_env(num_devices=1)
  process = subprocess.Popen(command, env=env, cwd=training_helpers.REPO_ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    _wait_for(killed_dir / "checkpoints" / "20", process, training_helpers.SUBPROCESS_TIMEOUT)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
  assert process.returncode == -signal.SIGKILL, "the run ended before it was killed"
  newest_before_resume = max(int(p.name) for p in (killed_dir / "checkpoints").iterdir()
                             if p.name.isdigit())
  assert newest_before_resume < KILL_CONFIG["num_steps"]

  resumed = subprocess.run(command, env=env, cwd=training_helpers.REPO_ROOT,
                           capture_output=True, text=True,
                           timeout=training_helpers.SUBPROCESS_TIMEOUT, check=False)
  assert resumed.returncode == 0, resumed.stderr[-5000:]
  resumed_result = json.loads((killed_dir / "result.json").read_text())
  assert resumed_result["resumed_from_step"] == newest_before_resume

  config = _kill_config()
  reference_dir = tmp_path / "uninterrupted"
  reference_result = training.train_and_evaluate(config, dataset, reference_dir)

  for key in ("steps", "train_error", "train_loss", "val_error", "test_error", "test_loss",
              "learning_rate", "grad_norm", "param_norm", "diverged"):
    assert resumed_result[key] == reference_result[key], key
  resumed_records = training.read_history(killed_dir / "history.jsonl")
  reference_records = training.read_history(reference_dir / "history.jsonl")
  assert _without_timing(resumed_records) == _without_timing(reference_records)

  resumed_state, _ = _restore(killed_dir, config, dataset)
  reference_state, _ = _restore(reference_dir, config, dataset)
  assert int(resumed_state.step) == int(reference_state.step) == KILL_CONFIG["num_steps"]
  for resumed_leaf, reference_leaf in zip(jax.tree.leaves(resumed_state),
                                          jax.tree.leaves(reference_state)):
    np.testing.assert_array_equal(resumed_leaf, reference_leaf)


@pytest.fixture(scope="module")
def finished_workdir(tmp_path_factory):
  """A finished 6-step run with checkpoints at steps 3 and 6."""
  workdir = tmp_path_factory.mktemp("finished")
  training.train_and_evaluate(training_helpers.small_config(),
                              training_helpers.synthetic_dataset(), workdir)
  return workdir


@pytest.fixture
def workdir_copy(finished_workdir, tmp_path):
  copy = tmp_path / "run"
  shutil.copytree(finished_workdir, copy)
  return copy


def test_corrupt_checkpoint_raises_with_path(workdir_copy):
  step_dir = workdir_copy / "checkpoints" / "6"
  for path in (step_dir / "state").rglob("*"):
    if path.is_file():
      path.write_bytes(b"not a checkpoint")
  history_before = (workdir_copy / "history.jsonl").read_text()
  with pytest.raises(training.CheckpointError) as raised:
    training.train_and_evaluate(training_helpers.small_config(),
                                training_helpers.synthetic_dataset(), workdir_copy)
  message = str(raised.value)
  assert str(step_dir) in message
  assert "--workdir" in message
  assert (workdir_copy / "history.jsonl").read_text() == history_before


def test_changed_config_raises_with_key(workdir_copy):
  with pytest.raises(training.CheckpointError) as raised:
    training.train_and_evaluate(training_helpers.small_config(width=8),
                                training_helpers.synthetic_dataset(), workdir_copy)
  message = str(raised.value)
  assert "width: 4 in the checkpoint, 8 now" in message
  assert str(workdir_copy / "checkpoints") in message


def test_different_model_raises(workdir_copy):
  config = training_helpers.small_config()
  dataset = training_helpers.synthetic_dataset()
  wider = _template(training_helpers.small_config(width=8), dataset)
  manager = training.create_checkpoint_manager(workdir_copy / "checkpoints", 2)
  try:
    with pytest.raises(training.CheckpointError, match=str(workdir_copy / "checkpoints" / "6")):
      training.restore_checkpoint(manager, wider, config)
  finally:
    manager.close()


def test_longer_run_resumes_from_finished_run(workdir_copy):
  config = training_helpers.small_config(num_steps=8)
  result = training.train_and_evaluate(config, training_helpers.synthetic_dataset(),
                                       workdir_copy)
  assert result["resumed_from_step"] == 6
  assert result["steps"] == 8
  records = training.read_history(workdir_copy / "history.jsonl")
  assert [(r["kind"], r["step"]) for r in records][-3:] == [("eval", 6), ("train", 8),
                                                           ("eval", 8)]


def test_run_resumes_with_other_remat_settings(tmp_path):
  # Depth 32 has 4 scanned blocks per stage, which groups of 2 split into 2 groups. Remat
  # settings may change on resume, because the variable layout stays the same.
  dataset = training_helpers.synthetic_dataset()
  scanned = dict(depth=32, scan_blocks=True, checkpoint_every=1, eval_every=3)
  runs = [(3, dict(remat=True, remat_group_size=2)), (5, dict(remat=False)),
          (6, dict(remat=True, remat_group_size=1))]
  for index, (num_steps, remat_options) in enumerate(runs):
    config = training_helpers.small_config(num_steps=num_steps, **scanned, **remat_options)
    result = training.train_and_evaluate(config, dataset, tmp_path)
    assert result["steps"] == num_steps
    if index:
      assert result["resumed_from_step"] == runs[index - 1][0]


def test_unfinished_save_is_ignored(workdir_copy):
  # orbax writes into a temporary folder and renames it when the save is complete.
  leftover = workdir_copy / "checkpoints" / "9.orbax-checkpoint-tmp-1700000000000000"
  leftover.mkdir()
  (leftover / "partial").write_bytes(b"\0" * 16)
  state, _ = _restore(workdir_copy, training_helpers.small_config(),
                      training_helpers.synthetic_dataset())
  assert int(state.step) == 6
  assert not leftover.exists()


def test_truncate_history_drops_later_records(tmp_path):
  path = tmp_path / "history.jsonl"
  records = [{"step": 2, "kind": "train"}, {"step": 3, "kind": "eval"},
             {"step": 3, "kind": "diverged"}, {"step": 4, "kind": "train"}]
  path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 6, "ki')
  assert history.truncate_history(path, 3) == 2
  assert training.read_history(path) == records[:2]
  assert path.read_text().endswith("\n")
  assert history.truncate_history(path, 3) == 0


def main(workdir: str) -> None:
  """Train the kill test's run in `workdir` and write its result to result.json."""
  result = training.train_and_evaluate(_kill_config(), training_helpers.synthetic_dataset(),
                                       workdir)
  (pathlib.Path(workdir) / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
  main(sys.argv[1])
