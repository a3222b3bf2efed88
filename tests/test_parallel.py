"""Tests of the pmap and mesh runners on fake CPU devices, and of two-process training.

Each test runs this file as a subprocess, because the number of fake devices
(XLA_FLAGS=--xla_force_host_platform_device_count) and jax.distributed must be set before
jax starts. `python tests/test_parallel.py modes OUT_DIR` and
`python tests/test_parallel.py distributed PROCESS_ID PORT OUT_DIR WORKDIR` are the workers.
"""

import functools
import json
import os
import pathlib
import socket
import subprocess
import sys

from flax import traverse_util
import jax
import numpy as np
import pytest

from resflax import data
from resflax import training
from resflax.training import parallel

import training_helpers

GLOBAL_BATCH = 16
NUM_STEPS = 3
# Float32 tolerance for params reached along different reduction orders after 3 steps.
RTOL = 1e-5
ATOL = 1e-6


# Worker side: runs in a subprocess with fake devices.


def _flatten(tree) -> dict[str, np.ndarray]:
  return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()}


def _train_steps(runner, state, dataset, num_steps=NUM_STEPS):
  """Run `num_steps` steps of this process's part of the global batches."""
  placed = runner.place_state(state)
  for step in range(num_steps):
    batch = data.train_batch(dataset.train, GLOBAL_BATCH, 0, step)
    batch = data.process_shard(batch, jax.process_index(), jax.process_count())
    placed, _ = runner.train_step(placed, runner.shard_batch(batch))
  return placed


def _make_runner(config, dataset, devices):
  train_step = functools.partial(training.train_step, seed=0, pad=2, flip=True)
  return training.create_runner(config, train_step, training.eval_step, dataset.mean,
                                dataset.std, devices=devices)


def _initial_state(config, dataset, axis_name=None):
  model = training.build_model(config, dataset.num_classes)
  state = jax.device_get(
      training.create_train_state(jax.random.key(0), model, config, dataset.image_shape))
  synced_model = training.build_model(config, dataset.num_classes, axis_name)
  return state.replace(apply_fn=synced_model.apply)


def _compiled_functions(function) -> list[str]:
  """Call `function` and return the names of the functions XLA compiled meanwhile."""
  compiled = []

  def record(event, duration, **kwargs):
    del duration
    if event == "/jax/core/compile/backend_compile_duration":
      compiled.append(kwargs.get("fun_name"))

  jax.monitoring.register_event_duration_secs_listener(record)
  try:
    function()
  finally:
    jax.monitoring.unregister_event_duration_listener(record)
  return compiled


def modes_worker(out_dir: pathlib.Path) -> None:
  """Train 3 steps in each mode on 4 fake devices and save what the tests compare."""
  devices = jax.devices()
  assert len(devices) == 4, devices
  dataset = training_helpers.synthetic_dataset(num_train=64)
  config = training_helpers.small_config(batch_size=GLOBAL_BATCH, sync_batch_norm=True)
  plain_state = _initial_state(config, dataset)
  synced_state = _initial_state(config, dataset, axis_name=parallel.PMAP_AXIS)

  params = {}
  runs = {"jit": ("jit", devices[:1]), "pmap2": ("pmap", devices[:2]),
          "pmap4": ("pmap", devices), "mesh4": ("mesh", devices)}
  for name, (mode, mode_devices) in runs.items():
    runner = _make_runner(training_helpers.small_config(
        batch_size=GLOBAL_BATCH, parallel=mode, sync_batch_norm=True), dataset, mode_devices)
    state = synced_state if runner.model_axis_name else plain_state
    params[name] = runner.fetch(_train_steps(runner, state, dataset)).params

  # Scanned depth 26 (3 scanned blocks per stage: a group of 2 and a tail of 1) with grouped
  # remat in pmap and mesh mode, against the same net scanned without remat under jit.
  scanned = {"depth": 26, "scan_blocks": True}
  grouped = {**scanned, "remat": True, "remat_group_size": 2}
  grouped_runs = {"grouped_jit": ("jit", devices[:1], scanned),
                  "grouped_pmap4": ("pmap", devices, grouped),
                  "grouped_mesh4": ("mesh", devices, grouped)}
  for name, (mode, mode_devices, options) in grouped_runs.items():
    run_config = training_helpers.small_config(batch_size=GLOBAL_BATCH, parallel=mode,
                                               sync_batch_norm=True, **options)
    runner = _make_runner(run_config, dataset, mode_devices)
    state = _initial_state(run_config, dataset, axis_name=runner.model_axis_name)
    params[name] = runner.fetch(_train_steps(runner, state, dataset)).params
  for name, tree in params.items():
    np.savez(out_dir / f"params_{name}.npz", **_flatten(tree))

  # Per-device BatchNorm: each device normalizes with its own shard's statistics.
  runner = _make_runner(training_helpers.small_config(
      batch_size=GLOBAL_BATCH, parallel="pmap", sync_batch_norm=False), dataset, devices)
  assert runner.model_axis_name is None
  placed = _train_steps(runner, plain_state, dataset)
  np.savez(out_dir / "stats_before.npz", **_flatten(jax.device_get(placed.batch_stats)))
  placed = runner.sync_batch_stats(placed)
  np.savez(out_dir / "stats_after.npz", **_flatten(jax.device_get(placed.batch_stats)))
  eval_batch = next(iter(data.eval_batches(dataset.test, 16)))
  pmap_sums = runner.fetch(runner.eval_step(placed, runner.shard_batch(eval_batch)))
  jit_runner = _make_runner(config, dataset, devices[:1])
  jit_state = jit_runner.place_state(runner.fetch(placed))
  jit_sums = jit_runner.fetch(jit_runner.eval_step(jit_state, jit_runner.shard_batch(eval_batch)))

  # Whole runs in pmap and mesh mode, across an epoch boundary (32 examples, 16 per batch).
  loop_dataset = training_helpers.synthetic_dataset(num_train=32)
  compiles = {}
  for mode in ("pmap", "mesh"):
    loop_config = training_helpers.small_config(batch_size=GLOBAL_BATCH, parallel=mode,
                                                num_steps=5, eval_every=2, checkpoint_every=2)
    compiles[mode] = _compiled_functions(
        lambda: training.train_and_evaluate(loop_config, loop_dataset, out_dir / f"run_{mode}"))

  bad_batch = training_helpers.small_config(batch_size=6, parallel="pmap")
  try:
    training.train_and_evaluate(bad_batch, dataset, out_dir / "bad_batch")
    bad_batch_error = None
  except ValueError as error:
    bad_batch_error = str(error)

  summary = {
      "pmap_sums": {k: float(v) for k, v in pmap_sums.items()},
      "jit_sums": {k: float(v) for k, v in jit_sums.items()},
      "compiles": compiles,
      "bad_batch_error": bad_batch_error,
  }
  (out_dir / "summary.json").write_text(json.dumps(summary))


def _pin_gloo_to_loopback() -> None:
  # Without a hostname, gloo listens on the address that the machine's hostname resolves to.
  # The test passes 127.0.0.1 so that its traffic stays on the loopback interface.
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

  make_collectives = xla_bridge._jax.make_gloo_tcp_collectives  # pylint: disable=protected-access
  xla_bridge._jax.make_gloo_tcp_collectives = functools.partial(  # pylint: disable=protected-access
      make_collectives, hostname="127.0.0.1")


def distributed_worker(process_id: int, port: int, out_dir: pathlib.Path,
                       workdir: pathlib.Path) -> None:
  """Train 3 steps in mesh mode as one of two processes, then run the whole loop."""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  _pin_gloo_to_loopback()
  address = f"127.0.0.1:{port}"
  jax.distributed.initialize(address, num_processes=2, process_id=process_id,
                             coordinator_bind_address=address, initialization_timeout=60,
                             heartbeat_timeout_seconds=30, shutdown_timeout_seconds=30)
  assert jax.process_count() == 2
  assert jax.device_count() == 2

  dataset = training_helpers.synthetic_dataset(num_train=64)
  config = training_helpers.small_config(batch_size=GLOBAL_BATCH, parallel="mesh")
  runner = _make_runner(config, dataset, None)
  state = _initial_state(config, dataset)
  params = runner.fetch(_train_steps(runner, state, dataset)).params
  np.savez(out_dir / f"params_process{process_id}.npz", **_flatten(params))

  loop_config = training_helpers.small_config(batch_size=GLOBAL_BATCH, parallel="mesh",
                                              num_steps=3, eval_every=3, checkpoint_every=3)
  result = training.train_and_evaluate(loop_config, dataset, workdir)
  (out_dir / f"result_process{process_id}.json").write_text(json.dumps(result))
  jax.distributed.shutdown()


# Test side.


def _load(path: pathlib.Path) -> dict[str, np.ndarray]:
  with np.load(path) as archive:
    return dict(archive)


def _run_worker(args, num_devices, timeout=training_helpers.SUBPROCESS_TIMEOUT):
  completed = subprocess.run(
      training_helpers.python_command(__file__, *map(str, args)),
      env=training_helpers.subprocess_env(num_devices), cwd=training_helpers.REPO_ROOT,
      capture_output=True, text=True, timeout=timeout, check=False)
  assert completed.returncode == 0, completed.stderr[-5000:]
  return completed


@pytest.fixture(scope="module")
def modes_output(tmp_path_factory):
  out_dir = tmp_path_factory.mktemp("modes")
  _run_worker(["modes", out_dir], num_devices=4)
  return out_dir


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pmap2", "pmap4", "mesh4"])
def test_parallel_params_match_jit(modes_output, name):
  reference = _load(modes_output / "params_jit.npz")
  params = _load(modes_output / f"params_{name}.npz")
  assert params.keys() == reference.keys()
  for key, expected in reference.items():
    np.testing.assert_allclose(params[key], expected, rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["grouped_pmap4", "grouped_mesh4"])
def test_grouped_remat_params_match_jit(modes_output, name):
  reference = _load(modes_output / "params_grouped_jit.npz")
  params = _load(modes_output / f"params_{name}.npz")
  assert params.keys() == reference.keys()
  assert any("/blocks/" in key for key in reference)
  for key, expected in reference.items():
    np.testing.assert_allclose(params[key], expected, rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.mark.slow
def test_per_device_batch_norm_synced_to_mean(modes_output):
  before = _load(modes_output / "stats_before.npz")
  after = _load(modes_output / "stats_after.npz")
  differing = [key for key, value in before.items() if not np.allclose(value[0], value[1])]
  assert differing, "per-device statistics should differ before they are averaged"
  for key, stacked in after.items():
    assert stacked.shape[0] == 4
    for device in range(1, 4):
      np.testing.assert_array_equal(stacked[device], stacked[0], err_msg=key)
    np.testing.assert_allclose(stacked[0], before[key].mean(axis=0), rtol=1e-6, atol=1e-7,
                               err_msg=key)


@pytest.mark.slow
def test_pmap_eval_matches_single_device(modes_output):
  summary = json.loads((modes_output / "summary.json").read_text())
  pmap_sums, jit_sums = summary["pmap_sums"], summary["jit_sums"]
  assert pmap_sums["count"] == jit_sums["count"] == 16
  assert pmap_sums["error_count"] == jit_sums["error_count"]
  assert pmap_sums["loss_sum"] == pytest.approx(jit_sums["loss_sum"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pmap", "mesh"])
def test_parallel_loop_compiles_step_once(modes_output, mode):
  compiled = json.loads((modes_output / "summary.json").read_text())["compiles"][mode]
  compiled = [name for name in compiled if name != "jit(_init_variables)"]
  if mode == "pmap":
    # jax 0.10 names every pmapped function "_fun": the train step, the eval step and the
    # BatchNorm mean over devices.
    assert compiled == ["jit(_fun)"] * 3
  else:
    assert sorted(compiled) == ["jit(eval_step)", "jit(train_step)"]
  records = [json.loads(line) for line in
             (modes_output / f"run_{mode}" / "history.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if r["kind"] == "eval"] == [2, 4, 5]


@pytest.mark.slow
def test_batch_not_dividing_devices_raises(modes_output):
  summary = json.loads((modes_output / "summary.json").read_text())
  assert summary["bad_batch_error"] is not None
  assert "batch_size=6" in summary["bad_batch_error"]


def _free_loopback_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _reference_params(dataset):
  """Params after 3 steps on one device in this process."""
  config = training_helpers.small_config(batch_size=GLOBAL_BATCH)
  runner = _make_runner(config, dataset, None)
  return _flatten(runner.fetch(_train_steps(runner, _initial_state(config, dataset),
                                            dataset)).params)


@pytest.mark.slow
def test_two_processes_match_single_process(tmp_path):
  port = _free_loopback_port()
  workdir = tmp_path / "run"
  env = training_helpers.subprocess_env(num_devices=1)
  workers = [
      subprocess.Popen(
          training_helpers.python_command(__file__, "distributed", str(process_id), str(port),
                                          str(tmp_path), str(workdir)),
          env=env, cwd=training_helpers.REPO_ROOT, stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT, text=True)
      for process_id in range(2)
  ]
  outputs = []
  try:
    for worker in workers:
      outputs.append(worker.communicate(timeout=training_helpers.SUBPROCESS_TIMEOUT)[0])
  finally:
    for worker in workers:
      if worker.poll() is None:
        worker.kill()
        worker.wait()
  for process_id, worker in enumerate(workers):
    assert worker.returncode == 0, f"process {process_id}:\n{outputs[process_id][-5000:]}"

  process0 = _load(tmp_path / "params_process0.npz")
  process1 = _load(tmp_path / "params_process1.npz")
  reference = _reference_params(training_helpers.synthetic_dataset(num_train=64))
  for key, expected in reference.items():
    np.testing.assert_array_equal(process1[key], process0[key], err_msg=key)
    np.testing.assert_allclose(process0[key], expected, rtol=RTOL, atol=ATOL, err_msg=key)

  results = [json.loads((tmp_path / f"result_process{i}.json").read_text()) for i in range(2)]
  for key in ("steps", "train_error", "val_error", "test_error", "param_norm"):
    assert results[0][key] == results[1][key], key
  assert results[0]["steps"] == NUM_STEPS
  records = [json.loads(line) for line in (workdir / "history.jsonl").read_text().splitlines()]
  assert [(r["kind"], r["step"]) for r in records] == [("train", 2), ("train", 3), ("eval", 3)]
  assert os.listdir(workdir / "checkpoints") == ["3"]


def main(argv: list[str]) -> None:
  command, args = argv[0], argv[1:]
  if command == "modes":
    modes_worker(pathlib.Path(args[0]))
  elif command == "distributed":
    distributed_worker(int(args[0]), int(args[1]), pathlib.Path(args[2]), pathlib.Path(args[3]))
  else:
    raise SystemExit(f"unknown worker {command!r}; expected 'modes' or 'distributed'")


if __name__ == "__main__":
  main(sys.argv[1:])
