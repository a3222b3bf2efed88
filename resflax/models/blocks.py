"""Plain and residual blocks: basic (two 3x3 convs) and bottleneck (1x1-3x3-1x1), post- and
pre-activation.

Post-activation blocks follow He et al. 2015, "Deep Residual Learning for Image Recognition":
BatchNorm after every conv and before the ReLU, and the shortcut added before the last ReLU.
Pre-activation blocks follow He et al. 2016, "Identity Mappings in Deep Residual Networks":
BN-ReLU before every conv and nothing after the addition.

Every block reads `conv` and `norm` partials (convs without bias, BatchNorm with its mode and
statistics settings) and maps an NHWC array to an NHWC array. Sown into `intermediates`: each
BatchNorm output as `response` (see `layers.BatchNorm`) and, in residual blocks, the residual
branch output before the addition as `residual`.
"""

from typing import Any

import flax.linen as nn
import jax

from resflax.models.layers import ModuleDef, apply_shortcut, check_shortcut

# Output channels of a bottleneck block per channel of its 3x3 conv.
BOTTLENECK_EXPANSION = 4


class Block(nn.Module):
  """Fields shared by all blocks.

  Attributes:
    features: filters of the 3x3 conv (the block's output channels for basic blocks, a quarter of
      them for bottleneck blocks).
    conv: `nn.Conv` partial without bias; blocks pass kernel size, strides and padding.
    norm: BatchNorm partial with `use_running_average` set.
    strides: spatial stride of the block, applied in its 3x3 conv and its shortcut.
    residual: add the shortcut (a residual block) or not (a plain block).
    shortcut: "A" (zero-padded identity), "B" (projection where the shape changes) or "C"
      (projection on every block). Plain blocks ignore it.
    zero_init_residual: initialise the last layer of the residual branch to zero, so that the
      block starts as its shortcut (Goyal et al. 2017). Post-activation blocks zero the scale of
      the last BatchNorm, pre-activation blocks the kernel of the last conv. Raises ValueError on
      a plain block, where it would zero the block's output.
  """

  features: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  residual: bool = True
  shortcut: str = "A"
  zero_init_residual: bool = False

  def __post_init__(self) -> None:
    check_shortcut(self.shortcut)
    if self.zero_init_residual and not self.residual:
      raise ValueError(
          "zero_init_residual=True is invalid on a plain block (residual=False): "
          "it would zero the block's output"
      )
    super().__post_init__()

  @nn.nowrap
  def zero_init_kwargs(self, name: str) -> dict[str, Any]:
    """Return `{name: zeros}` to pass to the last layer of the branch, or {} when not zeroing."""
    return {name: nn.initializers.zeros} if self.zero_init_residual else {}


def add_shortcut(
    block: Block,
    x: jax.Array,
    branch: jax.Array,
    projection_input: jax.Array | None = None,
    projection_norm: bool = True,
) -> jax.Array:
  """Sow the residual branch and add the shortcut of `x` to it; return `branch` in plain blocks."""
  if not block.residual:
    return branch
  block.sow("intermediates", "residual", branch)
  shortcut = apply_shortcut(
      block, x, branch.shape[-1], block.strides, projection_input, projection_norm
  )
  return branch + shortcut


class BasicBlock(Block):
  """conv3x3-BN-ReLU-conv3x3-BN, then the shortcut added (residual only), then ReLU."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.conv(self.features, (3, 3), self.strides, padding=1, name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.features, (3, 3), padding=1, name="conv2")(y)
    y = self.norm(name="bn2", **self.zero_init_kwargs("scale_init"))(y)
    return nn.relu(add_shortcut(self, x, y))


class BottleneckBlock(Block):
  """conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1-BN (4x features), shortcut added, then ReLU.

  The stride sits in the 3x3 conv, as in torchvision ("ResNet v1.5"). He et al. 2015 put it in
  the first 1x1 conv; the parameter count is the same.
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.conv(self.features, (1, 1), padding=0, name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.features, (3, 3), self.strides, padding=1, name="conv2")(y)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.conv(self.features * BOTTLENECK_EXPANSION, (1, 1), padding=0, name="conv3")(y)
    y = self.norm(name="bn3", **self.zero_init_kwargs("scale_init"))(y)
    return nn.relu(add_shortcut(self, x, y))


class PreActBasicBlock(Block):
  """BN-ReLU-conv3x3-BN-ReLU-conv3x3, then the shortcut added (residual only).

  A projection shortcut (options B and C) reads the pre-activated input and has no BatchNorm.
  The identity and option-A shortcuts read the raw input, so the identity path stays clean.
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    preactivated = nn.relu(self.norm(name="bn1")(x))
    y = self.conv(self.features, (3, 3), self.strides, padding=1, name="conv1")(preactivated)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.conv(
        self.features, (3, 3), padding=1, name="conv2", **self.zero_init_kwargs("kernel_init")
    )(y)
    return add_shortcut(self, x, y, projection_input=preactivated, projection_norm=False)


class PreActBottleneckBlock(Block):
  """BN-ReLU-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1 (4x features), then the shortcut added.

  Shortcuts as in `PreActBasicBlock`; the stride sits in the 3x3 conv.
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    preactivated = nn.relu(self.norm(name="bn1")(x))
    y = self.conv(self.features, (1, 1), padding=0, name="conv1")(preactivated)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.conv(self.features, (3, 3), self.strides, padding=1, name="conv2")(y)
    y = nn.relu(self.norm(name="bn3")(y))
    y = self.conv(
        self.features * BOTTLENECK_EXPANSION,
        (1, 1),
        padding=0,
        name="conv3",
        **self.zero_init_kwargs("kernel_init"),
    )(y)
    return add_shortcut(self, x, y, projection_input=preactivated, projection_norm=False)


def block_class(bottleneck: bool, preactivation: bool) -> type[Block]:
  """Return the block class for the given kind."""
  if bottleneck:
    return PreActBottleneckBlock if preactivation else BottleneckBlock
  return PreActBasicBlock if preactivation else BasicBlock
