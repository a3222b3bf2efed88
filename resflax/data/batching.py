"""Deterministic host-side batching of in-memory splits.

Every training batch is a function of (seed, step) alone, so a run resumed at any step reads
exactly the batches an uninterrupted run would have read.
"""

from collections.abc import Iterator
import functools
import itertools

import numpy as np

from resflax.data.dataset import Split

Batch = dict[str, np.ndarray]


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Return the number of full batches per epoch; the remainder of each epoch is dropped."""
  if not 1 <= batch_size <= num_examples:
    raise ValueError(
        f"batch_size must be in [1, {num_examples}] for {num_examples} examples, got {batch_size}.")
  return num_examples // batch_size


@functools.lru_cache(maxsize=4)
def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """Return the read-only order in which epoch `epoch` visits the examples, fixed by its seed."""
  permutation = np.random.default_rng((seed, epoch)).permutation(num_examples)
  permutation.flags.writeable = False
  return permutation


def train_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Return the example indices of the global training batch at `step`."""
  epoch, position = divmod(int(step), steps_per_epoch(num_examples, batch_size))
  permutation = epoch_permutation(num_examples, int(seed), epoch)
  return permutation[position * batch_size:(position + 1) * batch_size]


def train_batch(split: Split, batch_size: int, seed: int, step: int) -> Batch:
  """Return the global training batch at `step`: images uint8, labels int32 and index int32.

  `index` is each example's position in the global batch, from which the device derives its
  augmentation key (see `example_keys`).
  """
  indices = train_indices(len(split), batch_size, seed, step)
  return {
      "images": split.images[indices],
      "labels": split.labels[indices],
      "index": np.arange(batch_size, dtype=np.int32),
  }


def train_batches(
    split: Split, batch_size: int, seed: int, start_step: int = 0
) -> Iterator[Batch]:
  """Yield the global training batches of steps start_step, start_step + 1, ... without end."""
  for step in itertools.count(start_step):
    yield train_batch(split, batch_size, seed, step)


def eval_batches(split: Split, batch_size: int) -> Iterator[Batch]:
  """Yield batches of `batch_size` that cover every example exactly once, in order.

  The last batch is padded with zero images and label 0. `mask` is 1.0 on real examples and 0.0
  on padding, so masked metrics count each example once.
  """
  for start in range(0, len(split), batch_size):
    images = split.images[start:start + batch_size]
    labels = split.labels[start:start + batch_size]
    num_real = len(labels)
    mask = np.zeros((batch_size,), np.float32)
    mask[:num_real] = 1.0
    padding = batch_size - num_real
    if padding:
      images = np.concatenate([images, np.zeros((padding, *images.shape[1:]), np.uint8)])
      labels = np.concatenate([labels, np.zeros((padding,), np.int32)])
    yield {"images": images, "labels": labels, "mask": mask}


def num_eval_batches(num_examples: int, batch_size: int) -> int:
  """Return how many batches eval_batches yields."""
  return -(-num_examples // batch_size)


def fixed_subset(split: Split, size: int, seed: int) -> Split:
  """Return `size` examples of `split` chosen by `seed`, in their original order.

  The whole split is returned when it has no more than `size` examples.
  """
  if size < 1:
    raise ValueError(f"size must be positive, got {size}.")
  if size >= len(split):
    return split
  indices = np.random.default_rng(seed).choice(len(split), size, replace=False)
  return split.take(np.sort(indices))
