"""ImageNet networks of He et al. 2015 (Table 1): 18 and 34 layers (basic blocks), 50, 101 and
152 layers (bottleneck blocks)."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from resflax.models import network

# Blocks per stage for each depth.
IMAGENET_STAGE_SIZES = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}

# Depths from which the nets use bottleneck blocks.
BOTTLENECK_MIN_DEPTH = 50


def imagenet_stage_sizes(depth: int) -> tuple[int, ...]:
  """Return the blocks per stage for `depth`; raise ValueError for an unsupported depth."""
  if isinstance(depth, bool) or depth not in IMAGENET_STAGE_SIZES:
    raise ValueError(
        f"invalid ImageNet depth {depth!r}: expected one of {sorted(IMAGENET_STAGE_SIZES)}"
    )
  return IMAGENET_STAGE_SIZES[depth]


class ImageNetNet(nn.Module):
  """Plain or residual ImageNet network: ResNet-18/34/50/101/152 and their plain counterparts.

  A 7x7 stride-2 stem conv of `width` filters, a 3x3 stride-2 max pool, four stages with
  `width * 2**k` filters in their 3x3 convs (stride 2 at the start of stages 2 to 4), global
  average pooling and a dense layer. Bottleneck blocks put out 4x those filters. For 224x224
  inputs the stages run at 56, 28, 14 and 7 pixels.

  Call, variables and the option fields as in `CifarNet`; `shortcut` defaults to "B" and
  `width` to 64.

  Attributes:
    depth: 18, 34, 50, 101 or 152; anything else raises ValueError.
  """

  depth: int
  residual: bool = True
  shortcut: str = "B"
  num_classes: int = 1000
  width: int = 64
  preactivation: bool = False
  zero_init_residual: bool = False
  dtype: Any = jnp.float32
  axis_name: str | None = None
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  scan_blocks: bool | None = None
  remat: bool = False
  remat_group_size: int | None = None
  materialize_blocks: bool | None = None
  conv_gradient: str | None = None

  def __post_init__(self) -> None:
    imagenet_stage_sizes(self.depth)
    network.check_options(self)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = network.make_conv(self)
    norm = network.make_norm(self, train)
    bottleneck = self.depth >= BOTTLENECK_MIN_DEPTH
    block = network.make_block(self, bottleneck=bottleneck, conv=conv, norm=norm)

    x = jnp.asarray(x, self.dtype)
    x = conv(self.width, (7, 7), 2, padding=3, name="stem_conv")(x)
    if not self.preactivation:
      x = nn.relu(norm(name="stem_bn")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    x = network.apply_stages(self, x, block, imagenet_stage_sizes(self.depth))
    return network.apply_head(self, x, norm)
