"""CIFAR networks of He et al. 2015 (Sec. 4.2): 6n+2 layers on 32x32 images."""

import numbers
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from resflax.models import network

NUM_STAGES = 3


def cifar_blocks_per_stage(depth: int) -> int:
  """Return n for a depth of 6n+2; raise ValueError for any other depth."""
  valid = isinstance(depth, numbers.Integral) and not isinstance(depth, bool)
  if not valid or depth < 8 or (depth - 2) % 6 != 0:
    raise ValueError(
        f"invalid CIFAR depth {depth!r}: expected 6n+2 with n >= 1 "
        "(8, 14, 20, 32, 44, 56, 110, 1202, ...)"
    )
  return (int(depth) - 2) // 6


class CifarNet(nn.Module):
  """Plain or residual CIFAR network with 6n+2 weighted layers.

  A 3x3 stem conv of `width` filters, three stages of n basic blocks with `width`, `2*width` and
  `4*width` filters (stride 2 at the start of stages 2 and 3), global average pooling and a dense
  layer. With the defaults the 6n+1 convs and the dense layer make ResNet-20, -32, ... of the
  paper, with option-A shortcuts.

  Call with float NHWC images, already normalised, and `train`; returns float32 logits of shape
  (batch, num_classes). Variables: `params` and `batch_stats`. With `train=True`, pass
  `mutable=["batch_stats"]` to update the running statistics.

  Attributes:
    depth: weighted layers, 6n+2 with n >= 1; anything else raises ValueError.
    residual: residual blocks, or plain blocks without shortcuts.
    shortcut: "A" (zero-padded identity), "B" (projection where the shape changes) or "C"
      (projection on every block). Plain nets ignore it.
    width: filters of the stem and the first stage.
    num_classes: outputs of the dense head.
    preactivation: pre-activation blocks (He et al. 2016, "Identity Mappings"). The stem is then
      a conv alone, and `final_bn` with ReLU comes before pooling.
    zero_init_residual: zero the last BatchNorm scale of every residual branch (the last conv
      kernel in pre-activation blocks). Not in the 2015 paper. On a plain net it is ignored with
      a warning, since it would zero every block.
    dtype: compute dtype, for example jnp.bfloat16; parameters stay float32.
    axis_name: mapped axis over which BatchNorm averages batch statistics (pmap or shard_map);
      None for plain jit.
    bn_momentum: decay of the BatchNorm running averages.
    bn_epsilon: added to the variance in BatchNorm.
    scan_blocks: run the identical blocks of each stage with `nn.scan`; None picks the platform
      default (`stages.default_scan_blocks`: unrolled on CPU, scanned elsewhere).
    remat: rematerialise block activations in the backward pass to save memory. Deep stages of
      scanned blocks are also checkpointed in groups (see `remat_group_size`).
    remat_group_size: blocks per checkpointed group of scanned blocks with `remat`. Grouped, a
      stage of N blocks keeps about 2 sqrt(N) block inputs for the backward pass instead of N,
      at the cost of one more forward pass. None picks about sqrt(N) where that at least halves
      the kept inputs and 1 otherwise (`stages.resolve_group_size`); 1 rematerialises block by
      block.
    materialize_blocks: write every block's output to its own buffer; None picks the platform
      default (`stages.default_materialize_blocks`: on for CPU, where it saves recomputation).
    conv_gradient: "xla" (XLA's own convolution gradients) or "patches" (the transposed-conv and
      patch-matmul gradients of `patch_conv`, same values up to float rounding); None picks the
      platform default (`network.default_conv_gradient`: "patches" for scanned blocks on CPU).
  """

  depth: int
  residual: bool = True
  shortcut: str = "A"
  width: int = 16
  num_classes: int = 10
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
    cifar_blocks_per_stage(self.depth)
    network.check_options(self)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = network.make_conv(self)
    norm = network.make_norm(self, train)
    block = network.make_block(self, bottleneck=False, conv=conv, norm=norm)

    x = jnp.asarray(x, self.dtype)
    x = conv(self.width, (3, 3), padding=1, name="stem_conv")(x)
    if not self.preactivation:
      x = nn.relu(norm(name="stem_bn")(x))

    stage_sizes = [cifar_blocks_per_stage(self.depth)] * NUM_STAGES
    x = network.apply_stages(self, x, block, stage_sizes)
    return network.apply_head(self, x, norm)
