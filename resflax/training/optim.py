"""SGD with momentum and weight decay added to the gradient (the Caffe and PyTorch convention)."""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

WEIGHT_DECAY_CHOICES = ("all", "kernels")


def weight_decay_mask(params: Any, weight_decay_on: str) -> Any:
  """Return a pytree of booleans, like `params`, that is True where weight decay applies.

  "all" decays every parameter, BatchNorm scales and biases included, as
  `torch.optim.SGD(model.parameters(), weight_decay=...)` and a Caffe solver with the default
  `decay_mult` do. "kernels" decays only convolution and dense kernels (leaves named "kernel").
  """
  if weight_decay_on == "all":
    return jax.tree.map(lambda _: True, params)
  if weight_decay_on == "kernels":
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params)
  raise ValueError(
      f"Invalid weight_decay_on {weight_decay_on!r}; expected one of {WEIGHT_DECAY_CHOICES}.")


def _sgd_with_weight_decay(learning_rate: jnp.ndarray, *, weight_decay: float, weight_decay_on: str,
                           momentum: float, nesterov: bool) -> optax.GradientTransformation:
  # Order as in torch.optim.SGD: d = g + weight_decay * p, then v = momentum * v + d,
  # then p = p - learning_rate * v (with Nesterov: p = p - learning_rate * (d + momentum * v)).
  # Caffe adds the decay the same way but folds the rate into v (v = momentum * v +
  # learning_rate * d), which differs only in the steps right after the rate changes.
  return optax.chain(
      optax.add_decayed_weights(weight_decay, mask=lambda p: weight_decay_mask(p, weight_decay_on)),
      optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov),
  )


def create_optimizer(config: ml_collections.ConfigDict,
                     learning_rate_fn: optax.Schedule) -> optax.GradientTransformation:
  """Create SGD with momentum and weight decay from `config`, following `learning_rate_fn`.

  The optimizer state stores the rate used by the latest update (see `applied_learning_rate`).
  """
  if config.weight_decay_on not in WEIGHT_DECAY_CHOICES:
    raise ValueError(f"Invalid weight_decay_on {config.weight_decay_on!r}; "
                     f"expected one of {WEIGHT_DECAY_CHOICES}.")
  # inject_hyperparams evaluates the schedule at the optimizer's own update count and records
  # the value it used in the state.
  return optax.inject_hyperparams(
      _sgd_with_weight_decay,
      static_args=("weight_decay", "weight_decay_on", "momentum", "nesterov"),
      hyperparam_dtype=jnp.float32,
  )(
      learning_rate=learning_rate_fn,
      weight_decay=float(config.weight_decay),
      weight_decay_on=config.weight_decay_on,
      momentum=float(config.momentum),
      nesterov=bool(config.nesterov),
  )


def applied_learning_rate(opt_state: optax.OptState) -> jnp.ndarray:
  """Return the learning rate used by the update that produced `opt_state`.

  Before the first update it is the rate the first update will use.
  """
  return opt_state.hyperparams["learning_rate"]
