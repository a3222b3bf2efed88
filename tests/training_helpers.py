"""Small configs, synthetic datasets and subprocess settings shared by the training tests."""

import os
import pathlib
import sys
from typing import Any

import ml_collections
import numpy as np

from resflax import data
from resflax.configs import default

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

# Timeout for one subprocess of a test, in seconds. The slowest, two processes that each
# compile a CIFAR net twice, took 25 to 75 s on a 2-core CPU machine shared with other jobs.
SUBPROCESS_TIMEOUT = 300


def small_config(**overrides: Any) -> ml_collections.ConfigDict:
  """Return the default config scaled down to a CifarNet of depth 8 and width 4 on 8x8 images."""
  config = default.get_config()
  config.depth = 8
  config.width = 4
  config.batch_size = 8
  config.num_steps = 6
  config.augment_pad = 2
  config.train_eval_size = 32
  config.eval_batch_size = 16
  config.log_every = 2
  config.eval_every = 3
  config.checkpoint_every = 3
  config.lr_boundaries = (4,)
  config.progress = False
  for key, value in overrides.items():
    config[key] = value
  return config


def _random_split(rng: np.random.Generator, size: int, image_size: int, channels: int,
                  num_classes: int) -> data.Split:
  images = rng.integers(0, 256, (size, image_size, image_size, channels), dtype=np.uint8)
  labels = rng.integers(0, num_classes, size).astype(np.int32)
  return data.Split(images, labels)


def synthetic_dataset(num_train: int = 48, num_validation: int = 16, num_test: int = 20,
                      image_size: int = 8, channels: int = 3, num_classes: int = 4,
                      seed: int = 0) -> data.Dataset:
  """Return a Dataset of random uint8 images and labels, normalised by its training mean."""
  rng = np.random.default_rng(seed)
  train = _random_split(rng, num_train, image_size, channels, num_classes)
  validation = None
  if num_validation:
    validation = _random_split(rng, num_validation, image_size, channels, num_classes)
  test = _random_split(rng, num_test, image_size, channels, num_classes)
  mean = (train.images.astype(np.float32) / 255.0).mean(axis=0)
  return data.Dataset(name="synthetic", train=train, validation=validation, test=test,
                      num_classes=num_classes, mean=mean, std=None, flip=True, source="random")


def subprocess_env(num_devices: int = 1) -> dict[str, str]:
  """Return the environment for a Python subprocess with `num_devices` fake CPU devices.

  XLA reads XLA_FLAGS when jax starts its CPU backend, so the flag only works in a fresh
  process.
  """
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  env["JAX_PLATFORMS"] = "cpu"
  paths = [str(REPO_ROOT), env.get("PYTHONPATH", "")]
  env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
  return env


def python_command(script: pathlib.Path | str, *args: str) -> list[str]:
  return [sys.executable, str(script), *args]


# A tiny sweep for train.py: depths 8 and 14 of width 4, 6 steps, checkpoints at steps 3 and
# 6, about a minute on 2 CPU cores.
TINY_SWEEP = [
    "--config.depths=(8,14)",
    "--config.width=4",
    "--config.num_steps=6",
    "--config.log_every=2",
    "--config.eval_every=3",
    "--config.checkpoint_every=3",
    "--config.batch_size=32",
    "--config.train_eval_size=200",
    "--config.progress=False",
]
