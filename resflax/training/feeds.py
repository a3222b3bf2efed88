"""Host batches for one process: training batches by step, and the evaluation sets.

A feed returns this process's contiguous part of each global batch, as `Runner.shard_batch`
expects, and sets which augmentation the train step applies on the device.
"""

from collections.abc import Iterator, Sequence
from concurrent import futures
import os
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np

from resflax import data
from resflax.data import imagenet

HostBatch = dict[str, np.ndarray]


class Feed(Protocol):
  """Host-side batches of one run.

  Attributes:
    pad: zero padding in pixels for the on-device random crop. 0 disables cropping.
    flip: whether the device flips training images at random.
    image_shape: (H, W, C) of the batches.
    eval_sets: names of the evaluation sets, among "train" (a fixed subset of the training
      split), "val" and "test".
  """

  pad: int
  flip: bool
  image_shape: tuple[int, int, int]
  eval_sets: tuple[str, ...]

  def train_batch(self, step: int) -> HostBatch:
    """Return this process's part of the global training batch of `step`."""

  def eval_batches(self, name: str, final: bool = False) -> Iterator[HostBatch]:
    """Yield this process's part of padded, masked global batches covering eval set `name`.

    With `final`, "train" is the larger subset of `final_train_eval_size` examples on which
    the run's last evaluation measures its training error.
    """

  def close(self) -> None:
    """Release threads or files."""


class InMemoryFeed:
  """Feed of a `data.Dataset` held in memory. The device crops and flips training images."""

  def __init__(self, dataset: data.Dataset, config: ml_collections.ConfigDict):
    self.pad = int(config.augment_pad)
    self.flip = data.resolve_flip(config.augment_flip, dataset)
    self.image_shape = dataset.image_shape
    self._train = dataset.train
    self._batch_size = config.batch_size
    self._eval_batch_size = config.eval_batch_size
    self._seed = config.seed
    self._splits = {"train": data.fixed_subset(dataset.train, config.train_eval_size, config.seed)}
    self._final_train = data.fixed_subset(dataset.train, final_train_eval_size(config),
                                          config.seed)
    if dataset.validation is not None:
      self._splits["val"] = dataset.validation
    self._splits["test"] = dataset.test
    self.eval_sets = tuple(self._splits)

  def train_batch(self, step: int) -> HostBatch:
    batch = data.train_batch(self._train, self._batch_size, self._seed, step)
    return data.process_shard(batch, jax.process_index(), jax.process_count())

  def eval_batches(self, name: str, final: bool = False) -> Iterator[HostBatch]:
    split = self._final_train if final and name == "train" else self._splits[name]
    for batch in data.eval_batches(split, self._eval_batch_size):
      yield data.process_shard(batch, jax.process_index(), jax.process_count())

  def close(self) -> None:
    pass


def final_train_eval_size(config: ml_collections.ConfigDict) -> int:
  """Return how many training examples the last evaluation of a run measures its error on."""
  if config.get("final_train_eval_size") is None:
    return int(config.train_eval_size)
  return int(config.final_train_eval_size)


def _training_subset(train: Sequence[Any], size: int, seed: int) -> Sequence[Any]:
  size = min(size, len(train))
  chosen = np.random.default_rng(seed).choice(len(train), size, replace=False)
  return _Subset(train, np.sort(chosen))


class _Subset(Sequence):
  """Read-only view of `source` at `indices`."""

  def __init__(self, source: Sequence[Any], indices: np.ndarray):
    self._source = source
    self._indices = indices

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, position):
    return self._source[int(self._indices[position])]


class StreamedFeed:
  """Feed of a `data.StreamedDataset` (ImageNet), whose images the host crops, rescales and flips.

  Images arrive cropped to their final size, so the device step only normalizes them.
  """

  def __init__(self, dataset: data.StreamedDataset, config: ml_collections.ConfigDict):
    self.pad = 0
    self.flip = False
    self.image_shape = (imagenet.CROP_SIZE, imagenet.CROP_SIZE, 3)
    self._host_flip = dataset.flip if config.augment_flip is None else config.augment_flip
    self._train = dataset.train
    self._batch_size = config.batch_size
    self._eval_batch_size = config.eval_batch_size
    self._seed = config.seed
    self._num_threads = os.cpu_count() or 1
    self._pool = futures.ThreadPoolExecutor(self._num_threads)
    self._sources = {"train": _training_subset(dataset.train, config.train_eval_size, config.seed),
                     "test": dataset.test}
    self._final_train = _training_subset(dataset.train, final_train_eval_size(config),
                                         config.seed)
    self.eval_sets = tuple(self._sources)

  def train_batch(self, step: int) -> HostBatch:
    return imagenet.train_batch(
        self._train, self._batch_size, self._seed, step, flip=self._host_flip,
        process_index=jax.process_index(), process_count=jax.process_count(), pool=self._pool)

  def eval_batches(self, name: str, final: bool = False) -> Iterator[HostBatch]:
    source = self._final_train if final and name == "train" else self._sources[name]
    return imagenet.eval_batches(
        source, self._eval_batch_size, process_index=jax.process_index(),
        process_count=jax.process_count(), num_threads=self._num_threads)

  def close(self) -> None:
    self._pool.shutdown()


def create_feed(dataset: data.Dataset | data.StreamedDataset,
                config: ml_collections.ConfigDict) -> Feed:
  """Return the feed for an in-memory or a streamed dataset."""
  if isinstance(dataset, data.StreamedDataset):
    return StreamedFeed(dataset, config)
  return InMemoryFeed(dataset, config)
