"""Tests of resflax.models: parameter counts, shapes, the identity property of residual blocks,
scanned and unrolled layouts, options and the name registry."""

import functools
import itertools
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resflax import models
from resflax.models import (
    BasicBlock,
    BatchNorm,
    BottleneckBlock,
    CifarNet,
    ImageNetNet,
    PreActBasicBlock,
    PreActBottleneckBlock,
)
from resflax.models.layers import pad_shortcut

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CIFAR_COUNTS = {
    20: 269_722,
    32: 464_154,
    44: 658_586,
    56: 853_018,
    110: 1_727_962,
    1202: 19_421_274,
}
IMAGENET_COUNTS = {
    18: 11_689_512,
    34: 21_797_672,
    50: 25_557_032,
    101: 44_549_160,
    152: 60_192_808,
}
CIFAR_DEPTHS = (8, 14, 20, 32, 44, 56, 110, 1202)


def abstract_variables(model: nn.Module, size: int = 32, batch: int = 1):
  """Return the shapes of `model.init` without computing anything."""
  images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), images)


def abstract_intermediates(model: nn.Module, size: int = 32, batch: int = 1):
  """Return the shapes of the `intermediates` collection of an eval-mode apply."""
  images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)

  def init_and_apply(images):
    variables = model.init(jax.random.key(0), images)
    _, state = model.apply(variables, images, mutable=["intermediates"])
    return state["intermediates"]

  return jax.eval_shape(init_and_apply, images)


def images(size: int = 8, batch: int = 2, seed: int = 1, channels: int = 3) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), (batch, size, size, channels))


def fast_scan(depth: int) -> bool | None:
  """Scan only depth 1202, whose unrolled trace takes seconds; the others use the default."""
  return True if depth > 200 else None


def path_names(path) -> list[str]:
  return [str(getattr(entry, "key", getattr(entry, "idx", entry))) for entry in path]


def module_count(params, name: str) -> int:
  """Count the modules called `name` in an unrolled parameter tree."""
  paths = jax.tree_util.tree_flatten_with_path(params)[0]
  return len({tuple(path_names(path)[:-1]) for path, _ in paths if path_names(path)[-2] == name})


# The tiny nets below run op by op without jit: on CPU, compiling a whole net takes longer than
# running it, while the compiled single ops are cached across layers and tests.


def init(model: nn.Module, x: jax.Array):
  return model.init(jax.random.key(0), x)


def run(model: nn.Module, variables, x: jax.Array, train: bool = False, mutable=()):
  """Apply a net; return logits, or (logits, state) when `mutable` names collections."""
  return model.apply(variables, x, train=train, mutable=list(mutable) or False)


def apply(model, variables, x, train: bool):
  """Apply in eval mode, or in train mode with batch_stats updated; return the logits."""
  if not train:
    return run(model, variables, x)
  logits, _ = run(model, variables, x, train=True, mutable=["batch_stats"])
  return logits


def apply_block(block, variables, x, train: bool):
  """Apply a block, whose mode comes from its norm partial; return the output."""
  if not train:
    return block.apply(variables, x)
  output, _ = block.apply(variables, x, mutable=["batch_stats"])
  return output


def block_norm(train: bool):
  return functools.partial(BatchNorm, use_running_average=not train)


def block_conv():
  return functools.partial(nn.Conv, use_bias=False, kernel_init=models.conv_kernel_init)


def set_leaves(variables, select, make):
  """Replace the params leaves for which `select(names)` is true by `make(leaf, index)`."""
  counter = itertools.count()

  def replace(path, leaf):
    names = path_names(path)
    if names[0] == "params" and select(names[1:]):
      return make(leaf, next(counter))
    return leaf

  return jax.tree_util.tree_map_with_path(replace, variables)


def zero_last_norm(variables, last_norm: str):
  """Zero scale and bias of the BatchNorm `last_norm` in every block."""
  return set_leaves(variables, lambda names: last_norm in names, lambda leaf, _: jnp.zeros_like(leaf))


def randomise_kernels(variables, select):
  def random_like(leaf, index):
    return jax.random.normal(jax.random.key(100 + index), leaf.shape, leaf.dtype)

  return set_leaves(
      variables, lambda names: names[-1] == "kernel" and select(names), random_like
  )


# Parameter counts.


@pytest.mark.parametrize("depth", sorted(CIFAR_COUNTS))
def test_cifar_resnet_count(depth):
  variables = abstract_variables(CifarNet(depth, scan_blocks=True))
  assert models.count_params(variables["params"]) == CIFAR_COUNTS[depth]


@pytest.mark.parametrize("depth", sorted(CIFAR_COUNTS))
def test_cifar_plain_count(depth):
  variables = abstract_variables(CifarNet(depth, residual=False, scan_blocks=True))
  assert models.count_params(variables["params"]) == CIFAR_COUNTS[depth]


def test_cifar_option_b_count():
  variables = abstract_variables(CifarNet(20, shortcut="B"))
  assert models.count_params(variables["params"]) == 272_474


@pytest.mark.parametrize("depth", sorted(IMAGENET_COUNTS))
def test_imagenet_resnet_count(depth):
  variables = abstract_variables(ImageNetNet(depth, shortcut="B", num_classes=1000), size=224)
  assert models.count_params(variables["params"]) == IMAGENET_COUNTS[depth]


@pytest.mark.parametrize("depth", sorted(CIFAR_COUNTS))
def test_cifar_conv_layer_count(depth):
  variables = abstract_variables(CifarNet(depth, scan_blocks=True))
  params = jax.eval_shape(models.unstack_blocks, variables["params"])
  kernels = [leaf for leaf in jax.tree.leaves(params) if leaf.ndim == 4]
  dense_kernels = [leaf for leaf in jax.tree.leaves(params) if leaf.ndim == 2]
  assert len(kernels) == depth - 1
  assert len(dense_kernels) == 1


@pytest.mark.parametrize("shortcut, projections", [("A", 0), ("B", 2), ("C", 9)])
def test_cifar_shortcut_projections(shortcut, projections):
  variables = abstract_variables(CifarNet(20, shortcut=shortcut))
  assert module_count(variables["params"], "shortcut_conv") == projections
  assert module_count(variables["params"], "shortcut_bn") == projections


def test_option_a_adds_no_params():
  residual = abstract_variables(CifarNet(20, shortcut="A"))
  plain = abstract_variables(CifarNet(20, residual=False))
  assert jax.tree.structure(residual) == jax.tree.structure(plain)
  assert models.count_params(residual["params"]) == models.count_params(plain["params"])


def test_imagenet_option_a_adds_no_params():
  residual = abstract_variables(ImageNetNet(50, shortcut="A"), size=224)
  plain = abstract_variables(ImageNetNet(50, residual=False), size=224)
  assert models.count_params(residual["params"]) == models.count_params(plain["params"])


@pytest.mark.parametrize("depth", [56, 110])
def test_scanned_count_equals_unrolled(depth):
  unrolled = abstract_variables(CifarNet(depth, scan_blocks=False))
  scanned = abstract_variables(CifarNet(depth, scan_blocks=True))
  assert models.count_params(scanned) == models.count_params(unrolled)


def test_preactivation_count():
  variables = abstract_variables(CifarNet(20, preactivation=True))
  stem_bn, final_bn = 2 * 16, 2 * 64
  # The first bn1 of stages 2 and 3 normalises the block input, with half the channels.
  narrower_bn1 = 2 * 16 + 2 * 32
  expected = CIFAR_COUNTS[20] - stem_bn + final_bn - narrower_bn1
  assert models.count_params(variables["params"]) == expected
  assert "stem_bn" not in variables["params"]
  assert "final_bn" in variables["params"]


def test_variable_collections():
  variables = abstract_variables(CifarNet(20))
  assert set(variables) == {"params", "batch_stats"}


def test_count_params_small_tree():
  params = {"a": jnp.zeros((3, 4)), "b": {"c": jnp.zeros((5,))}}
  assert models.count_params(params) == 17


# Shapes.


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("depth", CIFAR_DEPTHS)
def test_cifar_logits_shape(depth, residual):
  model = CifarNet(depth, residual=residual, scan_blocks=fast_scan(depth))
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  logits, _ = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x), x
  )
  assert logits.shape == (2, 10)
  assert logits.dtype == jnp.float32


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("depth", sorted(IMAGENET_COUNTS))
def test_imagenet_logits_shape(depth, residual):
  model = ImageNetNet(depth, residual=residual)
  x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  logits, _ = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x), x
  )
  assert logits.shape == (2, 1000)


def test_cifar_stage_shapes():
  intermediates = abstract_intermediates(CifarNet(20), batch=2)
  for stage, (size, features) in enumerate([(32, 16), (16, 32), (8, 64)], start=1):
    for block in ("block1", "block3"):
      (residual,) = intermediates[f"stage{stage}"][block]["residual"]
      assert residual.shape == (2, size, size, features), (stage, block)


def test_imagenet_stage_shapes():
  intermediates = abstract_intermediates(ImageNetNet(50), size=224)
  expected = [(56, 256), (28, 512), (14, 1024), (7, 2048)]
  for stage, (size, features) in enumerate(expected, start=1):
    (residual,) = intermediates[f"stage{stage}"]["block1"]["residual"]
    assert residual.shape == (1, size, size, features), stage


@pytest.mark.parametrize(
    "model, size",
    [(CifarNet(20, preactivation=True), 32), (ImageNetNet(50, preactivation=True), 224)],
    ids=["cifar20", "imagenet50"],
)
def test_preactivation_logits_shape(model, size):
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  logits, _ = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), x)
  assert logits.shape == (2, model.num_classes)


def test_pad_shortcut():
  x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
  padded = pad_shortcut(x, features=5, strides=2)
  assert padded.shape == (2, 2, 2, 5)
  assert jnp.array_equal(padded[..., :3], x[:, ::2, ::2, :])
  assert not jnp.any(padded[..., 3:])


# The identity property of residual blocks.


BLOCK_CASES = [(BasicBlock, "bn2", 4), (BottleneckBlock, "bn3", 16)]


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("block_cls, last_norm, channels", BLOCK_CASES)
def test_zeroed_residual_block_is_identity(block_cls, last_norm, channels, train):
  block = block_cls(features=4, conv=block_conv(), norm=block_norm(train))
  x = nn.relu(images(size=6, channels=channels))
  variables = zero_last_norm(init(block, x), last_norm)
  assert jnp.array_equal(apply_block(block, variables, x, train), x)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("block_cls, last_norm, channels", BLOCK_CASES)
def test_zeroed_plain_block_is_not_identity(block_cls, last_norm, channels, train):
  block = block_cls(features=4, conv=block_conv(), norm=block_norm(train), residual=False)
  x = nn.relu(images(size=6, channels=channels))
  variables = zero_last_norm(init(block, x), last_norm)
  assert not jnp.array_equal(apply_block(block, variables, x, train), x)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize(
    "block_cls, channels", [(PreActBasicBlock, 4), (PreActBottleneckBlock, 16)]
)
def test_zero_init_preact_block_is_identity(block_cls, channels, train):
  block = block_cls(
      features=4, conv=block_conv(), norm=block_norm(train), zero_init_residual=True
  )
  x = images(size=6, channels=channels)  # any sign: nothing follows the addition
  variables = init(block, x)
  assert jnp.array_equal(apply_block(block, variables, x, train), x)


@pytest.mark.parametrize("train", [False, True])
def test_zeroed_resnet_ignores_block_kernels(train):
  model = CifarNet(14, width=4)
  x = images()
  variables = zero_last_norm(init(model, x), "bn2")
  changed = randomise_kernels(variables, lambda names: names[0].startswith("stage"))
  assert jnp.array_equal(apply(model, changed, x, train), apply(model, variables, x, train))


def test_zeroed_resnet_depends_on_stem():
  model = CifarNet(14, width=4)
  x = images()
  variables = zero_last_norm(init(model, x), "bn2")
  changed = randomise_kernels(variables, lambda names: names[0] == "stem_conv")
  assert not jnp.allclose(apply(model, changed, x, True), apply(model, variables, x, True))


def test_zero_init_residual_zeroes_last_scale():
  variables = init(CifarNet(14, width=4, zero_init_residual=True), images())
  params = variables["params"]
  assert not jnp.any(params["stage2"]["block2"]["bn2"]["scale"])
  assert jnp.all(params["stage2"]["block2"]["bn1"]["scale"] == 1)
  assert jnp.all(params["stem_bn"]["scale"] == 1)


def test_zero_init_residual_off_by_default():
  variables = init(CifarNet(14, width=4), images())
  assert jnp.all(variables["params"]["stage1"]["block1"]["bn2"]["scale"] == 1)


def test_zero_init_plain_net_ignored():
  with pytest.warns(UserWarning, match="ignored on a plain net"):
    model = CifarNet(14, width=4, residual=False, zero_init_residual=True)
    variables = init(model, images())
  assert jnp.all(variables["params"]["stage1"]["block1"]["bn2"]["scale"] == 1)


def test_zero_init_on_plain_block_raises():
  with pytest.raises(ValueError, match="plain block"):
    BasicBlock(4, block_conv(), block_norm(False), residual=False, zero_init_residual=True)


# Scanned and unrolled layouts.


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("depth", [14, 20])
def test_scan_matches_unrolled(depth, train):
  unrolled = CifarNet(depth, width=4, scan_blocks=False)
  scanned = CifarNet(depth, width=4, scan_blocks=True)
  x = images()
  variables = init(unrolled, x)
  logits, state = run(unrolled, variables, x, train, ["batch_stats"])
  scanned_logits, scanned_state = run(
      scanned, models.stack_blocks(variables), x, train, ["batch_stats"]
  )
  np.testing.assert_allclose(scanned_logits, logits, rtol=1e-5, atol=1e-5)
  jax.tree.map(
      functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5),
      models.unstack_blocks(scanned_state),
      state,
  )


@pytest.mark.parametrize("residual, preactivation", [(True, False), (True, True), (False, False)])
def test_materialized_blocks_compute_the_same_gradients(residual, preactivation):
  x = images()
  nets = [CifarNet(14, residual=residual, width=4, preactivation=preactivation,
                   materialize_blocks=materialize) for materialize in (False, True)]
  variables = init(nets[0], x)

  def loss(net, params):
    logits, _ = net.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                          train=True, mutable=["batch_stats"])
    return jnp.sum(logits**2)

  plain, materialized = (jax.jit(jax.grad(functools.partial(loss, net)))(variables["params"])
                         for net in nets)
  # Equal up to float rounding: the fusion boundaries change the order of some sums.
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-3, atol=1e-5), materialized,
               plain)


def test_materialized_blocks_are_fusion_boundaries():
  # One conditional per unrolled block output. A scanned stage keeps one, for its first block,
  # because the scanned blocks' outputs are the loop carry, which is written anyway.
  x = images()

  def conditionals(net):
    variables = jax.eval_shape(functools.partial(net.init, train=False), jax.random.key(0), x)
    text = jax.jit(functools.partial(net.apply, train=False)).lower(variables, x).as_text()
    return text.count("stablehlo.case") + text.count("stablehlo.if")

  assert conditionals(CifarNet(14, width=4, materialize_blocks=True, scan_blocks=False)) == 6
  assert conditionals(CifarNet(14, width=4, materialize_blocks=False, scan_blocks=False)) == 0
  assert conditionals(CifarNet(14, width=4, materialize_blocks=True, scan_blocks=True)) == 3
  assert models.default_materialize_blocks() == (jax.default_backend() == "cpu")


def test_unstacked_scanned_init_runs_unrolled():
  unrolled = CifarNet(14, width=4, scan_blocks=False)
  scanned = CifarNet(14, width=4, scan_blocks=True)
  x = images()
  variables = init(scanned, x)
  np.testing.assert_allclose(
      run(unrolled, models.unstack_blocks(variables), x),
      run(scanned, variables, x),
      rtol=1e-5,
      atol=1e-5,
  )


@pytest.mark.parametrize("preactivation", [False, True])
def test_bottleneck_stage_scan_matches_unrolled(preactivation):
  block = functools.partial(
      models.blocks.block_class(bottleneck=True, preactivation=preactivation),
      conv=block_conv(),
      norm=block_norm(False),
      shortcut="B",
  )
  unrolled = models.Stage(block, features=2, num_blocks=3, strides=2, scan_blocks=False)
  scanned = models.Stage(block, features=2, num_blocks=3, strides=2, scan_blocks=True)
  x = images(size=6, channels=4)
  variables = init(unrolled, x)
  np.testing.assert_allclose(
      scanned.apply(models.stack_blocks(variables), x),
      unrolled.apply(variables, x),
      rtol=1e-5,
      atol=1e-5,
  )


def test_imagenet_scan_matches_unrolled():
  unrolled = ImageNetNet(50, width=4, num_classes=10, scan_blocks=False)
  scanned = ImageNetNet(50, width=4, num_classes=10, scan_blocks=True)
  x = images(size=32)
  variables = init(unrolled, x)
  np.testing.assert_allclose(
      run(scanned, models.stack_blocks(variables), x),
      run(unrolled, variables, x),
      rtol=1e-5,
      atol=1e-5,
  )


def test_stack_blocks_gives_scanned_structure():
  unrolled = abstract_variables(CifarNet(20, scan_blocks=False))
  scanned = abstract_variables(CifarNet(20, scan_blocks=True))
  assert jax.eval_shape(models.stack_blocks, unrolled) == scanned


def test_unstack_blocks_gives_unrolled_structure():
  unrolled = abstract_variables(CifarNet(20, scan_blocks=False))
  scanned = abstract_variables(CifarNet(20, scan_blocks=True))
  assert jax.eval_shape(models.unstack_blocks, scanned) == unrolled


def test_stack_unstack_round_trip():
  variables = init(CifarNet(14, width=4, scan_blocks=False), images())
  round_trip = models.unstack_blocks(models.stack_blocks(variables))
  assert jax.tree.all(jax.tree.map(jnp.array_equal, round_trip, variables))


def test_stack_blocks_rejects_gap():
  tree = {"block1": {"w": jnp.zeros(2)}, "block3": {"w": jnp.zeros(2)}}
  with pytest.raises(ValueError, match="block1 .. block2"):
    models.stack_blocks(tree)


@pytest.mark.parametrize("backend, scanned", [("cpu", False), ("gpu", True), ("tpu", True)])
def test_scan_default_per_platform(monkeypatch, backend, scanned):
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  variables = abstract_variables(CifarNet(14, width=4))
  assert ("blocks" in variables["params"]["stage1"]) == scanned


def test_remat_matches_forward_and_gradient():
  model = CifarNet(8, width=4, scan_blocks=False)
  remat_model = CifarNet(8, width=4, scan_blocks=False, remat=True)
  x = images()
  variables = init(model, x)

  def loss(model, params):
    variables_in = {"params": params, "batch_stats": variables["batch_stats"]}
    logits, _ = model.apply(variables_in, x, train=True, mutable=["batch_stats"])
    return jnp.sum(logits**2)

  value, grads = jax.value_and_grad(functools.partial(loss, model))(variables["params"])
  remat_value, remat_grads = jax.value_and_grad(functools.partial(loss, remat_model))(
      variables["params"]
  )
  np.testing.assert_allclose(remat_value, value, rtol=1e-5)
  jax.tree.map(
      functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5), remat_grads, grads
  )


def test_remat_scan_matches_unrolled():
  model = CifarNet(14, width=4, scan_blocks=False)
  remat_model = CifarNet(14, width=4, scan_blocks=True, remat=True)
  x = images()
  variables = init(model, x)
  np.testing.assert_allclose(
      run(remat_model, models.stack_blocks(variables), x),
      run(model, variables, x),
      rtol=1e-5,
      atol=1e-5,
  )



def grouped_remat_gradients(depth: int, group_size: int | None, preactivation: bool = False,
                            variables=None):
  """Return the loss, the parameter gradients and the updated `batch_stats` and
  `intermediates` of a scanned, rematerialised CifarNet, all in the flat scanned layout.

  `variables` (scanned layout) default to those of the net's own init.
  """
  model = CifarNet(depth, width=4, scan_blocks=True, remat=True, remat_group_size=group_size,
                   preactivation=preactivation)
  x = images()
  if variables is None:
    variables = init(CifarNet(depth, width=4, scan_blocks=True, preactivation=preactivation), x)

  def loss(params):
    logits, state = run(model, {"params": params, "batch_stats": variables["batch_stats"]}, x,
                        train=True, mutable=["batch_stats", "intermediates"])
    return jnp.sum(logits**2), state

  (value, state), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
  return value, grads, state


@pytest.mark.parametrize("depth, group_size", [(56, 2), (56, 3), (56, 9), (86, 4)])
def test_grouped_remat_matches_block_remat(depth, group_size):
  # Depth 56 has 8 scanned blocks per stage: groups of 2 leave no tail, groups of 3 leave a
  # tail of 2, and 9 is one group of all 8 (run block by block). Depth 86 has 13, which groups
  # of 4 split into 2 groups and a tail of 5, since a tail of 1 joins the last group.
  value, grads, state = grouped_remat_gradients(depth, 1)
  grouped_value, grouped_grads, grouped_state = grouped_remat_gradients(depth, group_size)
  np.testing.assert_allclose(grouped_value, value, rtol=1e-6)
  assert jax.tree.structure(grouped_state) == jax.tree.structure(state)
  assert jax.tree.structure(grouped_grads) == jax.tree.structure(grads)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6),
               (grouped_grads, grouped_state), (grads, state))


def test_grouped_remat_matches_unrolled_gradients():
  model = CifarNet(56, width=4, scan_blocks=False, preactivation=True)
  x = images()
  variables = init(model, x)

  def loss(params):
    logits, _ = run(model, {"params": params, "batch_stats": variables["batch_stats"]}, x,
                    train=True, mutable=["batch_stats"])
    return jnp.sum(logits**2)

  grads = jax.grad(loss)(variables["params"])
  # Depth 56 has 8 scanned blocks per stage, which groups of 3 split into 2 groups and a tail of 2.
  _, grouped_grads, _ = grouped_remat_gradients(56, 3, preactivation=True,
                                                 variables=models.stack_blocks(variables))
  # Equal up to float rounding: on CPU the scanned net uses patch_conv's gradient, whose sums
  # run in another order.
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-3, atol=1e-4),
               models.unstack_blocks(grouped_grads), grads)


def test_grouped_remat_keeps_init_and_layout():
  x = images()
  flat = init(CifarNet(56, width=4, scan_blocks=True), x)
  grouped = init(CifarNet(56, width=4, scan_blocks=True, remat=True, remat_group_size=3), x)
  assert jax.tree.structure(grouped) == jax.tree.structure(flat)
  jax.tree.map(np.testing.assert_array_equal, grouped, flat)


def test_grouped_remat_is_nested_loops():
  def loops(group_size):
    model = CifarNet(56, width=4, scan_blocks=True, remat=True, remat_group_size=group_size)
    x = images()
    variables = init(model, x)
    grad = jax.grad(lambda params: jnp.sum(run(model, {**variables, "params": params}, x)))
    return str(jax.make_jaxpr(grad)(variables["params"])).count("scan[")

  # Block by block, each stage has one loop forward and one backward. In groups of 3 (two
  # groups and a tail of 2), each stage adds the inner loop, its recomputation in the backward
  # pass and the tail's two loops.
  assert loops(1) == 3 * 2
  assert loops(3) > loops(1) + 3 * 2


@pytest.mark.parametrize("depth, group_size", [(302, 7), (134, 5)])
def test_grouped_remat_shrinks_compiled_memory(depth, group_size):
  # Depth 302 has 49 scanned blocks per stage, and groups of 7 keep 14 block inputs, not 49.
  # Depth 134 has 21, which groups of 5 would leave with a tail of 1: that layout needed more
  # memory than block by block until the tail joined the last group. Smaller images would let
  # buffers that do not depend on depth hide the difference.
  x = images(batch=16, size=32)

  def temp_bytes(group_size):
    model = CifarNet(depth, width=4, scan_blocks=True, remat=True, remat_group_size=group_size)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)

    def loss(params, batch_stats):
      logits, _ = run(model, {"params": params, "batch_stats": batch_stats}, x, train=True,
                      mutable=["batch_stats"])
      return jnp.sum(logits**2)

    lowered = jax.jit(jax.grad(loss)).lower(variables["params"], variables["batch_stats"])
    compiled = lowered.compile()
    return compiled.memory_analysis().temp_size_in_bytes

  grouped_bytes = temp_bytes(group_size)
  assert models.resolve_group_size((depth - 2) // 6 - 1, None) == group_size
  assert grouped_bytes < 0.85 * temp_bytes(1)


@pytest.mark.parametrize("repeats, requested, expected", [
    (199, None, 14), (49, None, 7), (21, None, 5), (17, None, 4), (16, None, 4), (14, None, 4),
    (13, None, 1), (8, None, 1), (2, None, 1), (1, None, 1),
    (199, 1, 1), (8, 3, 3), (8, 20, 8),
])
def test_resolve_group_size(repeats, requested, expected):
  assert models.resolve_group_size(repeats, requested) == expected


def test_default_group_size_grows_with_depth():
  sizes = [models.resolve_group_size(repeats, None) for repeats in range(1, 400)]
  assert sizes == sorted(sizes)


@pytest.mark.parametrize("repeats, group_size, layout", [
    (199, 14, (14, 3)), (12, 4, (3, 0)), (13, 4, (2, 5)), (5, 4, (0, 5)), (8, 20, (1, 0)),
    (8, 1, (8, 0)),
])
def test_group_layout(repeats, group_size, layout):
  assert models.group_layout(repeats, group_size) == layout


def test_kept_block_inputs():
  assert models.kept_block_inputs(199, 1) == 199
  assert models.kept_block_inputs(199, 14) == 14 + 14
  assert models.kept_block_inputs(49, 7) == 7 + 7
  assert models.kept_block_inputs(13, 4) == 2 + 5
  assert models.kept_block_inputs(8, 20) == 8


@pytest.mark.parametrize("repeats, group_size", [(8, 0), (8, -1), (0, 3), (2.5, 1)])
def test_group_layout_rejects_bad_input(repeats, group_size):
  with pytest.raises(ValueError, match="invalid"):
    models.group_layout(repeats, group_size)


@pytest.mark.parametrize("group_size", [0, -2, 1.5, True])
def test_bad_remat_group_size_raises(group_size):
  with pytest.raises(ValueError, match="remat_group_size"):
    CifarNet(20, remat=True, remat_group_size=group_size)


@pytest.mark.parametrize("options", [{"remat": False, "scan_blocks": True},
                                     {"remat": True, "scan_blocks": False}])
def test_unused_remat_group_size_warns(options):
  with pytest.warns(UserWarning, match="remat_group_size=3 is ignored"):
    CifarNet(20, remat_group_size=3, **options)


# Options.


def test_bfloat16_logits_finite():
  model = CifarNet(14, width=4, dtype=jnp.bfloat16)
  x = images()
  variables = init(model, x)
  logits = apply(model, variables, x, train=True)
  assert logits.dtype == jnp.float32
  assert jnp.all(jnp.isfinite(logits))
  assert jnp.all(jnp.isfinite(run(model, variables, x)))


def test_bfloat16_params_stay_float32():
  variables = abstract_variables(CifarNet(14, width=4, dtype=jnp.bfloat16))
  dtypes = {leaf.dtype for leaf in jax.tree.leaves(variables)}
  assert dtypes == {jnp.dtype(jnp.float32)}


def test_train_updates_batch_stats():
  model = CifarNet(14, width=4)
  x = images()
  variables = init(model, x)
  logits, state = run(model, variables, x, True, ["batch_stats"])
  assert logits.shape == (2, 10)
  assert set(state) == {"batch_stats"}
  old_mean = variables["batch_stats"]["stem_bn"]["mean"]
  assert not jnp.allclose(state["batch_stats"]["stem_bn"]["mean"], old_mean)


def test_axis_name_averages_over_devices():
  """BatchNorm with axis_name under vmap over two halves equals one batch without it."""
  x = images(batch=4)
  model = CifarNet(8, width=4)
  mapped_model = CifarNet(8, width=4, axis_name="batch")
  variables = init(model, x)
  logits, state = run(model, variables, x, True, ["batch_stats"])

  def train_apply(x):
    return mapped_model.apply(variables, x, train=True, mutable=["batch_stats"])

  mapped_logits, mapped_state = jax.vmap(train_apply, axis_name="batch")(
      x.reshape(2, 2, 8, 8, 3)
  )
  np.testing.assert_allclose(mapped_logits.reshape(4, 10), logits, rtol=1e-4, atol=1e-5)
  jax.tree.map(
      lambda mapped, single: np.testing.assert_allclose(mapped[0], single, rtol=1e-4, atol=1e-6),
      mapped_state,
      state,
  )


# Intermediates.


def expected_response_names(n: int, convs_per_block: int = 2) -> list[str]:
  names = ["stem_bn"]
  for stage in range(1, 4):
    for block in range(1, n + 1):
      for layer in range(1, convs_per_block + 1):
        names.append(f"stage{stage}/block{block}/bn{layer}")
  return names


@pytest.mark.parametrize("scan_blocks", [False, True])
def test_layer_responses_order(scan_blocks):
  model = CifarNet(14, width=4, scan_blocks=scan_blocks)
  x = images()
  variables = init(model, x)
  _, state = run(model, variables, x, mutable=["intermediates"])
  names = [name for name, _ in models.layer_responses(state)]
  assert names == expected_response_names(2)


def test_layer_responses_match_between_layouts():
  unrolled = CifarNet(14, width=4, scan_blocks=False)
  scanned = CifarNet(14, width=4, scan_blocks=True)
  x = images()
  variables = init(unrolled, x)
  _, state = run(unrolled, variables, x, True, ["batch_stats", "intermediates"])
  _, scanned_state = run(
      scanned, models.stack_blocks(variables), x, True, ["batch_stats", "intermediates"]
  )
  for (name, response), (_, scanned_response) in zip(
      models.layer_responses(state["intermediates"]),
      models.layer_responses(scanned_state["intermediates"]),
  ):
    np.testing.assert_allclose(scanned_response, response, rtol=1e-5, atol=1e-5, err_msg=name)


def test_layer_responses_count_resnet50():
  intermediates = abstract_intermediates(ImageNetNet(50), size=64)
  names = [name for name, _ in models.layer_responses(intermediates)]
  assert len(names) == 49
  assert names[:4] == ["stem_bn", "stage1/block1/bn1", "stage1/block1/bn2", "stage1/block1/bn3"]


def test_layer_responses_preactivation():
  intermediates = abstract_intermediates(CifarNet(14, preactivation=True))
  names = [name for name, _ in models.layer_responses(intermediates)]
  assert names == expected_response_names(2)[1:] + ["final_bn"]


def test_layer_responses_exclude_shortcut_bn():
  intermediates = abstract_intermediates(CifarNet(20, shortcut="C"))
  names = [name for name, _ in models.layer_responses(intermediates)]
  assert "response" in intermediates["stage2"]["block1"]["shortcut_bn"]
  assert not any("shortcut" in name for name in names)


def test_residual_sown_per_block():
  intermediates = abstract_intermediates(CifarNet(20))
  stages = [intermediates[f"stage{stage}"] for stage in range(1, 4)]
  sown = [block for stage in stages for block in stage.values() if "residual" in block]
  assert len(sown) == 9


def test_plain_net_sows_no_residual():
  intermediates = abstract_intermediates(CifarNet(20, residual=False))
  paths = jax.tree_util.tree_flatten_with_path(intermediates)[0]
  assert not any("residual" in path_names(path) for path, _ in paths)


def test_intermediates_not_stored_by_default():
  model = CifarNet(8, width=4)
  x = images()
  variables = init(model, x)
  assert isinstance(run(model, variables, x), jax.Array)
  _, state = run(model, variables, x, True, ["batch_stats"])
  assert "intermediates" not in state
  assert "intermediates" not in variables


# Invalid arguments.


@pytest.mark.parametrize("depth", [21, 0, 2, 7, -4, 20.0, True])
def test_cifar_invalid_depth(depth):
  with pytest.raises(ValueError, match=r"6n\+2"):
    CifarNet(depth)


@pytest.mark.parametrize("depth", [20, 0, 200])
def test_imagenet_invalid_depth(depth):
  with pytest.raises(ValueError, match="18, 34, 50, 101, 152"):
    ImageNetNet(depth)


@pytest.mark.parametrize("make", [CifarNet, ImageNetNet], ids=["cifar", "imagenet"])
def test_unknown_shortcut(make):
  with pytest.raises(ValueError, match="invalid shortcut 'D'"):
    make(50 if make is ImageNetNet else 20, shortcut="D")


def test_block_unknown_shortcut():
  with pytest.raises(ValueError, match="invalid shortcut"):
    BasicBlock(4, block_conv(), block_norm(False), shortcut="a")


# Registry.


@pytest.mark.parametrize(
    "name, model_class, depth, residual",
    [
        ("cifar_resnet56", CifarNet, 56, True),
        ("cifar_plain20", CifarNet, 20, False),
        ("cifar_resnet1202", CifarNet, 1202, True),
        ("cifar_resnet8", CifarNet, 8, True),
        ("resnet50", ImageNetNet, 50, True),
        ("plain34", ImageNetNet, 34, False),
        ("plain50", ImageNetNet, 50, False),
    ],
)
def test_create(name, model_class, depth, residual):
  model = models.create(name)
  assert type(model) is model_class
  assert model.depth == depth
  assert model.residual == residual


def test_create_defaults_match_paper():
  assert models.create("cifar_resnet20").shortcut == "A"
  assert models.create("resnet18").shortcut == "B"


def test_create_overrides():
  model = models.create("cifar_resnet20", width=4, shortcut="B")
  assert model.width == 4
  assert model.shortcut == "B"


def test_model_names_create():
  names = models.model_names()
  for name in ["cifar_resnet20", "cifar_plain1202", "resnet152", "plain18", "plain34"]:
    assert name in names
  for name in names:
    assert isinstance(models.create(name), nn.Module), name


@pytest.mark.parametrize("name", ["resnet19", "vgg16", "cifar_resnet", "", "Resnet50"])
def test_create_unknown_name(name):
  with pytest.raises(ValueError, match="unknown model name.*cifar_resnet56.*plain34"):
    models.create(name)


def test_create_invalid_cifar_depth():
  with pytest.raises(ValueError, match=r"6n\+2"):
    models.create("cifar_resnet21")


def test_create_rejects_depth_override():
  with pytest.raises(ValueError, match="depth and residual"):
    models.create("resnet50", depth=18)


# Imports.


def test_import_is_light():
  heavy = ["tensorflow", "tensorflow_datasets", "orbax", "matplotlib"]
  code = (
      "import sys, resflax.models; "
      f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
  )
  env = dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "[]"
