"""Model names for the command line: `create("cifar_resnet56")`, `create("resnet50")`, ..."""

import re
from typing import Any

import flax.linen as nn

from resflax.models.cifar import CifarNet
from resflax.models.imagenet import IMAGENET_STAGE_SIZES, ImageNetNet

# Depths of the CIFAR nets in He et al. 2015; `create` accepts any 6n+2.
CIFAR_PAPER_DEPTHS = (20, 32, 44, 56, 110, 1202)

_CIFAR_NAME = re.compile(r"cifar_(resnet|plain)(\d+)")
_IMAGENET_NAME = re.compile(r"(resnet|plain)(\d+)")


def model_names() -> list[str]:
  """Return the known model names: CIFAR nets at the paper's depths, then the ImageNet nets.

  `create` also accepts `cifar_resnet{D}` and `cifar_plain{D}` for any other D = 6n+2.
  """
  families = ("resnet", "plain")
  names = [f"cifar_{family}{depth}" for family in families for depth in CIFAR_PAPER_DEPTHS]
  names += [f"{family}{depth}" for family in families for depth in IMAGENET_STAGE_SIZES]
  return names


def create(name: str, **overrides: Any) -> nn.Module:
  """Create the model called `name`, with fields in `overrides` (width, shortcut, dtype, ...).

  `cifar_resnet{D}` and `cifar_plain{D}` give `CifarNet(depth=D)` for any D = 6n+2;
  `resnet{D}` and `plain{D}` give `ImageNetNet(depth=D)` for D in 18, 34, 50, 101, 152.
  Raises ValueError for an unknown name, an invalid depth, or overrides of `depth` or
  `residual`, which the name sets.
  """
  fixed = sorted({"depth", "residual"} & overrides.keys())
  if fixed:
    raise ValueError(f"invalid overrides {fixed} for {name!r}: the model name sets depth and residual")

  cifar = _CIFAR_NAME.fullmatch(name)
  if cifar:
    family, depth = cifar.groups()
    return CifarNet(depth=int(depth), residual=family == "resnet", **overrides)
  imagenet = _IMAGENET_NAME.fullmatch(name)
  if imagenet and int(imagenet.group(2)) in IMAGENET_STAGE_SIZES:
    family, depth = imagenet.groups()
    return ImageNetNet(depth=int(depth), residual=family == "resnet", **overrides)
  raise ValueError(
      f"unknown model name {name!r}: expected one of {', '.join(model_names())}, "
      "or cifar_resnet{D} / cifar_plain{D} for any depth D = 6n+2"
  )
