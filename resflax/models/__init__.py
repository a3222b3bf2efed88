"""Plain and residual networks of He et al. 2015 as Flax linen modules.

`CifarNet` (6n+2 layers) and `ImageNetNet` (18 to 152 layers) map float NHWC images to float32
logits; `create` builds them by name. `layout` converts variables between the unrolled and the
scanned block layouts and extracts per-layer responses.
"""

from resflax.models.blocks import (
    BasicBlock,
    Block,
    BottleneckBlock,
    PreActBasicBlock,
    PreActBottleneckBlock,
)
from resflax.models.cifar import CifarNet
from resflax.models.imagenet import ImageNetNet
from resflax.models.layers import BatchNorm, conv_kernel_init
from resflax.models.layout import count_params, layer_responses, stack_blocks, unstack_blocks
from resflax.models.registry import create, model_names
from resflax.models import patch_conv
from resflax.models.stages import (
    Stage,
    default_materialize_blocks,
    default_scan_blocks,
    group_layout,
    kept_block_inputs,
    resolve_group_size,
)

__all__ = [
    "BasicBlock",
    "BatchNorm",
    "Block",
    "BottleneckBlock",
    "CifarNet",
    "ImageNetNet",
    "PreActBasicBlock",
    "PreActBottleneckBlock",
    "Stage",
    "conv_kernel_init",
    "count_params",
    "create",
    "default_materialize_blocks",
    "default_scan_blocks",
    "group_layout",
    "kept_block_inputs",
    "layer_responses",
    "model_names",
    "resolve_group_size",
    "stack_blocks",
    "unstack_blocks",
]
