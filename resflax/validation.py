"""Checks of a sweep config that run before any data is read or any step is compiled."""

from __future__ import annotations

import ml_collections

FAMILIES = ("plain", "residual")
DATASETS = ("cifar10", "cifar100", "mnist", "fashion_mnist", "svhn_cropped", "imagenet2012")
DATA_SOURCES = ("tfds", "idx")
PARALLEL_MODES = ("jit", "pmap", "mesh")
SHORTCUTS = ("A", "B", "C")
DTYPES = ("float32", "bfloat16")
CONV_GRADIENTS = ("xla", "patches")
IMAGENET_DEPTHS = {"residual": (18, 34, 50, 101, 152), "plain": (18, 34, 50, 101, 152)}


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key, the value and the fix."""


def _check_choice(config: ml_collections.ConfigDict, key: str, choices) -> None:
  if config[key] not in choices:
    raise ConfigError(
        f"invalid --config.{key}={config[key]!r}: expected one of {', '.join(map(str, choices))}"
    )


def _check_depth(arch: str, family: str, depth: int) -> None:
  if arch == "cifar":
    if depth < 8 or (depth - 2) % 6:
      raise ConfigError(
          f"invalid depth {depth} for a CIFAR net: depth must be 6n+2 with n >= 1 "
          "(8, 14, 20, 32, 44, 56, 110, 1202, ...)"
      )
  elif depth not in IMAGENET_DEPTHS[family]:
    raise ConfigError(
        f"invalid depth {depth} for an ImageNet {family} net: expected one of "
        f"{', '.join(map(str, IMAGENET_DEPTHS[family]))}"
    )


def validate_config(config: ml_collections.ConfigDict, num_devices: int = 1) -> None:
  """Raise ConfigError for the first invalid value of a sweep config.

  `num_devices` is the number of devices, over all processes, that share one global batch.
  """
  _check_choice(config, "dataset", DATASETS)
  _check_choice(config, "data_source", DATA_SOURCES)
  _check_choice(config, "arch", ("cifar", "imagenet"))
  _check_choice(config, "parallel", PARALLEL_MODES)
  _check_choice(config, "shortcut", SHORTCUTS)
  _check_choice(config, "dtype", DTYPES)
  _check_choice(config, "weight_decay_on", ("all", "kernels"))
  if config.get("conv_gradient") is not None:
    _check_choice(config, "conv_gradient", CONV_GRADIENTS)
  if not config.families:
    raise ConfigError("--config.families is empty: expected a tuple such as '(\"plain\",\"residual\")'")
  for family in config.families:
    if family not in FAMILIES:
      raise ConfigError(f"unknown family {family!r} in --config.families: expected plain or residual")
  if not config.depths:
    raise ConfigError("--config.depths is empty: expected a tuple such as '(20,56)'")
  for key in ("families", "depths", "seeds"):
    values = list(config[key])
    if len(set(values)) != len(values):
      raise ConfigError(f"--config.{key}={tuple(values)} lists a value twice; list each once")
  for depth in config.depths:
    if not isinstance(depth, int):
      raise ConfigError(f"invalid depth {depth!r} in --config.depths: expected whole numbers, "
                        "e.g. --config.depths='(20,56)'")
  for family in config.families:
    for depth in config.depths:
      _check_depth(config.arch, family, int(depth))
  for key in ("num_steps", "batch_size", "eval_batch_size", "train_eval_size", "log_every",
              "checkpoint_every", "keep_checkpoints", "eval_every"):
    if int(config[key]) < 1:
      raise ConfigError(f"invalid --config.{key}={config[key]}: must be a positive integer")
  final_size = config.get("final_train_eval_size")
  if final_size is not None and int(final_size) < 1:
    raise ConfigError(f"invalid --config.final_train_eval_size={final_size}: must be a positive "
                      "integer, or None to use train_eval_size")
  group_size = config.get("remat_group_size")
  if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int)
                                 or group_size < 1):
    raise ConfigError(f"invalid --config.remat_group_size={group_size!r}: must be a positive "
                      "integer, or unset to let each stage pick its own")
  if config.validation_size < 0:
    raise ConfigError(f"invalid --config.validation_size={config.validation_size}: must be >= 0")
  if config.batch_size % num_devices:
    raise ConfigError(
        f"--config.batch_size={config.batch_size} does not divide over {num_devices} devices "
        f"({config.parallel}); use a multiple of {num_devices}"
    )
