"""Tests of the training core on one CPU device: schedule, optimizer, steps and the run loop."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resflax import data
from resflax import models
from resflax import training
from resflax.training import schedule

import training_helpers


# Schedule.


def test_schedule_depth_110_warms_up():
  config = training_helpers.default.get_config()
  learning_rate_fn = training.create_learning_rate_fn(config, depth=110)
  expected = {0: 0.01, 399: 0.01, 400: 0.1, 31_999: 0.1, 32_000: 0.01, 47_999: 0.01,
              48_000: 0.001, 63_999: 0.001}
  for step, rate in expected.items():
    assert float(learning_rate_fn(step)) == pytest.approx(rate, rel=1e-6), step


def test_schedule_depth_20_starts_at_base_rate():
  config = training_helpers.default.get_config()
  learning_rate_fn = training.create_learning_rate_fn(config, depth=20)
  assert float(learning_rate_fn(0)) == pytest.approx(0.1)
  assert float(learning_rate_fn(399)) == pytest.approx(0.1)
  assert float(jax.jit(learning_rate_fn)(48_000)) == pytest.approx(0.001)


def test_schedule_scales_with_batch_size():
  config = training_helpers.default.get_config()
  config.scale_lr_with_batch = True
  config.batch_size = 512
  learning_rate_fn = training.create_learning_rate_fn(config, depth=110)
  assert float(learning_rate_fn(0)) == pytest.approx(0.04)
  assert float(learning_rate_fn(400)) == pytest.approx(0.4)
  assert float(learning_rate_fn(32_000)) == pytest.approx(0.04)


def test_schedule_rejects_unsorted_boundaries():
  config = training_helpers.default.get_config()
  config.lr_boundaries = (48_000, 32_000)
  with pytest.raises(ValueError, match="strictly increasing"):
    schedule.create_learning_rate_fn(config, depth=20)


# Optimizer.


def _pytorch_sgd(params, grads, rates, *, momentum, weight_decay, decay_mask, nesterov=False):
  """Apply torch.optim.SGD's update rule (dampening 0), written out in numpy."""
  params = {k: np.array(v, np.float64) for k, v in params.items()}
  buffers = {k: np.zeros_like(v) for k, v in params.items()}
  for grad, rate in zip(grads, rates):
    for key in params:
      d = grad[key] + (weight_decay * params[key] if decay_mask[key] else 0.0)
      buffers[key] = momentum * buffers[key] + d
      step = d + momentum * buffers[key] if nesterov else buffers[key]
      params[key] = params[key] - rate * step
  return params


@pytest.mark.parametrize("weight_decay_on,nesterov", [("all", False), ("kernels", False),
                                                      ("all", True)])
def test_optimizer_matches_pytorch_sgd(weight_decay_on, nesterov):
  config = training_helpers.small_config(weight_decay=0.05, weight_decay_on=weight_decay_on,
                                         nesterov=nesterov, warmup_steps=1,
                                         warmup_learning_rate=0.02, warmup_min_depth=1,
                                         learning_rate=0.3, lr_boundaries=(2,))
  learning_rate_fn = training.create_learning_rate_fn(config, depth=8)
  tx = training.create_optimizer(config, learning_rate_fn)
  rng = np.random.default_rng(0)
  params = {"kernel": rng.normal(size=(3, 2)).astype(np.float32),
            "bias": rng.normal(size=(2,)).astype(np.float32)}
  grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
           for _ in range(3)]

  opt_state = tx.init(params)
  current = params
  applied = []
  for grad in grads:
    updates, opt_state = tx.update(grad, opt_state, current)
    current = jax.tree.map(lambda p, u: p + u, current, updates)
    applied.append(float(training.applied_learning_rate(opt_state)))

  decay_mask = {"kernel": True, "bias": weight_decay_on == "all"}
  expected = _pytorch_sgd(params, grads, [0.02, 0.3, 0.03], momentum=0.9, weight_decay=0.05,
                          decay_mask=decay_mask, nesterov=nesterov)
  assert applied == pytest.approx([0.02, 0.3, 0.03], rel=1e-6)
  for key in params:
    np.testing.assert_allclose(current[key], expected[key], rtol=1e-5, atol=1e-6)


def test_weight_decay_mask_selects_kernels():
  params = {"conv": {"kernel": 1.0, "bias": 2.0}, "bn": {"scale": 3.0, "bias": 4.0}}
  mask = training.weight_decay_mask(params, "kernels")
  assert mask == {"conv": {"kernel": True, "bias": False}, "bn": {"scale": False, "bias": False}}
  assert all(jax.tree.leaves(training.weight_decay_mask(params, "all")))
  with pytest.raises(ValueError, match="weight_decay_on"):
    training.weight_decay_mask(params, "biases")


# Steps.


@pytest.fixture(scope="module")
def small_setup():
  config = training_helpers.small_config(warmup_steps=2, warmup_min_depth=8)
  dataset = training_helpers.synthetic_dataset()
  model = training.build_model(config, dataset.num_classes)
  state = training.create_train_state(jax.random.key(0), model, config, dataset.image_shape)
  train_step = jax.jit(functools.partial(training.train_step, seed=0, pad=2, flip=True))
  eval_step = jax.jit(training.eval_step)
  return config, dataset, state, train_step, eval_step


def _train_batch(dataset, step, batch_size=8):
  return data.train_batch(dataset.train, batch_size, 0, step)


def test_train_step_reports_applied_rate(small_setup):
  config, dataset, state, train_step, _ = small_setup
  learning_rate_fn = training.create_learning_rate_fn(config, config.depth)
  rates = []
  for step in range(3):
    state, metrics = train_step(state, _train_batch(dataset, step), dataset.mean, None)
    rates.append(float(metrics["learning_rate"]))
    assert bool(metrics["finite"])
    assert 0.0 <= float(metrics["error"]) <= 1.0
    assert float(metrics["grad_norm"]) > 0.0
  assert rates == pytest.approx([0.01, 0.01, 0.1], rel=1e-6)
  assert rates == pytest.approx([float(learning_rate_fn(s)) for s in range(3)])
  assert int(state.step) == 3
  param_norm = float(jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(state.params))))
  assert float(metrics["param_norm"]) == pytest.approx(param_norm, rel=1e-5)


def test_train_step_keeps_state_on_nan_loss(small_setup):
  _, dataset, state, train_step, _ = small_setup
  before = jax.device_get(state)
  nan_mean = np.full_like(dataset.mean, np.nan)
  after, metrics = train_step(state, _train_batch(dataset, 0), nan_mean, None)
  assert not bool(metrics["finite"])
  assert np.isnan(float(metrics["loss"]))
  assert int(after.step) == 0
  for expected, actual in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(after))):
    np.testing.assert_array_equal(actual, expected)


def test_eval_step_counts_exactly_with_padding(small_setup):
  _, dataset, state, _, eval_step = small_setup
  test = dataset.test  # 20 examples in batches of 8: the last batch has 4 padding rows.
  totals = {"loss_sum": 0.0, "error_count": 0, "count": 0}
  for batch in data.eval_batches(test, 8):
    sums = eval_step(state, batch, dataset.mean, None)
    for key in totals:
      totals[key] += sums[key].item()

  images = data.preprocess_eval(test.images, dataset.mean, None)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  logits = state.apply_fn(variables, images, train=False)
  expected_errors = int(jnp.sum(jnp.argmax(logits, -1) != test.labels))
  log_probs = jax.nn.log_softmax(logits)
  expected_loss = -float(jnp.sum(log_probs[jnp.arange(len(test)), test.labels]))
  assert totals["count"] == len(test)
  assert totals["error_count"] == expected_errors
  assert totals["loss_sum"] == pytest.approx(expected_loss, rel=1e-5)


# Model construction.


def test_build_model_follows_config():
  plain = training.build_model(training_helpers.small_config(family="plain"), 4)
  assert isinstance(plain, models.CifarNet)
  assert not plain.residual
  assert plain.width == 4
  assert plain.axis_name is None
  synced = training.build_model(training_helpers.small_config(), 4, axis_name="devices")
  assert synced.residual
  assert synced.axis_name == "devices"
  imagenet = training.build_model(training_helpers.small_config(arch="imagenet", depth=18), 10)
  assert isinstance(imagenet, models.ImageNetNet)
  with pytest.raises(ValueError, match="family"):
    training.build_model(training_helpers.small_config(family="highway"), 4)


# The run loop.


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """One run of 6 steps that logs every 2, evaluates and saves every 3 steps."""
  workdir = tmp_path_factory.mktemp("run")
  config = training_helpers.small_config()
  dataset = training_helpers.synthetic_dataset()
  result = training.train_and_evaluate(config, dataset, workdir)
  return config, dataset, workdir, result


def test_run_result_fields(finished_run):
  _, _, _, result = finished_run
  assert result["family"] == "residual"
  assert result["depth"] == 8
  assert result["steps"] == 6
  assert result["params"] > 0
  assert result["diverged"] is False
  assert result["diverged_step"] is None
  for key in ("train_error", "val_error", "test_error"):
    assert 0.0 <= result[key] <= 1.0, key
  assert result["learning_rate"] == pytest.approx(0.01)  # Decayed at step 4.
  assert result["grad_norm"] > 0.0
  assert result["param_norm"] > 0.0
  assert result["examples_per_second"] > 0.0
  assert result["wall_seconds"] > 0.0
  assert result["checkpoint_step"] == 6


def test_run_history_records(finished_run):
  _, _, workdir, result = finished_run
  records = training.read_history(workdir / "history.jsonl")
  train_steps = [r["step"] for r in records if r["kind"] == "train"]
  eval_records = [r for r in records if r["kind"] == "eval"]
  assert train_steps == [2, 4, 6]
  assert [r["step"] for r in eval_records] == [3, 6]
  assert eval_records[-1]["train_error"] == result["train_error"]
  assert eval_records[-1]["test_error"] == result["test_error"]
  assert records[-2]["learning_rate"] == pytest.approx(0.01)
  assert os.listdir(workdir / "tensorboard")
  assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]


def _saved_error_on(config, dataset, workdir, size: int) -> float:
  """Error of the run's newest checkpoint, in eval mode, on `size` fixed training examples."""
  template = training.create_train_state(jax.random.key(0), training.build_model(config, 4),
                                         config, dataset.image_shape)
  manager = training.create_checkpoint_manager(workdir / "checkpoints", 2)
  state, _ = training.restore_checkpoint(manager, jax.device_get(template), config)
  manager.close()
  subset = data.fixed_subset(dataset.train, size, config.seed)
  images = data.preprocess_eval(subset.images, dataset.mean, None)
  logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, images,
                          train=False)
  return int(jnp.sum(jnp.argmax(logits, -1) != subset.labels)) / len(subset)


def test_train_error_uses_eval_mode_subset(finished_run):
  config, dataset, workdir, result = finished_run
  assert result["train_examples"] == config.train_eval_size
  assert result["train_error"] == _saved_error_on(config, dataset, workdir,
                                                  config.train_eval_size)


def test_final_train_error_on_larger_subset(tmp_path):
  config = training_helpers.small_config(train_eval_size=16, final_train_eval_size=40)
  dataset = training_helpers.synthetic_dataset()
  result = training.train_and_evaluate(config, dataset, tmp_path)
  evaluations = [r for r in training.read_history(tmp_path / "history.jsonl")
                 if r["kind"] == "eval"]
  assert [(r["step"], r["train_examples"]) for r in evaluations] == [(3, 16), (6, 40)]
  assert [r["test_examples"] for r in evaluations] == [20, 20]
  assert result["train_examples"] == 40
  assert result["train_error"] == _saved_error_on(config, dataset, tmp_path, 40)
  again = training.train_and_evaluate(config, dataset, tmp_path)
  assert (again["train_examples"], again["train_error"]) == (40, result["train_error"])


def test_finished_run_returns_without_training(finished_run):
  config, dataset, workdir, result = finished_run
  history_before = (workdir / "history.jsonl").read_text()
  again = training.train_and_evaluate(config, dataset, workdir)
  assert again["resumed_from_step"] == 6
  assert again["steps"] == 6
  for key in ("train_error", "val_error", "test_error", "learning_rate", "param_norm"):
    assert again[key] == result[key], key
  assert (workdir / "history.jsonl").read_text() == history_before


def test_nan_marks_run_diverged(tmp_path):
  config = training_helpers.small_config(learning_rate=1e6, num_steps=40, checkpoint_every=1,
                                         log_every=1, eval_every=100)
  result = training.train_and_evaluate(config, training_helpers.synthetic_dataset(), tmp_path)
  assert result["diverged"] is True
  step = result["diverged_step"]
  assert 0 < step < 40
  assert result["steps"] == step
  assert result["test_error"] is None
  assert result["checkpoint_step"] == step
  records = training.read_history(tmp_path / "history.jsonl")
  assert records[-1]["kind"] == "diverged"
  assert records[-1]["step"] == step
  assert max(int(name) for name in os.listdir(tmp_path / "checkpoints")) == step


def test_train_step_compiles_once_per_run(tmp_path):
  compiled = []

  def record(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      compiled.append(kwargs.get("fun_name"))

  jax.monitoring.register_event_duration_secs_listener(record)
  try:
    # 24 training examples in batches of 8: steps 3, 6 and 9 start new epochs.
    config = training_helpers.small_config(num_steps=10, eval_every=4, checkpoint_every=5)
    dataset = training_helpers.synthetic_dataset(num_train=24)
    training.train_and_evaluate(config, dataset, tmp_path)
  finally:
    jax.monitoring.unregister_event_duration_listener(record)
  assert compiled.count("jit(train_step)") == 1, compiled
  assert compiled.count("jit(eval_step)") == 1, compiled


def test_invalid_eval_batch_size_raises(tmp_path):
  config = training_helpers.small_config(eval_batch_size=0)
  with pytest.raises(ValueError, match="eval_batch_size"):
    training.train_and_evaluate(config, training_helpers.synthetic_dataset(), tmp_path)


def test_streamed_dataset_run(tmp_path):
  # A stand-in for ImageNet: examples of varied sizes that the host crops to 224x224.
  rng = np.random.default_rng(0)

  def examples(count):
    return [{"image": rng.integers(0, 256, (int(rng.integers(30, 60)), 48, 3), dtype=np.uint8),
             "label": int(rng.integers(0, 4))} for _ in range(count)]

  dataset = data.StreamedDataset(name="streamed", train=examples(16), test=examples(6),
                                 num_classes=4, mean=np.full((1, 1, 3), 0.5, np.float32),
                                 std=None, flip=True, source="in-memory examples")
  config = training_helpers.small_config(num_steps=2, batch_size=4, eval_batch_size=4,
                                         train_eval_size=5, eval_every=2, checkpoint_every=2)
  config.final_train_eval_size = 7
  result = training.train_and_evaluate(config, dataset, tmp_path)
  assert result["steps"] == 2
  assert result["val_error"] is None
  assert result["train_examples"] == 7
  assert result["train_error"] in [k / 7 for k in range(8)]
  assert result["test_error"] in [k / 6 for k in range(7)]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(os.path.join(data.DEBIAN_FASHION_MNIST_DIR,
                                                    "train-images-idx3-ubyte.gz")),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_run(tmp_path):
  config = training_helpers.small_config(
      dataset="fashion_mnist", data_source="idx", validation_size=1000, augment_pad=4,
      batch_size=32, num_steps=4, train_eval_size=500, eval_batch_size=500, eval_every=4,
      checkpoint_every=4)
  dataset = data.load_from_config(config)
  result = training.train_and_evaluate(config, dataset, tmp_path)
  assert result["diverged"] is False
  assert 0.0 <= result["train_error"] <= 1.0
  assert 0.0 <= result["val_error"] <= 1.0
  assert 0.0 <= result["test_error"] <= 1.0
  records = training.read_history(tmp_path / "history.jsonl")
  assert records[-1]["kind"] == "eval"
