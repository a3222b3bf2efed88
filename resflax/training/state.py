"""Training state: parameters, BatchNorm statistics, optimizer state and step."""

from collections.abc import Callable, Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from resflax.training import optim
from resflax.training import schedule


class TrainState(struct.PyTreeNode):
  """Everything a training step reads and updates.

  `step` counts the updates applied so far. `apply_fn` and `tx` are static: they are part of
  the pytree structure, so a jitted step specializes on them instead of tracing them.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  apply_fn: Callable[..., Any] = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  def apply_gradients(self, grads: Any, batch_stats: Any) -> "TrainState":
    """Apply one optimizer update and store the new BatchNorm statistics."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(
        step=self.step + 1,
        params=optax.apply_updates(self.params, updates),
        batch_stats=batch_stats,
        opt_state=opt_state,
    )


# Flax modules compare and hash by their fields, so equal models share one compiled init.
@functools.partial(jax.jit, static_argnames=("model", "image_shape"))
def _init_variables(rng: jax.Array, *, model: nn.Module, image_shape: tuple[int, ...]) -> Any:
  return model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)


def create_train_state(rng: jax.Array, model: nn.Module, config: ml_collections.ConfigDict,
                       image_shape: Sequence[int]) -> TrainState:
  """Initialize the model for images of `image_shape` (H, W, C) and its optimizer at step 0.

  The optimizer and its learning-rate schedule come from `config`, and the schedule uses
  `config.depth` to decide on the warm-up. Every process that calls this with the same `rng`
  gets the same state.
  """
  variables = _init_variables(rng, model=model, image_shape=tuple(image_shape))
  if "batch_stats" not in variables:
    raise ValueError(f"{type(model).__name__} has no BatchNorm statistics ('batch_stats'); "
                     "the training step expects a model with BatchNorm.")
  params = variables["params"]
  tx = optim.create_optimizer(config, schedule.create_learning_rate_fn(config, config.depth))
  return TrainState(
      step=jnp.asarray(0, jnp.int32),
      params=params,
      batch_stats=variables["batch_stats"],
      opt_state=tx.init(params),
      apply_fn=model.apply,
      tx=tx,
  )
