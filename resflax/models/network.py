"""Parts shared by `CifarNet` and `ImageNetNet`: option checks, layer partials, stages and head."""

import functools
import warnings
from collections.abc import Sequence
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp

from resflax.models.blocks import block_class
from resflax.models.layers import BatchNorm, ModuleDef, check_shortcut, conv_kernel_init
from resflax.models import patch_conv
from resflax.models.stages import (
    Stage,
    check_remat_group_size,
    default_materialize_blocks,
    default_scan_blocks,
)

CONV_GRADIENTS = ("xla", "patches")


class NetworkOptions(Protocol):
  """Fields that `CifarNet` and `ImageNetNet` share (documented on those classes)."""

  residual: bool
  shortcut: str
  width: int
  num_classes: int
  preactivation: bool
  zero_init_residual: bool
  dtype: Any
  axis_name: str | None
  bn_momentum: float
  bn_epsilon: float
  scan_blocks: bool | None
  remat: bool
  remat_group_size: int | None
  materialize_blocks: bool | None
  conv_gradient: str | None


def check_options(net: NetworkOptions) -> None:
  """Raise ValueError for an unknown shortcut or conv gradient or a remat group size below 1.

  Warn when zero_init_residual is set on a plain net, and when remat_group_size is set on a net
  without remat or without scanned blocks, where it has no effect.
  """
  check_shortcut(net.shortcut)
  check_remat_group_size(net.remat_group_size)
  if net.conv_gradient not in (None, *CONV_GRADIENTS):
    raise ValueError(
        f"invalid conv_gradient {net.conv_gradient!r}: expected 'xla' (XLA's own convolution "
        "gradients), 'patches' (patch_conv.conv_general_dilated) or None (platform default)"
    )
  if net.zero_init_residual and not net.residual:
    # stacklevel 5 skips the frames of flax's generated __init__ to reach the constructing line.
    warnings.warn(
        "zero_init_residual=True is ignored on a plain net (residual=False): "
        "it would zero the output of every block",
        stacklevel=5,
    )
  if net.remat_group_size is not None and not (net.remat and resolved_scan_blocks(net)):
    warnings.warn(
        f"remat_group_size={net.remat_group_size} is ignored: it groups scanned blocks for "
        "remat, so it needs remat=True and scanned blocks (scan_blocks=True)",
        stacklevel=5,
    )


def default_conv_gradient(scan_blocks: bool) -> str:
  """Return the platform default of `conv_gradient`: "patches" for scanned blocks on CPU, where
  XLA's own convolution gradients run slowly inside the loop body, and "xla" otherwise."""
  return "patches" if scan_blocks and jax.default_backend() == "cpu" else "xla"


def resolved_scan_blocks(net: NetworkOptions) -> bool:
  """Return `net.scan_blocks`, or its platform default when None."""
  return default_scan_blocks() if net.scan_blocks is None else net.scan_blocks


def make_conv(net: NetworkOptions) -> ModuleDef:
  """Return the conv partial: no bias, He-normal (fan_out) kernels, compute in `net.dtype`, and
  the convolution gradient that `net.conv_gradient` names."""
  conv_gradient = net.conv_gradient
  if conv_gradient is None:
    conv_gradient = default_conv_gradient(resolved_scan_blocks(net))
  conv_options = {}
  if conv_gradient == "patches":
    conv_options["conv_general_dilated"] = patch_conv.conv_general_dilated
  return functools.partial(
      nn.Conv, use_bias=False, kernel_init=conv_kernel_init, dtype=net.dtype, **conv_options
  )


def make_norm(net: NetworkOptions, train: bool) -> ModuleDef:
  """Return the BatchNorm partial: batch statistics when training, running averages otherwise."""
  return functools.partial(
      BatchNorm,
      use_running_average=not train,
      momentum=net.bn_momentum,
      epsilon=net.bn_epsilon,
      dtype=net.dtype,
      axis_name=net.axis_name,
  )


def make_block(
    net: NetworkOptions, bottleneck: bool, conv: ModuleDef, norm: ModuleDef
) -> ModuleDef:
  """Return the block partial of `net`, with zero_init_residual dropped on plain nets."""
  return functools.partial(
      block_class(bottleneck, net.preactivation),
      conv=conv,
      norm=norm,
      residual=net.residual,
      shortcut=net.shortcut,
      zero_init_residual=net.zero_init_residual and net.residual,
  )


def apply_stages(
    net: NetworkOptions, x: jax.Array, block: ModuleDef, stage_sizes: Sequence[int]
) -> jax.Array:
  """Apply submodules `stage1`, `stage2`, ...: stage k has `width * 2**(k-1)` features and
  `stage_sizes[k-1]` blocks, and every stage but the first starts with stride 2."""
  scan_blocks = resolved_scan_blocks(net)
  materialize_blocks = net.materialize_blocks
  if materialize_blocks is None:
    materialize_blocks = default_materialize_blocks()
  for index, num_blocks in enumerate(stage_sizes):
    x = Stage(
        block,
        features=net.width * 2**index,
        num_blocks=num_blocks,
        strides=1 if index == 0 else 2,
        scan_blocks=scan_blocks,
        remat=net.remat,
        remat_group_size=net.remat_group_size,
        materialize_blocks=materialize_blocks,
        name=f"stage{index + 1}",
    )(x)
  return x


def apply_head(net: NetworkOptions, x: jax.Array, norm: ModuleDef) -> jax.Array:
  """Pool globally and apply the dense `head`; return float32 logits.

  Pre-activation nets first apply `final_bn` and ReLU, since their last block ends with an
  addition.
  """
  if net.preactivation:
    x = nn.relu(norm(name="final_bn")(x))
  x = jnp.mean(x, axis=(1, 2))
  x = nn.Dense(net.num_classes, dtype=net.dtype, name="head")(x)
  return jnp.asarray(x, jnp.float32)
