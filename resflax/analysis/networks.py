"""Networks for the analyses: unrolled models built from a run's config, fresh initialisation,
BatchNorm statistics of a fixed batch, and a check that variables fit a model."""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from resflax import training


def unrolled_model(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """Build the net of `config` with its blocks unrolled and without rematerialisation.

  Both options leave the computed function unchanged. `deepen` and the per-layer paths use the
  unrolled layout.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  config.scan_blocks = False
  config.remat = False
  return training.build_model(config, num_classes)


def _abstract_images(image_shape: Sequence[int]) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)


def abstract_variables(model: nn.Module, image_shape: Sequence[int]) -> Any:
  """Return the shapes and dtypes of `model`'s variables for images of `image_shape` (H, W, C)."""
  init = functools.partial(model.init, train=False)
  return jax.eval_shape(init, jax.random.key(0), _abstract_images(image_shape))


@functools.partial(jax.jit, static_argnames=("model", "image_shape"))
def _init(rng: jax.Array, *, model: nn.Module, image_shape: tuple[int, ...]) -> Any:
  return model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)


def fresh_variables(model: nn.Module, seed: int, image_shape: Sequence[int]) -> dict[str, Any]:
  """Initialise `model` from `seed` with the call `training.create_train_state` makes.

  For a run trained with unrolled blocks (the CPU default) these are its step-0 variables.
  """
  return _init(jax.random.key(seed), model=model, image_shape=tuple(image_shape))


@functools.partial(jax.jit, static_argnames="model")
def _batch_statistics(model: nn.Module, variables: Any, images: jax.Array) -> Any:
  # With momentum 0 the running averages become the statistics of this batch alone.
  _, updates = model.clone(bn_momentum=0.0).apply(
      variables, images, train=True, mutable=["batch_stats"])
  return updates["batch_stats"]


def calibrate_batch_stats(model: nn.Module, variables: dict[str, Any],
                          images: jax.Array) -> dict[str, Any]:
  """Return `variables` with every BatchNorm's statistics set to those of `images`.

  Evaluation mode then computes what training mode computes on `images`, one example at a time.
  The analyses do this for freshly initialised nets, whose running statistics (mean 0,
  variance 1) describe no data.
  """
  return {**variables, "batch_stats": _batch_statistics(model, variables, images)}


def describe_mismatch(variables: Any, expected: Any) -> str | None:
  """Return the first difference in structure or shape between two variable trees, or None."""
  found = dict(jax.tree_util.tree_leaves_with_path(variables))
  wanted = dict(jax.tree_util.tree_leaves_with_path(expected))
  missing = sorted(jax.tree_util.keystr(path) for path in wanted.keys() - found.keys())
  if missing:
    return f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
  extra = sorted(jax.tree_util.keystr(path) for path in found.keys() - wanted.keys())
  if extra:
    return f"unexpected {extra[0]}" + (f" and {len(extra) - 1} more" if len(extra) > 1 else "")
  for path, leaf in found.items():
    if np.shape(leaf) != tuple(wanted[path].shape):
      return (f"{jax.tree_util.keystr(path)} has shape {np.shape(leaf)}, expected "
              f"{tuple(wanted[path].shape)}")
  return None
