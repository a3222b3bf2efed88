"""Pure training and evaluation steps; `parallel` decides how they are compiled and placed.

Both steps take uint8 images and normalise them on the device with `mean` and `std`, which
are arguments rather than constants so one compiled step serves any dataset of that shape.
Under pmap, `axis_name` names the mapped axis: gradients and metrics are averaged over it.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from resflax import data
from resflax.training import optim
from resflax.training.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def _all_finite(tree: Any) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves))


def train_step(state: TrainState, batch: Batch, mean: jax.Array, std: jax.Array | None, *,
               seed: int, pad: int, flip: bool,
               axis_name: str | None = None) -> tuple[TrainState, Metrics]:
  """Apply one SGD update on `batch` and return the new state and the step's metrics.

  `batch` has uint8 `images` (B, H, W, C), int32 `labels` (B,) and int32 `index` (B,), the
  position of each example in the global batch. Each example is augmented (random crop after
  `pad` pixels of padding, horizontal flip if `flip`) with a key derived from
  (`seed`, `state.step`, `index`), so the augmentation does not depend on how the batch is
  split over devices.

  When the loss, the gradient or the updated parameters are not finite, the returned state is
  the input state unchanged, so the caller still has the last good parameters, and
  `metrics["finite"]` is False.

  Metrics, float32 scalars unless noted:
    loss: mean cross-entropy of the batch, without the weight-decay term.
    error: fraction of the batch misclassified in training mode.
    learning_rate: the rate this update used.
    grad_norm: global L2 norm of the cross-entropy gradient, before weight decay is added.
    param_norm: global L2 norm of the returned parameters.
    finite: bool, whether the loss, the gradient and the updated parameters are finite.
  """
  keys = data.example_keys(seed, state.step, batch["index"])
  images = data.preprocess_train(batch["images"], keys, mean, std, pad=pad, flip=flip)
  labels = batch["labels"]

  def loss_fn(params):
    variables = {"params": params, "batch_stats": state.batch_stats}
    logits, updates = state.apply_fn(variables, images, train=True, mutable=["batch_stats"])
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    return loss, (logits, updates["batch_stats"])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  error = jnp.mean(jnp.argmax(logits, axis=-1) != labels)
  if axis_name is not None:
    # Every device has an equal share of the global batch, so the mean over devices of the
    # per-device means is the mean over the global batch.
    grads, loss, error = jax.lax.pmean((grads, loss, error), axis_name)

  updated = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(updated.params)
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
  metrics = {
      "loss": loss,
      "error": error.astype(jnp.float32),
      "learning_rate": optim.applied_learning_rate(updated.opt_state),
      "grad_norm": optax.tree.norm(grads),
      "param_norm": optax.tree.norm(new_state.params),
      "finite": finite,
  }
  return new_state, metrics


def eval_step(state: TrainState, batch: Batch, mean: jax.Array, std: jax.Array | None, *,
              axis_name: str | None = None) -> Metrics:
  """Return the sums over the unmasked examples of `batch`, evaluated in inference mode.

  `batch` has uint8 `images`, int32 `labels` and a `mask` that is 0 for padding rows. Returns
  `loss_sum` (float32, summed cross-entropy), `error_count` and `count` (int32). Summing these
  over batches and dividing gives exact dataset means. Under pmap the sums cover all devices.
  """
  images = data.preprocess_eval(batch["images"], mean, std)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  logits = state.apply_fn(variables, images, train=False)
  labels, mask = batch["labels"], batch["mask"]
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  loss_sum = jnp.sum(jnp.where(mask > 0, losses, 0.0))
  correct, count = data.masked_error_counts(logits, labels, mask)
  sums = {"loss_sum": loss_sum, "error_count": count - correct, "count": count}
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  return sums
