"""Tests of benchmarks/torch_reference.py: the PyTorch nets match resflax's CifarNet in parameter
counts, shapes and outputs, and the benchmark returns its fields."""

import json

import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import traverse_util  # noqa: E402

from benchmarks import torch_reference  # noqa: E402
from resflax import models  # noqa: E402
from resflax.models import CifarNet  # noqa: E402

FAMILIES = ("plain", "residual")
BATCH_NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
BENCHMARK_KEYS = (
    "examples_per_second",
    "window_examples_per_second",
    "params",
    "threads",
    "torch_version",
    "first_step_seconds",
)


def resflax_params(depth: int, residual: bool, width: int) -> dict:
  """Return the shapes of resflax's unrolled `params` without computing anything."""
  model = CifarNet(depth, residual=residual, width=width, scan_blocks=False)
  images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), images)["params"]


def torch_name(flax_path: tuple[str, ...]) -> str:
  """Map a flax parameter path, such as ('stage1', 'block1', 'bn1', 'scale'), to a torch name."""
  *modules, leaf = flax_path
  prefix = ["stages"] if modules[0].startswith("stage") else []
  torch_leaf = "bias" if leaf == "bias" else "weight"
  return ".".join(prefix + modules + [torch_leaf])


def torch_layout(flax_path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  """Transpose a flax kernel to torch's layout: HWIO to OIHW for convs, (in, out) to (out, in)."""
  if flax_path[-1] != "kernel":
    return value
  if value.ndim == 4:
    return np.transpose(value, (3, 2, 0, 1))
  return value.T


@pytest.mark.parametrize(
    "depth, width", [(8, 4), (8, 16), (14, 4), (20, 4), (20, 16), (32, 4)]
)
@pytest.mark.parametrize("family", FAMILIES)
def test_param_count_matches_resflax(family, depth, width):
  model = torch_reference.build_model(family, depth, width=width)
  expected = models.count_params(resflax_params(depth, family == "residual", width))
  assert torch_reference.count_params(model) == expected


def test_resnet20_param_count():
  # resflax's count for ResNet-20 with option-A shortcuts, as in tests/test_models.py.
  model = torch_reference.build_model("residual", 20)
  assert torch_reference.count_params(model) == 269_722


@pytest.mark.parametrize("family", FAMILIES)
def test_param_shapes_match_resflax(family):
  params = resflax_params(8, family == "residual", 4)
  model = torch_reference.build_model(family, 8, width=4)
  torch_shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}

  flat = traverse_util.flatten_dict(params)
  expected = {
      torch_name(path): torch_layout(path, np.zeros(leaf.shape)).shape
      for path, leaf in flat.items()
  }
  assert torch_shapes == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_resflax(family):
  flax_model = CifarNet(8, residual=family == "residual", width=4, scan_blocks=False)
  images = np.random.default_rng(1).standard_normal((4, 8, 8, 3), dtype=np.float32)
  # Random values for every parameter, BatchNorm scales and offsets included, so that a wrong
  # channel order cannot hide behind 1 and 0. eval_shape skips the eager init, which compiles
  # one random op per shape and takes seconds on CPU.
  shapes = jax.eval_shape(flax_model.init, jax.random.key(0), images)
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda leaf: rng.standard_normal(leaf.shape, dtype=np.float32), shapes["params"]
  )
  # Train mode normalises with batch statistics, so the running averages only need shapes.
  batch_stats = jax.tree.map(lambda leaf: np.zeros(leaf.shape, np.float32), shapes["batch_stats"])
  expected, _ = flax_model.apply(
      {"params": params, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"]
  )

  model = torch_reference.build_model(family, 8, width=4)
  state = {
      torch_name(path): torch.from_numpy(np.ascontiguousarray(torch_layout(path, leaf)))
      for path, leaf in traverse_util.flatten_dict(params).items()
  }
  # The state contains parameters only, so just the BatchNorm buffers may be missing.
  missing, unexpected = model.load_state_dict(state, strict=False)
  assert unexpected == []
  assert all(name.split(".")[-1] in BATCH_NORM_BUFFERS for name in missing)
  with torch.no_grad():
    logits = model(torch.from_numpy(images).permute(0, 3, 1, 2))

  np.testing.assert_allclose(logits.numpy(), np.asarray(expected), rtol=1e-4, atol=1e-4)


def test_forward_logits_shape():
  model = torch_reference.build_model("residual", 8, width=4)
  with torch.no_grad():
    logits = model(torch.randn(2, 3, 8, 8))
  assert logits.shape == (2, 10)
  assert logits.dtype == torch.float32


def test_channels_last_matches_contiguous():
  model = torch_reference.build_model("residual", 8, width=4).eval()
  images = torch.randn(2, 3, 8, 8)
  with torch.no_grad():
    contiguous = model(images)
    model = model.to(memory_format=torch.channels_last)
    channels_last = model(images.to(memory_format=torch.channels_last))
  assert channels_last.shape == (2, 10)
  torch.testing.assert_close(channels_last, contiguous, rtol=1e-5, atol=1e-5)


def test_residual_shortcuts_have_no_params():
  model = torch_reference.build_model("residual", 14, width=4)
  blocks = [m for m in model.modules() if isinstance(m, torch_reference.BasicBlock)]
  assert len(blocks) == 6
  for block in blocks:
    assert block.shortcut is not None
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0

  padded = [m for m in model.modules() if isinstance(m, torch_reference.PadShortcut)]
  assert len(padded) == 2
  plain = torch_reference.build_model("plain", 14, width=4)
  assert torch_reference.count_params(model) == torch_reference.count_params(plain)


def test_plain_blocks_have_no_shortcut():
  model = torch_reference.build_model("plain", 8, width=4)
  blocks = [m for m in model.modules() if isinstance(m, torch_reference.BasicBlock)]
  assert len(blocks) == 3
  assert all(block.shortcut is None for block in blocks)


def test_pad_shortcut_subsamples_and_appends_zeros():
  x = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 2, 4, 4)
  y = torch_reference.PadShortcut(out_channels=4, stride=2)(x)
  assert y.shape == (2, 4, 2, 2)
  torch.testing.assert_close(y[:, :2], x[:, :, ::2, ::2])
  assert torch.count_nonzero(y[:, 2:]) == 0


@pytest.mark.parametrize("depth", [21, 2, 0, 8.0, True])
def test_invalid_depth_raises(depth):
  with pytest.raises(ValueError, match="invalid CIFAR depth"):
    torch_reference.build_model("residual", depth)


def test_unknown_family_raises():
  with pytest.raises(ValueError, match="invalid family 'dense'"):
    torch_reference.build_model("dense", 20)


def test_invalid_width_raises():
  with pytest.raises(ValueError, match="invalid width 0"):
    torch_reference.build_model("residual", 8, width=0)


@pytest.fixture
def restore_threads():
  """Restore torch's intra-op thread count, which the benchmark sets for the whole process."""
  previous_threads = torch.get_num_threads()
  yield
  torch.set_num_threads(previous_threads)


# The benchmark tests run one thread, because extra threads on busy cores can slow a step by
# orders of magnitude.


def test_benchmark_train_step_fields(restore_threads):
  result = torch_reference.benchmark_train_step(
      "residual", 8, batch_size=8, width=4, warmup_steps=1, windows=1, steps_per_window=1,
      threads=1,
  )
  for key in BENCHMARK_KEYS:
    assert key in result
  assert result["examples_per_second"] > 0
  assert len(result["window_examples_per_second"]) == 1
  assert result["window_examples_per_second"][0] > 0
  assert result["first_step_seconds"] > 0
  assert result["threads"] == 1
  assert result["torch_version"] == torch.__version__
  expected = torch_reference.count_params(torch_reference.build_model("residual", 8, width=4))
  assert result["params"] == expected


def test_train_step_closure_info(restore_threads):
  step, info = torch_reference.train_step_closure(
      "plain", 8, batch_size=4, image_size=8, width=4, threads=1
  )
  assert step() is None
  assert step() is None
  expected = torch_reference.count_params(torch_reference.build_model("plain", 8, width=4))
  assert info["params"] == expected
  assert info["threads"] == 1
  assert info["torch_version"] == torch.__version__
  assert info["device"] == "cpu"


def test_benchmark_rejects_zero_windows():
  with pytest.raises(ValueError, match="invalid windows 0"):
    torch_reference.benchmark_train_step("residual", 8, batch_size=2, width=4, windows=0)


def test_main_prints_one_json_line(capsys, restore_threads):
  torch_reference.main([
      "--family", "plain", "--depth", "8", "--width", "4", "--batch_size", "4",
      "--image_size", "8", "--warmup_steps", "1", "--windows", "1", "--steps_per_window", "1",
      "--threads", "1",
  ])
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1
  result = json.loads(lines[0])
  assert result["family"] == "plain"
  assert result["depth"] == 8
  assert result["examples_per_second"] > 0
  assert result["threads"] == 1
