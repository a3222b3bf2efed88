"""End-to-end tests of train.py: a tiny sweep on the Debian Fashion-MNIST files, reruns, bad input."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

import training_helpers

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "train.py")

# The tiny sweep with a validation split, so val_error is measured too.
TINY = [*training_helpers.TINY_SWEEP, "--config.validation_size=1000",
        "--config.eval_batch_size=500"]

def tiny(**overrides):
  """Return TINY with the given keys replaced, since train.py rejects a key given twice."""
  args = [a for a in TINY if a.split("=", 1)[0][len("--config."):] not in overrides]
  return args + [f"--config.{key}={value}" for key, value in overrides.items()]


RESULT_KEYS = {
    "family", "depth", "params", "steps", "train_error", "val_error", "test_error", "diverged",
    "wall_seconds", "examples_per_second", "seed", "config",
}


def run_train(workdir, *args, env=None, timeout=600):
  return subprocess.run(
      [sys.executable, TRAIN, f"--workdir={workdir}", *args],
      capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env,
  )


def read_results(workdir):
  lines = (pathlib.Path(workdir) / "results.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("sweep")
  cache = tmp_path_factory.mktemp("xla-cache")
  completed = run_train(workdir, *tiny(compilation_cache_dir=cache))
  assert completed.returncode == 0, completed.stderr[-3000:]
  return workdir, completed


@pytest.mark.slow
def test_sweep_fills_compilation_cache(finished_sweep):
  workdir, _ = finished_sweep
  cache = pathlib.Path(read_results(workdir)[0]["config"]["compilation_cache_dir"])
  # Steps that compile in under a second are not stored, so the four nets may leave fewer
  # than eight entries. An empty folder would mean the cache is off.
  assert any(cache.iterdir())


@pytest.mark.slow
def test_sweep_writes_one_result_per_run(finished_sweep):
  workdir, _ = finished_sweep
  results = read_results(workdir)
  assert sorted((r["family"], r["depth"]) for r in results) == [
      ("plain", 8), ("plain", 14), ("residual", 8), ("residual", 14)]
  for result in results:
    assert RESULT_KEYS <= set(result), RESULT_KEYS - set(result)
    assert result["steps"] == 6
    assert 0.0 <= result["train_error"] <= 1.0
    assert 0.0 <= result["test_error"] <= 1.0
    assert result["val_error"] is not None
    assert result["diverged"] is False
    assert result["config"]["depth"] == result["depth"]


@pytest.mark.slow
def test_sweep_writes_report_files(finished_sweep):
  workdir, _ = finished_sweep
  for name in ("summary.csv", "summary.md", "verdict.txt", "training_curves.png",
               "error_vs_depth.png"):
    assert (workdir / name).stat().st_size > 0, name
  assert (workdir / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
  csv_lines = (workdir / "summary.csv").read_text().splitlines()
  assert csv_lines[0].startswith("depth,plain_train_error")
  assert len(csv_lines) == 3


@pytest.mark.slow
def test_sweep_writes_run_histories(finished_sweep):
  workdir, _ = finished_sweep
  for run in ("plain-8-seed0", "residual-14-seed0"):
    run_dir = workdir / "runs" / run
    records = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if r.get("train_error") is not None]
    assert [r["step"] for r in evaluations] == [3, 6]
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents*"))


@pytest.mark.slow
def test_sweep_prints_table_and_verdict(finished_sweep):
  _, completed = finished_sweep
  assert "| depth | plain train % |" in completed.stdout
  verdict = completed.stdout.split("Verdict:")[1]
  assert "plain:" in verdict
  assert "residual:" in verdict
  assert "at depth 14:" in verdict


@pytest.mark.slow
def test_rerun_trains_nothing(finished_sweep):
  workdir, first = finished_sweep
  before = (workdir / "results.jsonl").read_text()
  again = run_train(workdir, *TINY)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "started" not in again.stderr
  assert (workdir / "results.jsonl").read_text() == before
  assert again.stdout.split("Verdict:")[1] == first.stdout.split("Verdict:")[1]


@pytest.mark.slow
def test_rerun_with_changed_config_is_rejected(finished_sweep):
  workdir, _ = finished_sweep
  changed = run_train(workdir, *tiny(learning_rate=0.05))
  assert changed.returncode == 2
  assert "different config (learning_rate: 0.1 there, 0.05 now)" in changed.stderr


@pytest.mark.slow
def test_killed_sweep_resumes_without_loss(tmp_path):
  args = [sys.executable, TRAIN, f"--workdir={tmp_path}",
          *tiny(num_steps=40, checkpoint_every=10, eval_every=20)]
  process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
  second_run = tmp_path / "runs" / "residual-8-seed0" / "checkpoints"
  deadline = time.time() + 300
  try:
    # Kill once the first run has its result line and the second one has a checkpoint.
    while time.time() < deadline and process.poll() is None:
      if (tmp_path / "results.jsonl").exists() and second_run.exists() and any(
          p.name.isdigit() for p in second_run.iterdir()):
        break
      time.sleep(0.2)
    assert process.poll() is None, "the sweep ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
  finally:
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGKILL)
  first_lines = (tmp_path / "results.jsonl").read_text()
  assert len(first_lines.splitlines()) == 1

  resumed = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  results = read_results(tmp_path)
  assert len(results) == 4
  assert (tmp_path / "results.jsonl").read_text().startswith(first_lines)
  assert "resum" in resumed.stderr.lower()


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.depths=(21,)", "6n+2"),
        ("--config.depths=(0,)", "6n+2"),
        ("--config.families=('plane',)", "unknown family"),
        ("--config.dataset=imagenet21k", "dataset"),
        ("--config.shortcut=D", "shortcut"),
        ("--config.parallel=tpu", "parallel"),
        ("--config.bogus=1", "unknown config key 'bogus'"),
        ("--config.num_steps=abc", "num_steps"),
        ("--config.final_train_eval_size=0", "final_train_eval_size"),
        ("--config.conv_gradient=fast", "conv_gradient"),
        ("--config.remat_group_size=0", "remat_group_size"),
    ],
)
def test_bad_config_exits_with_one_line(tmp_path, override, message):
  completed = run_train(tmp_path / "w", override)
  assert completed.returncode == 2
  assert message in completed.stderr
  assert "Traceback" not in completed.stderr
  assert not (tmp_path / "w" / "results.jsonl").exists()


# ml_collections rejects a float or a string for an int field, but not True.
@pytest.mark.parametrize("value", [True, 0, -3])
def test_bad_remat_group_size_in_config_file(value):
  from resflax import validation  # pylint: disable=import-outside-toplevel

  config = training_helpers.small_config()
  config.remat_group_size = value
  with pytest.raises(validation.ConfigError, match="invalid --config.remat_group_size"):
    validation.validate_config(config)


def test_missing_idx_dir_names_fix(tmp_path):
  completed = run_train(tmp_path / "w", f"--config.idx_dir={tmp_path / 'missing'}")
  assert completed.returncode == 2
  assert "apt-get install dataset-fashion-mnist" in completed.stderr
  assert "Traceback" not in completed.stderr


def test_missing_config_file_exits_cleanly(tmp_path):
  completed = run_train(tmp_path / "w", "--config=nonexistent_config.py")
  assert completed.returncode == 2
  assert "nonexistent_config.py" in completed.stderr
  assert "Traceback" not in completed.stderr


def test_indivisible_batch_exits_before_training(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  completed = run_train(tmp_path / "w", "--config.parallel=pmap", "--config.batch_size=127",
                        env=env)
  assert completed.returncode == 2
  assert "does not divide over 2 devices" in completed.stderr
  assert "Traceback" not in completed.stderr


def test_help_lists_keys_with_units():
  completed = subprocess.run([sys.executable, TRAIN, "--help"], capture_output=True,
                             text=True, timeout=120, cwd=REPO)
  for line in ("batch_size = 128: global batch size, in examples",
               "num_steps = 64_000: training steps", "workdir"):
    assert line in completed.stdout


def test_named_config_is_expanded():
  from resflax import cli  # pylint: disable=import-outside-toplevel

  expanded = cli.expand_config_argument(["train.py", "--config", "standard", "--config=quick"])
  assert expanded[2].endswith("resflax/configs/standard.py")
  assert expanded[3].endswith("resflax/configs/quick.py")


def test_repeated_override_is_rejected(tmp_path):
  completed = run_train(tmp_path / "w", "--config.depths=(8,14)", "--config.depths=(20,)")
  assert completed.returncode == 2
  assert "--config.depths given more than once" in completed.stderr


def test_duplicate_depth_is_rejected(tmp_path):
  completed = run_train(tmp_path / "w", "--config.depths=(8,14,8)")
  assert completed.returncode == 2
  assert "lists a value twice" in completed.stderr


def test_workdir_that_is_file_is_rejected(tmp_path):
  workdir = tmp_path / "file"
  workdir.write_text("not a directory")
  completed = run_train(workdir)
  assert completed.returncode == 2
  assert "is a file, not a directory" in completed.stderr
  assert "Traceback" not in completed.stderr


def test_corrupt_results_line_names_it(tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / "results.jsonl").write_text('{"family": "plain"\n{"depth": 8}\n')
  completed = run_train(workdir)
  assert completed.returncode == 2
  assert "results.jsonl:1 is not valid JSON" in completed.stderr
  assert "Traceback" not in completed.stderr


@pytest.mark.slow
def test_sigterm_stops_with_resume_hint(tmp_path):
  process = subprocess.Popen(
      [sys.executable, TRAIN, f"--workdir={tmp_path}", *tiny(num_steps=400)],
      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    for line in process.stderr:
      if "compiled and ran step" in line:
        break
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=120)
  finally:
    if process.poll() is None:
      process.kill()
  assert process.returncode == 130
  assert "run the same command again to resume" in rest
  assert "Traceback" not in rest
