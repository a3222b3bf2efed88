"""Layers shared by all blocks: the convolution initialiser, BatchNorm and shortcuts."""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# A module class or a functools.partial of one, as the blocks receive `conv` and `norm`.
ModuleDef = Callable[..., nn.Module]

SHORTCUTS = ("A", "B", "C")

# He-normal (He et al. 2015, "Delving Deep into Rectifiers"): a zero-mean Gaussian with variance
# 2 / fan_out, where fan_out = kernel height * kernel width * output channels. The fan_out form
# keeps the variance of the back-propagated gradient constant through conv-ReLU layers. The fan_in
# form would keep the forward scale instead, but in these nets a BatchNorm normalises every conv
# output before the next conv reads it. torchvision's ResNet uses the same mode, so results
# compare with PyTorch runs. The two forms differ only where a conv changes the channel count.
# The Gaussian is not truncated, unlike jax.nn.initializers.he_normal.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class BatchNorm(nn.BatchNorm):
  """`nn.BatchNorm` that also sows its output as `response` into the `intermediates` collection.

  Sowing stores nothing unless `intermediates` is mutable in `apply`.
  """

  @nn.compact
  def __call__(
      self,
      x: jax.Array,
      use_running_average: bool | None = None,
      *,
      mask: jax.Array | None = None,
  ) -> jax.Array:
    y = super().__call__(x, use_running_average, mask=mask)
    self.sow("intermediates", "response", y)
    return y


def check_shortcut(shortcut: str) -> None:
  """Raise ValueError unless `shortcut` is one of the options A, B and C."""
  if shortcut not in SHORTCUTS:
    raise ValueError(
        f"invalid shortcut {shortcut!r}: expected 'A' (zero-padded identity), "
        "'B' (projection where the shape changes) or 'C' (projection on every block)"
    )


def pad_shortcut(x: jax.Array, features: int, strides: int) -> jax.Array:
  """Apply the option-A shortcut: subsample by `strides`, then zero-pad the new channels.

  The kept positions are those on which a stride-`strides` conv with "same"-style padding
  centres its outputs, so the shortcut and the residual branch stay aligned.
  """
  if strides > 1:
    x = x[:, ::strides, ::strides, :]
  extra = features - x.shape[-1]
  if extra < 0:
    raise ValueError(
        f"option-A shortcut cannot reduce channels from {x.shape[-1]} to {features}: "
        "use shortcut 'B' or 'C'"
    )
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra)))


def apply_shortcut(
    block: Any,
    x: jax.Array,
    features: int,
    strides: int,
    projection_input: jax.Array | None = None,
    projection_norm: bool = True,
) -> jax.Array:
  """Return the shortcut of `block` for input `x` and an output of `features` channels.

  Call inside the compact `__call__` of `block`, which must have fields `shortcut`, `conv` and
  `norm`: projections become its submodules `shortcut_conv` and `shortcut_bn`. Option A is the
  identity, or `pad_shortcut` where the shape changes; B projects where the shape changes; C
  projects on every block. A projection reads `projection_input` (default `x`), and
  `projection_norm=False` leaves out `shortcut_bn`.
  """
  changes_shape = strides != 1 or x.shape[-1] != features
  projects = block.shortcut == "C" or (block.shortcut == "B" and changes_shape)
  if projects:
    source = x if projection_input is None else projection_input
    y = block.conv(features, (1, 1), strides, padding=0, name="shortcut_conv")(source)
    if projection_norm:
      y = block.norm(name="shortcut_bn")(y)
    return y
  if changes_shape:
    return pad_shortcut(x, features, strides)
  return x
