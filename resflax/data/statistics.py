"""Training-split statistics used for normalisation, computed on the host in float64."""

import numpy as np

_CHUNK = 4096  # examples converted to float64 at a time, to bound host memory


def pixel_mean(images: np.ndarray) -> np.ndarray:
  """Return the per-pixel mean of uint8 (N, H, W, C) images in [0, 1] units, float32 (H, W, C)."""
  total = np.zeros(images.shape[1:], np.float64)
  for start in range(0, len(images), _CHUNK):
    total += images[start:start + _CHUNK].sum(axis=0, dtype=np.float64)
  return (total / (255.0 * len(images))).astype(np.float32)


def channel_std(images: np.ndarray, mean: np.ndarray) -> np.ndarray:
  """Return the per-channel std of the images after subtracting the per-pixel `mean`, float32 (C,).

  Dividing the mean-subtracted images by it gives each channel unit variance on these images.
  """
  squares = np.zeros(images.shape[-1:], np.float64)
  for start in range(0, len(images), _CHUNK):
    centred = images[start:start + _CHUNK] / 255.0 - mean
    squares += np.square(centred).sum(axis=(0, 1, 2))
  pixels_per_channel = images.size // images.shape[-1]
  return np.sqrt(squares / pixels_per_channel).astype(np.float32)
