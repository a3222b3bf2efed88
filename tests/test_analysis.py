"""Tests of resflax.analysis: deepening with identity blocks, layer responses, gradient flow,
figures, and `python -m resflax.analyze` on a tiny sweep made by train.py."""

import json
import pathlib
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resflax import analysis
from resflax import data
from resflax import models
from resflax.analysis import deepening
from resflax.analysis import gradients
from resflax.analysis import identity
from resflax.analysis import networks
from resflax.analysis import plots
from resflax.analysis import responses
from resflax.analysis import runs
from resflax.models.layers import pad_shortcut

import training_helpers

REPO = pathlib.Path(__file__).resolve().parents[1]
IMAGE_SHAPE = (8, 8, 3)
NUM_CLASSES = 4

ANALYSIS_BATCH = "--batch_size=32"
OUTPUT_NAMES = ("layer_responses", "gradient_norms", "gradient_correlation", "identity")


def tiny_config(**overrides):
  return training_helpers.small_config(**overrides)


def random_variables(config, seed=0):
  """Return variables of the config's net with every leaf drawn at random.

  Random BatchNorm statistics, scales and biases make a stronger test of the identity
  construction than a freshly initialised net, where most of them are 0 or 1.
  """
  model = networks.unrolled_model(config, NUM_CLASSES)
  abstract = networks.abstract_variables(model, IMAGE_SHAPE)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = np.prod(leaf.shape[:-1])
      return rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape).astype(np.float32)
    if name in ("scale", "var"):
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    return rng.normal(0.0, 0.3, leaf.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, abstract)


def sample_images(batch=6, seed=1):
  return jax.random.normal(jax.random.key(seed), (batch, *IMAGE_SHAPE))


def eval_logits(config, variables, images):
  model = networks.unrolled_model(config, NUM_CLASSES)
  return np.asarray(model.apply(variables, images, train=False))


def deepened_logits(config, depth):
  """Return (shallow logits, deepened logits) of a random net of `config` deepened to `depth`."""
  target = deepening.deepened_config(config, depth)
  variables = random_variables(config)
  deepened = analysis.deepen(variables, config, target)
  images = sample_images()
  return eval_logits(config, variables, images), eval_logits(target, deepened, images)


# Deepening.


def test_deepen_plain_keeps_logits():
  shallow, deep = deepened_logits(tiny_config(family="plain"), 20)
  np.testing.assert_allclose(deep, shallow, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
def test_deepen_residual_keeps_logits(shortcut):
  shallow, deep = deepened_logits(tiny_config(family="residual", shortcut=shortcut), 20)
  np.testing.assert_allclose(deep, shallow, rtol=1e-5, atol=1e-6)


def test_deepen_preactivation_keeps_logits():
  config = tiny_config(family="residual", preactivation=True)
  shallow, deep = deepened_logits(config, 14)
  np.testing.assert_allclose(deep, shallow, rtol=1e-5, atol=1e-6)


def test_deepen_logits_not_constant():
  shallow, _ = deepened_logits(tiny_config(family="plain"), 14)
  assert np.ptp(shallow) > 1e-2


def test_deepen_gives_target_structure():
  config = tiny_config(family="residual", shortcut="B")
  target = deepening.deepened_config(config, 20)
  deepened = analysis.deepen(random_variables(config), config, target)
  expected = networks.abstract_variables(networks.unrolled_model(target, NUM_CLASSES),
                                         IMAGE_SHAPE)
  assert networks.describe_mismatch(deepened, expected) is None


def test_deepen_keeps_shallow_blocks():
  config = tiny_config(family="plain")
  variables = random_variables(config)
  deepened = analysis.deepen(variables, config, deepening.deepened_config(config, 14))
  np.testing.assert_array_equal(deepened["params"]["stage2"]["block1"]["conv1"]["kernel"],
                                variables["params"]["stage2"]["block1"]["conv1"]["kernel"])


def test_deepened_residual_branches_are_zero():
  config = tiny_config(family="residual")
  target = deepening.deepened_config(config, 14)
  deepened = analysis.deepen(random_variables(config), config, target)
  model = networks.unrolled_model(target, NUM_CLASSES)
  stds = dict(responses.response_stds(model, deepened, sample_images())["residuals"])
  added = [path for path in stds if path.endswith("block2")]
  assert len(added) == 3
  assert all(stds[path] == 0.0 for path in added), stds
  assert stds["stage1/block1"] > 0.0


def test_deepen_accepts_scanned_layout():
  config = tiny_config(family="residual", depth=14)
  variables = random_variables(config)
  target = deepening.deepened_config(config, 20)
  scanned = analysis.deepen(models.stack_blocks(variables), config, target)
  unrolled = analysis.deepen(variables, config, target)
  np.testing.assert_array_equal(scanned["params"]["stage3"]["block2"]["conv2"]["kernel"],
                                unrolled["params"]["stage3"]["block2"]["conv2"]["kernel"])


def test_deepen_rejects_other_width():
  config = tiny_config(family="plain")
  target = deepening.deepened_config(tiny_config(family="plain", width=8), 14)
  with pytest.raises(ValueError, match="width is 4 in the shallow net and 8 in the target"):
    analysis.deepen(random_variables(config), config, target)


def test_deepen_rejects_other_family():
  config = tiny_config(family="plain")
  target = deepening.deepened_config(tiny_config(family="residual"), 14)
  with pytest.raises(ValueError, match="family is 'plain' in the shallow net"):
    analysis.deepen(random_variables(config), config, target)


def test_deepen_rejects_variables_of_other_width():
  variables = random_variables(tiny_config(family="plain", width=8))
  config = tiny_config(family="plain")
  with pytest.raises(ValueError, match="do not fit plain-8 of width 4"):
    analysis.deepen(variables, config, deepening.deepened_config(config, 14))


def test_deepen_rejects_shallower_target():
  config = tiny_config(family="plain", depth=14)
  with pytest.raises(ValueError, match="smaller than"):
    analysis.deepen(random_variables(config), config, deepening.deepened_config(config, 8))


def test_deepen_rejects_preactivation_plain():
  config = tiny_config(family="plain", preactivation=True)
  with pytest.raises(ValueError, match="pre-activation plain block"):
    deepening.check_deepenable(config, deepening.deepened_config(config, 14))


def test_deepen_rejects_imagenet():
  config = tiny_config(arch="imagenet", depth=18)
  with pytest.raises(ValueError, match="CIFAR nets"):
    deepening.check_deepenable(config, deepening.deepened_config(config, 34))


def test_dirac_kernel_is_identity():
  kernel = deepening.dirac_kernel((3, 3, 4, 4))
  x = np.asarray(sample_images(batch=2)[..., :1].repeat(4, axis=-1))
  y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_array_equal(np.asarray(y), x)


def test_pass_through_norm_is_identity():
  params, stats = deepening.pass_through_norm(4, 1e-5)
  norm = nn.BatchNorm(use_running_average=True, epsilon=1e-5)
  x = np.asarray(sample_images(batch=2)[..., :1].repeat(4, axis=-1))
  y = norm.apply({"params": params, "batch_stats": stats}, x)
  np.testing.assert_array_equal(np.asarray(y), x)


# Layer responses.


def expected_layer_paths(blocks_per_stage):
  paths = ["stem_bn"]
  for stage in range(1, 4):
    for block in range(1, blocks_per_stage + 1):
      paths += [f"stage{stage}/block{block}/bn1", f"stage{stage}/block{block}/bn2"]
  return paths


def test_responses_one_per_layer_in_order():
  config = tiny_config(family="plain", depth=14)
  model = networks.unrolled_model(config, NUM_CLASSES)
  measured = responses.response_stds(model, random_variables(config), sample_images())
  assert [path for path, _ in measured["layers"]] == expected_layer_paths(2)


def test_responses_finite_and_positive():
  config = tiny_config(family="residual", depth=14)
  model = networks.unrolled_model(config, NUM_CLASSES)
  measured = responses.response_stds(model, random_variables(config), sample_images())
  stds = np.array([std for _, std in measured["layers"] + measured["residuals"]])
  assert np.all(np.isfinite(stds))
  assert np.all(stds > 0)


def test_residual_responses_one_per_block():
  config = tiny_config(family="residual", depth=14)
  model = networks.unrolled_model(config, NUM_CLASSES)
  measured = responses.response_stds(model, random_variables(config), sample_images())
  assert [path for path, _ in measured["residuals"]] == [
      f"stage{stage}/block{block}" for stage in range(1, 4) for block in (1, 2)]


def test_plain_net_has_no_residual_responses():
  config = tiny_config(family="plain")
  model = networks.unrolled_model(config, NUM_CLASSES)
  measured = responses.response_stds(model, random_variables(config), sample_images())
  assert measured["residuals"] == []


def test_channel_std_averages_channels():
  values = np.stack([np.array([0.0, 2.0] * 8), np.array([5.0] * 16)], axis=-1)
  assert float(responses.channel_std(values)) == pytest.approx(0.5)


def test_sorted_by_magnitude_descends():
  assert responses.sorted_by_magnitude([0.2, 0.9, 0.5]) == [0.9, 0.5, 0.2]


# Gradient flow.


def expected_weighted_paths(blocks_per_stage):
  paths = ["stem_conv"]
  for stage in range(1, 4):
    for block in range(1, blocks_per_stage + 1):
      paths += [f"stage{stage}/block{block}/conv1", f"stage{stage}/block{block}/conv2"]
  return paths + ["head"]


def labels(batch=6):
  return jnp.arange(batch, dtype=jnp.int32) % NUM_CLASSES


def test_gradient_norms_one_per_layer_in_order():
  config = tiny_config(family="plain", depth=14)
  model = networks.unrolled_model(config, NUM_CLASSES)
  norms = gradients.layer_gradient_norms(model, random_variables(config), sample_images(),
                                         labels())
  assert [path for path, _ in norms] == expected_weighted_paths(2)


def test_gradient_norms_finite_and_positive():
  config = tiny_config(family="residual", depth=14)
  model = networks.unrolled_model(config, NUM_CLASSES)
  norms = np.array([norm for _, norm in gradients.layer_gradient_norms(
      model, random_variables(config), sample_images(), labels())])
  assert np.all(np.isfinite(norms))
  assert np.all(norms > 0)


def test_gradient_norms_skip_projections():
  config = tiny_config(family="residual", shortcut="C")
  model = networks.unrolled_model(config, NUM_CLASSES)
  norms = gradients.layer_gradient_norms(model, random_variables(config), sample_images(),
                                         labels())
  assert len(norms) == config.depth


def test_weighted_layers_order_past_nine_blocks():
  params = {"stage1": {f"block{n}": {"conv1": {"kernel": 0}} for n in (10, 9, 1)}}
  assert [path for path, _ in gradients.weighted_layers(params)] == [
      "stage1/block1/conv1", "stage1/block9/conv1", "stage1/block10/conv1"]


def test_neighbour_correlation_of_scaled_gradients():
  base = np.random.default_rng(0).normal(size=(1, 8, 8, 3))
  assert gradients.neighbour_correlation(np.concatenate([base, 2 * base, 3 * base])) == (
      pytest.approx(1.0))


def test_neighbour_correlation_of_alternating_gradients():
  base = np.random.default_rng(0).normal(size=(1, 8, 8, 3))
  assert gradients.neighbour_correlation(np.concatenate([base, -base, base])) == (
      pytest.approx(-1.0))


def test_neighbour_correlation_of_constant_gradients():
  assert gradients.neighbour_correlation(np.ones((3, 4, 4, 1))) is None


def test_line_inputs_span_segment():
  start, end = np.zeros(IMAGE_SHAPE, np.float32), np.ones(IMAGE_SHAPE, np.float32)
  points = gradients.line_inputs(start, end, 5)
  np.testing.assert_allclose(points[:, 0, 0, 0], [0.0, 0.25, 0.5, 0.75, 1.0])


def test_gradient_correlation_is_a_correlation():
  config = tiny_config(family="plain", depth=14)
  model = networks.unrolled_model(config, NUM_CLASSES)
  images = np.asarray(sample_images(batch=4))
  correlation = gradients.gradient_correlation(model, random_variables(config), images[:2],
                                               images[2:], [0, 1], num_points=8)
  assert -1.0 <= correlation <= 1.0


# A residual net whose branches are all zero computes stem, shortcuts and head alone.


class ShortcutsOnlyNet(nn.Module):
  """The stem, the option-A shortcuts of stages 2 and 3 and the head of a CIFAR net."""

  width: int
  num_classes: int

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(self.width, (3, 3), padding=1, use_bias=False, name="stem_conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     name="stem_bn")(x)
    x = nn.relu(x)
    x = pad_shortcut(x, 2 * self.width, 2)
    x = pad_shortcut(x, 4 * self.width, 2)
    return nn.Dense(self.num_classes, name="head")(jnp.mean(x, axis=(1, 2)))


def zeroed_branches(config):
  """Return random variables of a residual net with the last BatchNorm of every branch zeroed."""
  variables = random_variables(config)
  for stage in range(1, 4):
    for block in variables["params"][f"stage{stage}"].values():
      block["bn2"]["scale"] = np.zeros_like(block["bn2"]["scale"])
      block["bn2"]["bias"] = np.zeros_like(block["bn2"]["bias"])
  return variables


def shortcuts_only_gradients(config, variables):
  model = ShortcutsOnlyNet(config.width, NUM_CLASSES)
  kept = {"params": {name: variables["params"][name] for name in ("stem_conv", "stem_bn", "head")},
          "batch_stats": {"stem_bn": variables["batch_stats"]["stem_bn"]}}
  return gradients.loss_gradients(model, kept, sample_images(), labels())


def test_zeroed_branches_respond_zero():
  config = tiny_config(family="residual", depth=14)
  model = networks.unrolled_model(config, NUM_CLASSES)
  measured = responses.response_stds(model, zeroed_branches(config), sample_images())
  assert [std for _, std in measured["residuals"]] == [0.0] * 6


def test_zeroed_branches_stem_gradient():
  config = tiny_config(family="residual", depth=14)
  variables = zeroed_branches(config)
  model = networks.unrolled_model(config, NUM_CLASSES)
  full = gradients.loss_gradients(model, variables, sample_images(), labels())
  reduced = shortcuts_only_gradients(config, variables)
  assert float(jnp.max(jnp.abs(full["stem_conv"]["kernel"]))) > 1e-4
  np.testing.assert_allclose(full["stem_conv"]["kernel"], reduced["stem_conv"]["kernel"],
                             rtol=1e-5, atol=1e-7)


def test_zeroed_branches_head_gradient():
  config = tiny_config(family="residual", depth=14)
  variables = zeroed_branches(config)
  model = networks.unrolled_model(config, NUM_CLASSES)
  full = gradients.loss_gradients(model, variables, sample_images(), labels())
  reduced = shortcuts_only_gradients(config, variables)
  np.testing.assert_allclose(full["head"]["kernel"], reduced["head"]["kernel"], rtol=1e-5,
                             atol=1e-7)


# Identity measurements.


def test_error_rate_counts_misclassified():
  dataset = training_helpers.synthetic_dataset()
  config = tiny_config(family="plain")
  model = networks.unrolled_model(config, NUM_CLASSES)
  variables = random_variables(config)
  images = data.preprocess_eval(dataset.test.images, dataset.mean, dataset.std)
  predicted = np.argmax(model.apply(variables, images, train=False), axis=-1)
  expected = np.mean(predicted != dataset.test.labels)
  assert identity.error_rate(model, variables, dataset.test, dataset.mean, dataset.std,
                             batch_size=8) == pytest.approx(expected)


@pytest.mark.slow
def test_train_deepened_starts_from_deepened(tmp_path):
  # With learning rate 0 and BatchNorm momentum 1, training changes nothing, so the trained
  # net's training error is that of the deepened net it started from.
  dataset = training_helpers.synthetic_dataset()
  config = tiny_config(family="plain", learning_rate=0.0, bn_momentum=1.0, weight_decay=0.0)
  target = deepening.deepened_config(config, 14)
  deepened = analysis.deepen(random_variables(config), config, target)
  result = analysis.train_deepened(deepened, target, dataset, tmp_path)
  model = networks.unrolled_model(target, NUM_CLASSES)
  expected = identity.error_rate(model, deepened, identity.training_subset(dataset, target),
                                 dataset.mean, dataset.std, target.eval_batch_size)
  assert result["steps"] == target.num_steps
  assert result["train_error"] == pytest.approx(expected)


# Figures.


def measured_records():
  """Return response, gradient and correlation records of two tiny random nets."""
  response_records, norm_records, correlation_records = [], [], []
  images = np.asarray(sample_images(batch=4))
  for family in ("plain", "residual"):
    config = tiny_config(family=family)
    model = networks.unrolled_model(config, NUM_CLASSES)
    variables = random_variables(config)
    net = {"family": family, "depth": config.depth, "seed": 0, "step": 6}
    measured = responses.response_stds(model, variables, images)
    response_records.append({**net, **{
        key: [{"path": path, "std": std} for path, std in pairs]
        for key, pairs in measured.items()}})
    norms = gradients.layer_gradient_norms(model, variables, images, labels(4))
    norm_records.append({**net, "layers": [{"path": p, "norm": n} for p, n in norms]})
    correlation = gradients.gradient_correlation(model, variables, images[:1], images[1:2], [0],
                                                 num_points=4)
    correlation_records.append({**net, "correlation": correlation})
  return response_records, norm_records, correlation_records


def test_figures_written(tmp_path):
  response_records, norm_records, correlation_records = measured_records()
  identity_records = [{"family": "plain", "shallow_depth": 8, "deep_depth": 14,
                       "shallow_train_error": 0.2, "deepened_train_error": 0.2,
                       "deep_train_error": 0.3, "deepened_trained_train_error": None}]
  plots.plot_layer_responses(response_records, tmp_path / "responses.png")
  plots.plot_gradient_norms(norm_records, tmp_path / "norms.png")
  plots.plot_gradient_correlation(correlation_records, tmp_path / "correlation.png")
  plots.plot_identity(identity_records, tmp_path / "identity.png")
  for name in ("responses", "norms", "correlation", "identity"):
    assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name


# Reading a sweep.


def test_read_sweep_without_results(tmp_path):
  with pytest.raises(analysis.AnalysisError, match="python train.py --workdir"):
    analysis.read_sweep(tmp_path)


def test_missing_checkpoints_named(tmp_path):
  run = runs.SweepRun("plain", 8, 0, tmp_path / "runs" / "plain-8-seed0", tiny_config(), {})
  with pytest.raises(analysis.AnalysisError, match="has no checkpoint in"):
    runs.checkpoint_steps(run)


def run_analyze(workdir, *args):
  return subprocess.run([sys.executable, "-m", "resflax.analyze", f"--workdir={workdir}", *args],
                        capture_output=True, text=True, timeout=900, cwd=REPO)


def test_cli_without_sweep_exits_with_fix(tmp_path):
  completed = run_analyze(tmp_path)
  assert completed.returncode == 2
  assert "Run `python train.py --workdir" in completed.stderr
  assert "Traceback" not in completed.stderr


def test_cli_rejects_unknown_analysis(tmp_path):
  completed = run_analyze(tmp_path, "--analyses=responses,curvature")
  assert completed.returncode == 2
  assert "invalid analyses curvature" in completed.stderr


# python -m resflax.analyze on a tiny sweep.


def file_snapshot(directory):
  return {str(path): path.stat().st_mtime_ns for path in sorted(directory.rglob("*"))}


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("sweep")
  completed = subprocess.run([sys.executable, str(REPO / "train.py"), f"--workdir={workdir}",
                              *training_helpers.TINY_SWEEP], capture_output=True, text=True, timeout=900, cwd=REPO)
  assert completed.returncode == 0, completed.stderr[-3000:]
  return workdir


@pytest.fixture(scope="module")
def analysed_sweep(tiny_sweep):
  before = file_snapshot(tiny_sweep / "runs")
  completed = run_analyze(tiny_sweep, ANALYSIS_BATCH)
  return tiny_sweep, completed, before


def read_output(workdir, name):
  return json.loads((workdir / "analysis" / f"{name}.json").read_text())["records"]


@pytest.mark.slow
def test_cli_succeeds(analysed_sweep):
  _, completed, _ = analysed_sweep
  assert completed.returncode == 0, completed.stderr[-3000:]


@pytest.mark.slow
def test_cli_writes_json_and_figures(analysed_sweep):
  workdir, _, _ = analysed_sweep
  for name in OUTPUT_NAMES:
    assert json.loads((workdir / "analysis" / f"{name}.json").read_text())["records"], name
    assert (workdir / "analysis" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name


@pytest.mark.slow
def test_cli_leaves_runs_unchanged(analysed_sweep):
  workdir, _, before = analysed_sweep
  assert file_snapshot(workdir / "runs") == before


@pytest.mark.slow
def test_cli_identity_logits_match(analysed_sweep):
  workdir, _, _ = analysed_sweep
  records = read_output(workdir, "identity")
  assert sorted(r["family"] for r in records) == ["plain", "residual"]
  for record in records:
    assert record["logits_match"], record
    assert record["max_logit_difference"] <= 1e-5 * max(record["max_abs_logit"], 1.0), record


@pytest.mark.slow
def test_cli_identity_errors_equal(analysed_sweep):
  workdir, _, _ = analysed_sweep
  for record in read_output(workdir, "identity"):
    assert record["deepened_train_error"] == record["shallow_train_error"], record
    assert record["shallow_train_error"] == record["shallow_train_error_recorded"], record


@pytest.mark.slow
def test_cli_identity_lists_deep_run(analysed_sweep):
  workdir, _, _ = analysed_sweep
  results = {(r["family"], r["depth"]): r for r in
             map(json.loads, (workdir / "results.jsonl").read_text().splitlines())}
  for record in read_output(workdir, "identity"):
    assert (record["shallow_depth"], record["deep_depth"]) == (8, 14)
    assert record["deep_train_error"] == results[(record["family"], 14)]["train_error"]


@pytest.mark.slow
def test_cli_responses_per_layer(analysed_sweep):
  workdir, _, _ = analysed_sweep
  records = read_output(workdir, "layer_responses")
  assert sorted((r["family"], r["depth"], r["step"]) for r in records) == sorted(
      (family, depth, step) for family in ("plain", "residual") for depth in (8, 14)
      for step in (0, 6))
  for record in records:
    assert len(record["layers"]) == record["depth"] - 1, record["depth"]
    assert all(np.isfinite(layer["std"]) for layer in record["layers"])


@pytest.mark.slow
def test_cli_gradients_per_step(analysed_sweep):
  workdir, _, _ = analysed_sweep
  records = read_output(workdir, "gradient_norms")
  assert sorted({r["step"] for r in records}) == [0, 3, 6]
  for record in records:
    assert len(record["layers"]) == record["depth"], record["depth"]
    assert all(np.isfinite(layer["norm"]) for layer in record["layers"])


@pytest.mark.slow
def test_cli_prints_identity_table(analysed_sweep):
  _, completed, _ = analysed_sweep
  assert "| plain | 8 -> 14 |" in completed.stdout
  assert "| residual | 8 -> 14 |" in completed.stdout


@pytest.mark.slow
@pytest.mark.parametrize("family", ["plain", "residual"])
def test_deepen_trained_checkpoint_to_20(tiny_sweep, family):
  run = next(r for r in analysis.read_sweep(tiny_sweep) if (r.family, r.depth) == (family, 8))
  _, variables = analysis.load_variables(run)
  target = deepening.deepened_config(run.config, 20)
  deepened = analysis.deepen(variables, run.config, target)
  images = jax.random.normal(jax.random.key(2), (8, 28, 28, 1))
  shallow = networks.unrolled_model(run.config, 10).apply(variables, images, train=False)
  deep = networks.unrolled_model(target, 10).apply(deepened, images, train=False)
  np.testing.assert_allclose(deep, shallow, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_cli_runs_one_analysis(tiny_sweep, tmp_path):
  workdir = tmp_path / "sweep"
  shutil.copytree(tiny_sweep, workdir, ignore=shutil.ignore_patterns("analysis"))
  completed = run_analyze(workdir, ANALYSIS_BATCH, "--analyses=identity")
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert sorted(path.name for path in (workdir / "analysis").iterdir()) == [
      "identity.json", "identity.png"]


@pytest.mark.slow
def test_cli_missing_gradient_step(tiny_sweep):
  completed = run_analyze(tiny_sweep, ANALYSIS_BATCH, "--analyses=gradients", "--gradient_steps=4")
  assert completed.returncode == 2
  assert "no checkpoint of step 4. Its checkpoints are of steps 3, 6" in completed.stderr
