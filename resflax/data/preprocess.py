"""Normalisation and training augmentation on the device, in jax.

These functions are pure and shape-static, so they run inside the jitted train and eval steps.
Training images are normalised before they are zero-padded, so the padding equals the training
mean pixel rather than a black border, which evaluation images never have.
"""

import functools

import jax
import jax.numpy as jnp


def normalize(images: jax.Array, mean: jax.Array, std: jax.Array | None = None) -> jax.Array:
  """Scale uint8 images to [0, 1], subtract the per-pixel `mean` and divide by `std` if given.

  `mean` is in [0, 1] units and broadcasts against (H, W, C), so a per-channel mean of shape
  (1, 1, C) works too. `std` is per channel, shape (C,).
  """
  normalized = images.astype(jnp.float32) / 255.0 - mean
  if std is not None:
    normalized = normalized / std
  return normalized


def example_keys(seed: int | jax.Array, step: int | jax.Array, indices: jax.Array) -> jax.Array:
  """Return one PRNG key per example from (seed, step, position in the global batch).

  Keys depend on the position in the global batch, not on the device or process holding the
  example, so a batch gets the same augmentation however it is split.
  """
  step_key = jax.random.fold_in(jax.random.key(seed), step)
  return jax.vmap(lambda index: jax.random.fold_in(step_key, index))(indices)


def _augment_example(image: jax.Array, key: jax.Array, pad: int, flip: bool) -> jax.Array:
  crop_key, flip_key = jax.random.split(key)
  if pad > 0:
    height, width, channels = image.shape
    padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    top, left = jax.random.randint(crop_key, (2,), 0, 2 * pad + 1)
    image = jax.lax.dynamic_slice(padded, (top, left, 0), (height, width, channels))
  if flip:
    image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
  return image


def augment(images: jax.Array, keys: jax.Array, *, pad: int, flip: bool) -> jax.Array:
  """Randomly crop each image back to its size after `pad` pixels of zero padding, and flip it.

  Each example draws its crop offset (uniform over all 2 * pad + 1 positions per axis) and its
  horizontal flip (probability 1/2, only when `flip`) from its own key in `keys`.
  """
  augment_example = functools.partial(_augment_example, pad=pad, flip=flip)
  return jax.vmap(augment_example)(images, keys)


def preprocess_train(
    images: jax.Array,
    keys: jax.Array,
    mean: jax.Array,
    std: jax.Array | None,
    *,
    pad: int,
    flip: bool,
) -> jax.Array:
  """Normalise uint8 training images, then pad, crop and flip them."""
  return augment(normalize(images, mean, std), keys, pad=pad, flip=flip)


def preprocess_eval(images: jax.Array, mean: jax.Array, std: jax.Array | None) -> jax.Array:
  """Normalise uint8 evaluation images exactly as training images, without augmentation."""
  return normalize(images, mean, std)
