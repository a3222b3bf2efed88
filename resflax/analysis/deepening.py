"""The identity construction of He et al. 2015: a deeper net made of a trained shallower one and
added blocks that compute the identity. It computes the shallower net's function, so it is at
least as good as that net, although SGD from scratch may not find such a solution.

Each stage of a CIFAR net of depth 6n+2 has n blocks. Deepening to 6m+2 keeps the shallow net's
stem, its n blocks per stage (at their positions) and its head, and appends m-n identity blocks
to the end of each stage, since only a stage's first block changes the shape.

An added block computes the identity in evaluation mode:
- post-activation residual block: the last BatchNorm of the branch has scale and bias 0, so the
  branch outputs 0 and the block outputs ReLU(x) = x.
- pre-activation residual block: the last conv kernel is 0, so the block outputs x + 0.
- post-activation plain block: every conv kernel is a Dirac kernel (the identity matrix at the
  centre tap) and every BatchNorm passes its input through, so the block outputs
  ReLU(ReLU(x)) = x.
Both post-activation cases rely on ReLU(x) = x, which holds because every block's input there
is a ReLU output and so non-negative. Added blocks never change the shape, so option-A and option-B
blocks add no projection. Option C projects every block, and an added block's projection is a
1x1 Dirac kernel with a pass-through BatchNorm.
"""

import re
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from resflax import models
from resflax.analysis import networks
from resflax.models import cifar

# Config keys on which a shallow net and its deepened net must agree: they decide which
# variables exist and how the copied layers compute.
MATCHING_KEYS = ("arch", "family", "width", "shortcut", "preactivation", "bn_epsilon", "dtype")

_NORM = re.compile(r"bn(\d+)")
_CONV = re.compile(r"conv(\d+)")
# Spatial size of the images with which the nets' variable shapes are computed. Parameters do
# not depend on it.
_INIT_SIZE = 32


def deepened_config(config: ml_collections.ConfigDict, depth: int) -> ml_collections.ConfigDict:
  """Return a copy of `config` with `depth` set."""
  target = ml_collections.ConfigDict(config.to_dict())
  target.depth = int(depth)
  return target


def _net_name(config: ml_collections.ConfigDict) -> str:
  return f"{config.family}-{config.depth}"


def check_deepenable(config: ml_collections.ConfigDict,
                     target: ml_collections.ConfigDict) -> None:
  """Raise ValueError unless the net of `config` can be deepened exactly into that of `target`."""
  name = f"{_net_name(config)} into {_net_name(target)}"
  for current in (config, target):
    if current.arch != "cifar":
      raise ValueError(f"cannot deepen {name}: arch is {current.arch!r}, but deepen supports "
                       "CIFAR nets (arch 'cifar') only.")
  for key in MATCHING_KEYS:
    if config.get(key) != target.get(key):
      raise ValueError(
          f"cannot deepen {name}: {key} is {config.get(key)!r} in the shallow net and "
          f"{target.get(key)!r} in the target. Both nets must agree on "
          f"{', '.join(MATCHING_KEYS)}.")
  if int(target.depth) < int(config.depth):
    raise ValueError(f"cannot deepen {name}: the target depth {target.depth} is smaller than "
                     f"the shallow net's {config.depth}.")
  cifar.cifar_blocks_per_stage(int(target.depth))
  if config.preactivation and config.family != "residual":
    raise ValueError(
        f"cannot deepen {name}: a pre-activation plain block cannot compute the identity, "
        "because its input is a conv output that can be negative and its first ReLU clips it.")
  if config.preactivation and config.shortcut == "C":
    raise ValueError(
        f"cannot deepen {name}: a pre-activation block with shortcut 'C' projects ReLU(BN(x)), "
        "which differs from x when x is negative. Use shortcut 'A' or 'B'.")


def dirac_kernel(shape: tuple[int, ...]) -> np.ndarray:
  """Return a conv kernel (H, W, C, C) that maps its input to itself: the identity matrix at the
  centre tap and zeros elsewhere."""
  height, width, in_features, out_features = shape
  if in_features != out_features or height % 2 == 0 or width % 2 == 0:
    raise ValueError(f"no Dirac kernel of shape {shape}: it needs odd spatial sizes and as many "
                     "input as output channels")
  kernel = np.zeros(shape, np.float32)
  kernel[height // 2, width // 2] = np.eye(in_features, dtype=np.float32)
  return kernel


def pass_through_norm(features: int, epsilon: float) -> tuple[dict[str, Any], dict[str, Any]]:
  """Return (params, batch_stats) of a BatchNorm that returns its input in evaluation mode.

  flax computes (x - mean) * rsqrt(var + epsilon) * scale + bias. With mean 0, bias 0 and
  var = 1 - epsilon in float32, var + epsilon rounds back to exactly 1 (checked with numpy for
  epsilons from 1e-8 to 0.1), so scale 1 gives an exact identity. Where it does not, var is 1
  and scale sqrt(1 + epsilon), which is the identity up to float32 rounding.
  """
  epsilon = np.float32(epsilon)
  variance, scale = np.float32(1.0) - epsilon, np.float32(1.0)
  if variance + epsilon != np.float32(1.0):
    variance, scale = np.float32(1.0), np.sqrt(np.float32(1.0) + epsilon)
  params = {"scale": np.full((features,), scale, np.float32),
            "bias": np.zeros((features,), np.float32)}
  stats = {"mean": np.zeros((features,), np.float32),
           "var": np.full((features,), variance, np.float32)}
  return params, stats


def _last_numbered(names: Any, pattern: re.Pattern[str]) -> str:
  numbered = [name for name in names if pattern.fullmatch(name)]
  return max(numbered, key=lambda name: int(pattern.fullmatch(name).group(1)))


def _make_identity_block(params: dict[str, Any], stats: dict[str, Any],
                         config: ml_collections.ConfigDict) -> None:
  """Overwrite one freshly initialised block's variables, in place, so the block is the identity."""
  epsilon = config.bn_epsilon
  if config.family == "plain":
    for name in params:
      if _CONV.fullmatch(name):
        params[name]["kernel"] = dirac_kernel(params[name]["kernel"].shape)
      elif _NORM.fullmatch(name):
        params[name], stats[name] = pass_through_norm(len(params[name]["scale"]), epsilon)
    return
  if "shortcut_conv" in params:
    params["shortcut_conv"]["kernel"] = dirac_kernel(params["shortcut_conv"]["kernel"].shape)
    features = len(params["shortcut_bn"]["scale"])
    params["shortcut_bn"], stats["shortcut_bn"] = pass_through_norm(features, epsilon)
  if config.preactivation:
    last_conv = params[_last_numbered(params, _CONV)]
    last_conv["kernel"] = np.zeros_like(last_conv["kernel"])
  else:
    last_norm = params[_last_numbered(params, _NORM)]
    last_norm["scale"] = np.zeros_like(last_norm["scale"])
    last_norm["bias"] = np.zeros_like(last_norm["bias"])


def _host_copy(tree: Any) -> Any:
  return jax.tree.map(np.array, jax.device_get(tree))


def _initial_variables(abstract: Any, rng: jax.Array) -> Any:
  """Return variables with the shapes of `abstract` at the values a fresh net starts from:
  He-normal conv kernels (`models.conv_kernel_init`), BatchNorm scale and variance 1, bias and
  mean 0."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
  keys = jax.random.split(rng, max(len(leaves), 1))
  values = []
  for (path, leaf), key in zip(leaves, keys):
    name = path[-1].key
    if name == "kernel":
      values.append(np.asarray(models.conv_kernel_init(key, leaf.shape, np.float32)))
    elif name in ("scale", "var"):
      values.append(np.ones(leaf.shape, np.float32))
    else:
      values.append(np.zeros(leaf.shape, np.float32))
  return jax.tree.unflatten(treedef, values)


def _block_number(name: str) -> int:
  return int(name.removeprefix("block"))


def _stage_number(name: str) -> int:
  return int(name.removeprefix("stage"))


def _assemble(shallow: dict[str, Any], abstract: Any, shallow_blocks: int,
              rng: jax.Array) -> dict[str, Any]:
  """Return variables shaped as `abstract`: the stem, the head and the first `shallow_blocks`
  blocks of each stage copied from `shallow`, the other blocks at initial values."""
  deep: dict[str, Any] = {}
  for collection, modules in abstract.items():
    deep[collection] = {}
    for name, module in modules.items():
      if not name.startswith("stage"):
        deep[collection][name] = shallow[collection][name]
        continue
      deep[collection][name] = {}
      for block, abstract_block in module.items():
        if _block_number(block) <= shallow_blocks:
          deep[collection][name][block] = shallow[collection][name][block]
        else:
          block_rng = jax.random.fold_in(jax.random.fold_in(rng, _stage_number(name)),
                                         _block_number(block))
          deep[collection][name][block] = _initial_variables(abstract_block, block_rng)
  return deep


def deepen(variables: Mapping[str, Any], config: ml_collections.ConfigDict,
           target: ml_collections.ConfigDict) -> dict[str, Any]:
  """Build the variables of the net of `target` that computes what the net of `config` computes.

  `variables` holds the shallow net's `params` and `batch_stats`, in either block layout, and
  `target` is the config of the deeper net, e.g. `deepened_config(config, 56)`. The stem, the
  shallow net's blocks and the head are copied. The added blocks start from initial values
  (conv kernels drawn from `target.seed`) and are then made the identity, as the module
  docstring describes. Returns host numpy variables with the blocks unrolled: build the target
  model with `networks.unrolled_model`, or call `models.stack_blocks` for a scanned one. The
  two nets' evaluation-mode logits agree up to float32 rounding. In training mode they differ,
  because BatchNorm then normalises with batch statistics.

  Raises ValueError when the nets differ in a key of MATCHING_KEYS, the target is shallower or
  a net is not a CIFAR net. It also raises where no exact identity block exists (pre-activation
  plain nets, pre-activation nets with shortcut 'C') and when `variables` does not fit the net
  of `config`.
  """
  check_deepenable(config, target)
  shallow = _host_copy(models.unstack_blocks(variables))
  num_classes = shallow["params"]["head"]["kernel"].shape[-1]
  image_shape = (_INIT_SIZE, _INIT_SIZE, shallow["params"]["stem_conv"]["kernel"].shape[2])
  shallow_model = networks.unrolled_model(config, num_classes)
  mismatch = networks.describe_mismatch(
      shallow, networks.abstract_variables(shallow_model, image_shape))
  if mismatch:
    raise ValueError(f"the variables do not fit {_net_name(config)} of width {config.width} "
                     f"({mismatch}). Pass the config the variables were trained with.")

  abstract = networks.abstract_variables(networks.unrolled_model(target, num_classes),
                                         image_shape)
  shallow_blocks = cifar.cifar_blocks_per_stage(int(config.depth))
  target_blocks = cifar.cifar_blocks_per_stage(int(target.depth))
  deep = _assemble(shallow, abstract, shallow_blocks, jax.random.key(target.seed))
  for stage in range(1, cifar.NUM_STAGES + 1):
    for number in range(shallow_blocks + 1, target_blocks + 1):
      name, block = f"stage{stage}", f"block{number}"
      _make_identity_block(deep["params"][name][block], deep["batch_stats"][name][block], target)
  return deep
