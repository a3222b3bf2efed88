"""In-memory datasets: uint8 images and int32 labels held by the host."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
  """Examples of one split: images uint8 (N, H, W, C) and labels int32 (N,)."""

  images: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    if self.images.dtype != np.uint8 or self.images.ndim != 4:
      raise ValueError(
          f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}")
    if self.labels.dtype != np.int32 or self.labels.shape != self.images.shape[:1]:
      raise ValueError(f"labels must be int32 ({len(self.images)},), "
                       f"got {self.labels.dtype} {self.labels.shape}")

  def __len__(self) -> int:
    return len(self.labels)

  def take(self, indices: np.ndarray) -> "Split":
    """Return the examples at `indices`, in that order."""
    return Split(self.images[indices], self.labels[indices])


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset held in memory, with the training statistics used to normalise it.

  `mean` is the per-pixel mean of `train` (after the validation hold-out) in [0, 1] units,
  float32 (H, W, C). `std` is None unless normalisation by the per-channel standard deviation
  was requested, and is then float32 (C,). `flip` is the dataset's default for random
  horizontal flips, and `source` names the files or tfds directory the examples were read from.
  """

  name: str
  train: Split
  validation: Split | None
  test: Split
  num_classes: int
  mean: np.ndarray
  std: np.ndarray | None
  flip: bool
  source: str

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train.images.shape[1:])
