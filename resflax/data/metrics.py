"""Exact classification counts over padded, masked evaluation batches."""

import jax
import jax.numpy as jnp


def masked_error_counts(
    logits: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    *,
    k: int = 1,
) -> tuple[jax.Array, jax.Array]:
  """Return int32 (correct, count) over the rows whose mask is positive.

  A row is correct when its label is among the `k` largest logits (ties broken towards the lower
  class index). Summing both counts over batches and dividing gives the exact accuracy, and
  count - correct the number of errors, because padded rows (mask 0) count in neither.
  """
  if k == 1:
    hits = jnp.argmax(logits, axis=-1) == labels
  else:
    _, top_classes = jax.lax.top_k(logits, k)
    hits = jnp.any(top_classes == labels[:, None], axis=-1)
  valid = mask > 0
  correct = jnp.sum(hits & valid, dtype=jnp.int32)
  count = jnp.sum(valid, dtype=jnp.int32)
  return correct, count
