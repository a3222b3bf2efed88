"""Loading a named dataset into memory: reading, the validation hold-out and the statistics."""

import os

import ml_collections
import numpy as np

from resflax.data import catalog
from resflax.data import idx
from resflax.data import imagenet
from resflax.data import statistics
from resflax.data import tfds_source
from resflax.data.errors import DataUnavailableError
from resflax.data.dataset import Dataset, Split

SOURCES = ("tfds", "idx")


def validation_indices(
    num_examples: int, validation_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Split range(num_examples) into sorted (train, validation) indices, fixed by `seed`.

  The same (num_examples, validation_size, seed) gives the same split on every machine and numpy
  version that keeps `np.random.default_rng` stable.
  """
  if not 0 <= validation_size < num_examples:
    raise ValueError(
        f"validation_size must be in [0, {num_examples}) for {num_examples} training examples, "
        f"got {validation_size}.")
  permutation = np.random.default_rng(seed).permutation(num_examples)
  return np.sort(permutation[validation_size:]), np.sort(permutation[:validation_size])


def hold_out_validation(
    split: Split, validation_size: int, seed: int
) -> tuple[Split, Split | None]:
  """Return (train, validation) Splits, with `validation_size` examples held out of `split`."""
  if validation_size == 0:
    return split, None
  train_indices, held_out_indices = validation_indices(len(split), validation_size, seed)
  return split.take(train_indices), split.take(held_out_indices)


def _read_idx(name: str, idx_dir: str, num_classes: int) -> tuple[Split, Split, str]:
  if name not in catalog.IDX_DATASETS:
    raise ValueError(f"source='idx' supports {', '.join(catalog.IDX_DATASETS)}, not {name!r}.")
  debian_dir = os.path.realpath(catalog.DEBIAN_FASHION_MNIST_DIR)
  if name == "mnist" and os.path.realpath(idx_dir) == debian_dir:
    raise DataUnavailableError(
        f"mnist: idx_dir is {idx_dir}, which contains Fashion-MNIST, not MNIST.\n"
        "To fix it, pass --config.idx_dir=DIR naming a folder with the four MNIST IDX files.")
  train = idx.read_idx_split(name, idx_dir, "train", num_classes)
  test = idx.read_idx_split(name, idx_dir, "test", num_classes)
  return train, test, f"IDX files in {idx_dir}"


def _read_tfds(
    name: str, test_split: str, data_dir: str | None, download: bool
) -> tuple[Split, Split, str]:
  sources, directory = tfds_source.open_splits(
      name, ["train", test_split], data_dir=data_dir, download=download)
  train = tfds_source.read_split(sources[0], f"{name} train in {directory}")
  test = tfds_source.read_split(sources[1], f"{name} {test_split} in {directory}")
  return train, test, f"tfds array_record data in {directory}"


def load_dataset(
    name: str,
    *,
    source: str = "tfds",
    data_dir: str | None = None,
    download: bool = False,
    idx_dir: str = catalog.DEBIAN_FASHION_MNIST_DIR,
    validation_size: int = 0,
    split_seed: int = 0,
    normalize_std: bool = False,
) -> Dataset:
  """Read `name` into memory as uint8 arrays and compute its normalisation statistics.

  `source` is "tfds" (prepared array_record data in `data_dir`, the tfds default when None) or
  "idx" (MNIST-format IDX files in `idx_dir`). `validation_size` examples, chosen by
  `split_seed`, are held out of the training split. The per-pixel mean, and the per-channel std
  when `normalize_std` is set, are computed on the remaining training examples only.

  Raises ValueError for an unknown name or source and DataUnavailableError when the data cannot
  be read. Neither falls back to other data.
  """
  spec = catalog.dataset_spec(name)
  if not spec.in_memory:
    raise ValueError(
        f"{name} is streamed from disk, not held in memory: "
        "load it with resflax.data.load_imagenet.")
  if source == "idx":
    full_train, test, where = _read_idx(name, idx_dir, spec.num_classes)
  elif source == "tfds":
    full_train, test, where = _read_tfds(name, spec.test_split, data_dir, download)
  else:
    raise ValueError(f"Unknown data source {source!r}. Valid sources: {', '.join(SOURCES)}.")

  train, validation = hold_out_validation(full_train, validation_size, split_seed)
  mean = statistics.pixel_mean(train.images)
  std = statistics.channel_std(train.images, mean) if normalize_std else None
  return Dataset(
      name=name,
      train=train,
      validation=validation,
      test=test,
      num_classes=spec.num_classes,
      mean=mean,
      std=std,
      flip=spec.flip,
      source=where,
  )


def load_from_config(config: ml_collections.ConfigDict) -> Dataset | imagenet.StreamedDataset:
  """Load `config.dataset` with the data keys of `config` (see configs/default.py).

  Returns a StreamedDataset for imagenet2012 (see load_imagenet) and a Dataset for the others.
  """
  if not catalog.dataset_spec(config.dataset).in_memory:
    return imagenet.load_imagenet(
        data_dir=config.data_dir, download=config.download, normalize_std=config.normalize_std)
  return load_dataset(
      config.dataset,
      source=config.data_source,
      data_dir=config.data_dir,
      download=config.download,
      idx_dir=config.idx_dir,
      validation_size=config.validation_size,
      split_seed=config.split_seed,
      normalize_std=config.normalize_std,
  )


def resolve_flip(augment_flip: bool | None, dataset: Dataset) -> bool:
  """Return `augment_flip`, or the dataset's default flip when it is None."""
  return dataset.flip if augment_flip is None else augment_flip
