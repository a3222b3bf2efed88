"""Layer responses, as in Figure 7 of He et al. 2015: the standard deviation of each 3x3 layer's
output after BatchNorm, before the ReLU or the addition, in evaluation mode.

A response's std is taken per channel over the batch and the spatial positions, then averaged
over channels. Residual nets also report each residual branch's output before the addition
(sown as `residual`), which is the residual function F(x) of the block.
"""

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from resflax import models
from resflax.analysis import order

# Name under which residual blocks sow their branch output into `intermediates`.
RESIDUAL = "residual"


def channel_std(values: jax.Array) -> jax.Array:
  """Return the std of each channel (last axis) over all other axes, averaged over channels."""
  values = jnp.asarray(values, jnp.float32)
  return jnp.mean(jnp.std(values.reshape(-1, values.shape[-1]), axis=0))


@functools.partial(jax.jit, static_argnames="model")
def intermediate_stds(model: nn.Module, variables: Any, images: jax.Array) -> Any:
  """Apply `model` in evaluation mode and replace every sown intermediate by its `channel_std`.

  Returns the `intermediates` collection with the same structure, so `models.layer_responses`
  and `residual_stds` read it as they read the full arrays.
  """
  _, state = model.apply(variables, images, train=False, mutable=["intermediates"])
  return jax.tree.map(channel_std, state["intermediates"])


def _collect_sown(tree: Mapping[str, Any], name: str, path: tuple[str, ...],
                  found: list[tuple[str, Any]]) -> None:
  for key, value in tree.items():
    if key == name:
      found.append(("/".join(path), value[0]))
    elif isinstance(value, Mapping):
      _collect_sown(value, name, (*path, key), found)


def residual_stds(stds: Mapping[str, Any]) -> list[tuple[str, float]]:
  """Return (block path, std) of every residual branch in network order, or [] for a plain net."""
  found: list[tuple[str, Any]] = []
  _collect_sown(models.unstack_blocks(stds), RESIDUAL, (), found)
  found.sort(key=lambda item: order.network_order(item[0]))
  return [(path, float(std)) for path, std in found]


def layer_stds(stds: Mapping[str, Any]) -> list[tuple[str, float]]:
  """Return (layer path, std) of every conv layer's response in network order."""
  return [(path, float(std)) for path, std in models.layer_responses(stds)]


def response_stds(model: nn.Module, variables: Any,
                  images: jax.Array) -> dict[str, list[tuple[str, float]]]:
  """Measure the response std of every layer and every residual branch on `images`.

  Returns {"layers": [(path, std), ...], "residuals": [(path, std), ...]}, both in network
  order. Layer paths are those of the BatchNorm after each conv, e.g. "stage1/block2/bn1".
  """
  stds = intermediate_stds(model, variables, images)
  return {"layers": layer_stds(stds), "residuals": residual_stds(stds)}


def sorted_by_magnitude(values: Sequence[float]) -> list[float]:
  """Return `values` from the largest to the smallest, as the lower panel of Figure 7."""
  return sorted(values, reverse=True)

