"""Gradient flow: the norm of the loss gradient per weighted layer, and how correlated the input
gradients of nearby inputs are ("shattered gradients", Balduzzi et al. 2017).

Layer gradients are those a training step computes: training mode, BatchNorm normalising with
the statistics of the batch, mean cross-entropy without weight decay, no augmentation. Input
gradients are taken in evaluation mode, so that each example's gradient depends on that
example alone.
"""

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from resflax import models
from resflax.analysis import order

# Modules of the main path that hold weights: the stem conv, the convs of each block and the
# dense head. Shortcut projections (`shortcut_conv`) are left out.
_WEIGHTED_LAYER = re.compile(r"stem_conv|conv\d+|head")


@functools.partial(jax.jit, static_argnames="model")
def loss_gradients(model: nn.Module, variables: Any, images: jax.Array,
                   labels: jax.Array) -> Any:
  """Return the gradient of the mean cross-entropy on the batch with respect to `params`."""

  def loss_fn(params):
    logits, _ = model.apply({**variables, "params": params}, images, train=True,
                            mutable=["batch_stats"])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

  return jax.grad(loss_fn)(variables["params"])


def _collect_layers(tree: Mapping[str, Any], path: tuple[str, ...],
                    found: list[tuple[str, Any]]) -> None:
  for key, value in tree.items():
    if not isinstance(value, Mapping):
      continue
    if _WEIGHTED_LAYER.fullmatch(key):
      found.append(("/".join((*path, key)), value))
    else:
      _collect_layers(value, (*path, key), found)


def weighted_layers(params: Mapping[str, Any]) -> list[tuple[str, Any]]:
  """Return (path, parameters) of every weighted layer of the main path, in network order.

  A CIFAR net of depth 6n+2 has 6n+2 of them: the stem conv, two convs per block and the head.
  BatchNorm scales and biases are not part of any layer here.
  """
  found: list[tuple[str, Any]] = []
  _collect_layers(models.unstack_blocks(params), (), found)
  found.sort(key=lambda item: order.network_order(item[0]))
  return found


def layer_gradient_norms(model: nn.Module, variables: Any, images: jax.Array,
                         labels: jax.Array) -> list[tuple[str, float]]:
  """Return (path, global L2 norm of the loss gradient) of each weighted layer in network order."""
  gradients = loss_gradients(model, variables, images, labels)
  return [(path, float(optax.tree.norm(layer))) for path, layer in weighted_layers(gradients)]


@functools.partial(jax.jit, static_argnames="model")
def input_gradients(model: nn.Module, variables: Any, images: jax.Array,
                    classes: jax.Array) -> jax.Array:
  """Return the gradient of each image's logit of class `classes[i]` with respect to the image.

  In evaluation mode the examples do not interact, so the gradient of the summed logits with
  respect to the batch contains every example's own gradient.
  """

  def summed_logits(inputs):
    logits = model.apply(variables, inputs, train=False)
    return jnp.sum(jnp.take_along_axis(logits, classes[:, None], axis=1))

  return jax.grad(summed_logits)(images)


def line_inputs(start: np.ndarray, end: np.ndarray, num_points: int) -> np.ndarray:
  """Return `num_points` inputs evenly spaced from `start` to `end`, both ends included."""
  if num_points < 2:
    raise ValueError(f"invalid num_points {num_points}: a line needs at least 2 points")
  fractions = np.linspace(0.0, 1.0, num_points, dtype=np.float32)
  fractions = fractions.reshape((-1,) + (1,) * np.ndim(start))
  return (1.0 - fractions) * start + fractions * end


def neighbour_correlation(gradients: np.ndarray) -> float | None:
  """Return the mean Pearson correlation between the gradients of consecutive points.

  `gradients` has one gradient per point along its first axis. A pair in which either gradient
  is constant has no correlation and is left out. Returns None when no pair is left.
  """
  flat = np.asarray(gradients, np.float64).reshape(len(gradients), -1)
  centred = flat - flat.mean(axis=1, keepdims=True)
  norms = np.linalg.norm(centred, axis=1)
  products = np.sum(centred[:-1] * centred[1:], axis=1)
  denominators = norms[:-1] * norms[1:]
  defined = denominators > 0
  if not np.any(defined):
    return None
  return float(np.mean(products[defined] / denominators[defined]))


def gradient_correlation(model: nn.Module, variables: Any, starts: Sequence[np.ndarray],
                         ends: Sequence[np.ndarray], classes: Sequence[int],
                         num_points: int) -> float | None:
  """Return the neighbour correlation of input gradients, averaged over several lines.

  Line k runs from `starts[k]` to `ends[k]` through `num_points` points, and the gradient is
  that of the logit of class `classes[k]`. Lines without a defined correlation are left out,
  and the result is None when no line has one.
  """
  correlations = []
  for start, end, label in zip(starts, ends, classes, strict=True):
    points = line_inputs(np.asarray(start), np.asarray(end), num_points)
    labels = jnp.full((num_points,), label, jnp.int32)
    correlation = neighbour_correlation(np.asarray(input_gradients(model, variables, points,
                                                                   labels)))
    if correlation is not None:
      correlations.append(correlation)
  return float(np.mean(correlations)) if correlations else None
