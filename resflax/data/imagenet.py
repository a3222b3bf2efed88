"""ImageNet (tfds `imagenet2012`), streamed from disk with host-side scale augmentation.

Images have different sizes, so cropping happens on the host with PIL and batches arrive as
uint8 (B, 224, 224, 3). On the device they only need `normalize` (with the per-channel mean of
shape (1, 1, 3)), that is preprocess_train with pad=0 and flip=False, or preprocess_eval.

NOTE: He et al. (2015) subtract a per-pixel mean and add the colour augmentation of Krizhevsky
et al. (2012). This module subtracts a per-channel mean and has no colour augmentation.
"""

from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
import dataclasses
from typing import Any

import numpy as np
from PIL import Image

from resflax.data import batching
from resflax.data import catalog
from resflax.data import tfds_source

NAME = "imagenet2012"
CROP_SIZE = 224
TRAIN_SHORTER_SIDE = (256, 480)  # range of the shorter side after the random rescale, inclusive
EVAL_SHORTER_SIDE = 256

# Per-channel mean and std of ImageNet training images in [0, 1] units, RGB: the values in common
# use, not recomputed by resflax.
CHANNEL_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 1, 3)
CHANNEL_STD = np.array([0.229, 0.224, 0.225], np.float32)

Example = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class StreamedDataset:
  """A dataset read example by example from random-access tfds sources, never held in memory.

  `test` is the split reported as the test set (ImageNet's validation split). `mean` has shape
  (1, 1, C) and `std` is None unless requested.
  """

  name: str
  train: Sequence[Example]
  test: Sequence[Example]
  num_classes: int
  mean: np.ndarray
  std: np.ndarray | None
  flip: bool
  source: str


def load_imagenet(
    *, data_dir: str | None = None, download: bool = False, normalize_std: bool = False
) -> StreamedDataset:
  """Open the prepared array_record imagenet2012 data in `data_dir` (the tfds default when None).

  Raises DataUnavailableError when it is not prepared. tfds cannot download ImageNet, so
  `download` only prepares it from the archives placed in <data_dir>/downloads/manual.
  """
  spec = catalog.dataset_spec(NAME)
  (train, test), directory = tfds_source.open_splits(
      NAME, ["train", spec.test_split], data_dir=data_dir, download=download)
  return StreamedDataset(
      name=NAME,
      train=train,
      test=test,
      num_classes=spec.num_classes,
      mean=CHANNEL_MEAN,
      std=CHANNEL_STD if normalize_std else None,
      flip=spec.flip,
      source=f"tfds array_record data in {directory}",
  )


def _resize_box(image: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
  """Resample the region `box` (left, top, right, bottom, in pixels) of `image` to size x size."""
  pil_image = Image.fromarray(image)
  return np.asarray(pil_image.resize((size, size), Image.Resampling.BILINEAR, box=box))


def scale_augment(image: np.ndarray, rng: np.random.Generator, *, flip: bool = True) -> np.ndarray:
  """Rescale to a shorter side uniform in TRAIN_SHORTER_SIDE and take a random CROP_SIZE crop.

  When `flip` is set, the crop is mirrored horizontally with probability 1/2.

  The crop is resampled straight from the original pixels, which matches cropping the rescaled
  image (up to resampling at the crop border) without rescaling the whole image.
  """
  height, width = image.shape[:2]
  scale = rng.integers(TRAIN_SHORTER_SIDE[0], TRAIN_SHORTER_SIDE[1] + 1) / min(height, width)
  top = rng.integers(0, round(height * scale) - CROP_SIZE + 1) / scale
  left = rng.integers(0, round(width * scale) - CROP_SIZE + 1) / scale
  extent = CROP_SIZE / scale
  crop = _resize_box(image, (left, top, left + extent, top + extent), CROP_SIZE)
  if flip and rng.random() < 0.5:
    crop = crop[:, ::-1]
  return crop


def center_crop(image: np.ndarray) -> np.ndarray:
  """Rescale so the shorter side is EVAL_SHORTER_SIDE and take the central CROP_SIZE crop."""
  height, width = image.shape[:2]
  scale = EVAL_SHORTER_SIDE / min(height, width)
  extent = CROP_SIZE / scale
  top = (height - extent) / 2
  left = (width - extent) / 2
  return _resize_box(image, (left, top, left + extent, top + extent), CROP_SIZE)


def _process_positions(batch_size: int, process_index: int, process_count: int) -> np.ndarray:
  if batch_size % process_count:
    raise ValueError(
        f"A batch of {batch_size} examples does not divide over {process_count} processes.")
  per_process = batch_size // process_count
  start = process_index * per_process
  return np.arange(start, start + per_process, dtype=np.int32)


def _map(
    function: Callable[[int], Any], items: Sequence[int], pool: futures.Executor | None
) -> list[Any]:
  if pool is None:
    return [function(item) for item in items]
  return list(pool.map(function, items))


def train_batch(
    source: Sequence[Example],
    batch_size: int,
    seed: int,
    step: int,
    *,
    flip: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    pool: futures.Executor | None = None,
) -> batching.Batch:
  """Read and augment this process's part of the global training batch at `step`.

  Example order follows batching.train_indices, so it depends only on (seed, step). Each
  example's augmentation comes from (seed, step, position in the global batch), and `index`
  contains those positions. Each process reads only its own contiguous part of the batch.
  """
  indices = batching.train_indices(len(source), batch_size, seed, step)
  positions = _process_positions(batch_size, process_index, process_count)

  def read(position: int) -> tuple[np.ndarray, int]:
    example = source[int(indices[position])]
    rng = np.random.default_rng((seed, step, int(position)))
    return scale_augment(example["image"], rng, flip=flip), example["label"]

  images, labels = zip(*_map(read, positions, pool))
  return {"images": np.stack(images), "labels": np.asarray(labels, np.int32), "index": positions}


def train_batches(
    source: Sequence[Example],
    batch_size: int,
    seed: int,
    start_step: int = 0,
    *,
    flip: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    num_threads: int = 16,
) -> Iterator[batching.Batch]:
  """Yield train_batch for steps start_step, start_step + 1, ... without end.

  Examples are read and augmented in `num_threads` threads.
  """
  with futures.ThreadPoolExecutor(num_threads) as pool:
    step = start_step
    while True:
      yield train_batch(source, batch_size, seed, step, flip=flip, process_index=process_index,
                        process_count=process_count, pool=pool)
      step += 1


def eval_batches(
    source: Sequence[Example],
    batch_size: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
    num_threads: int = 16,
) -> Iterator[batching.Batch]:
  """Yield this process's part of centre-cropped global batches that cover `source` once.

  Positions past the end of `source` are zero images with label 0 and mask 0.0.
  """
  positions = _process_positions(batch_size, process_index, process_count)

  def read(index: int) -> tuple[np.ndarray, int]:
    example = source[int(index)]
    return center_crop(example["image"]), example["label"]

  with futures.ThreadPoolExecutor(num_threads) as pool:
    for start in range(0, len(source), batch_size):
      indices = start + positions
      mask = (indices < len(source)).astype(np.float32)
      images = np.zeros((len(positions), CROP_SIZE, CROP_SIZE, 3), np.uint8)
      labels = np.zeros((len(positions),), np.int32)
      # Positions are contiguous, so the real examples come first and the padding last.
      for row, (image, label) in enumerate(_map(read, indices[indices < len(source)], pool)):
        images[row] = image
        labels[row] = label
      yield {"images": images, "labels": labels, "mask": mask}
