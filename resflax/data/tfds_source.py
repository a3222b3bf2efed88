"""Reading prepared tfds datasets as random-access data sources, without TensorFlow.

`DatasetBuilder.as_data_source` (what `tfds.data_source` returns) reads array_record files with
the `array_record` package and decodes images with PIL, so reading needs no TensorFlow.
Preparing a dataset (download, then encode and write) does need TensorFlow, so machines without
it read data prepared elsewhere in array_record format.
"""

from collections.abc import Sequence
import importlib.util
import time
from typing import Any

from absl import logging
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import download_manager
from tensorflow_datasets.core.download import util as download_util

from resflax.data.errors import DataUnavailableError
from resflax.data.dataset import Split

_IMAGENET_MANUAL_FILES = "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar"


def prepare_command(name: str, data_dir: str) -> str:
  """Return the shell command that prepares `name` as array_record files under `data_dir`."""
  # NOTE: tensorflow-datasets 4.9.10 imports importlib_resources when preparing any dataset but
  # declares the dependency only for Python < 3.9, so the command installs it explicitly.
  return (f"pip install tensorflow importlib_resources && "
          f"tfds build {name} --data_dir={data_dir} --file_format=array_record")


def _fix_hint(name: str, data_dir: str) -> str:
  command = prepare_command(name, data_dir)
  if name == "imagenet2012":
    return (f"To fix it, put {_IMAGENET_MANUAL_FILES} in {data_dir}/downloads/manual, "
            f"run `{command}`, then pass --config.data_dir={data_dir}.")
  return (f"To fix it, run `{command}` on a machine with network access, "
          f"then pass --config.data_dir={data_dir}.")


def _download_and_prepare(name: str, data_dir: str | None) -> None:
  builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  root = str(builder.data_dir_root)
  if importlib.util.find_spec("tensorflow") is None:
    raise DataUnavailableError(
        f"{name}: not prepared in {builder.data_dir}, and preparing it (download=True) needs "
        f"TensorFlow, which is not installed.\n{_fix_hint(name, root)}")
  logging.info("Downloading and preparing %s in %s.", name, builder.data_dir)
  # NOTE: no test reaches this download, because the tests have neither TensorFlow nor network
  # access. tfds raises AssertionError when a manual directory is missing or empty.
  try:
    builder.download_and_prepare()
  except (OSError, ImportError, AssertionError, download_manager.NonMatchingChecksumError,
          download_util.DownloadError) as error:
    reason = str(error).splitlines()[0]
    raise DataUnavailableError(
        f"{name}: download and preparation in {builder.data_dir} failed: {reason}\n"
        f"{_fix_hint(name, root)}") from None


def _unavailable_message(builder: tfds.core.DatasetBuilder, error: Exception) -> str:
  name = builder.name
  if not builder.is_prepared():
    return (f"{name}: no prepared data in {builder.data_dir}, and downloading is off "
            f"(download=False).\n{_fix_hint(name, str(builder.data_dir_root))}")
  file_format = builder.info.file_format
  if file_format != tfds.core.FileFormat.ARRAY_RECORD:
    problem = (f"is in {file_format.value} format, "
               "but reading it without TensorFlow needs array_record")
  else:
    problem = f"cannot be opened: {str(error).splitlines()[0]}"
  return f"{name}: the data in {builder.data_dir} {problem}.\n{_fix_hint(name, 'NEW_DIR')}"


def open_splits(
    name: str,
    splits: Sequence[str],
    *,
    data_dir: str | None,
    download: bool,
) -> tuple[list[Sequence[dict[str, Any]]], str]:
  """Open random-access sources of `splits` and return them with the directory they read.

  Raises DataUnavailableError when the dataset is not prepared in array_record format and
  `download` is False, or when downloading and preparing it fails.
  """
  builder = tfds.builder(name, data_dir=data_dir)
  if download and not builder.is_prepared():
    _download_and_prepare(name, data_dir)
    builder = tfds.builder(name, data_dir=data_dir)
  try:
    sources = builder.as_data_source(split=list(splits))
  except (NotImplementedError, ValueError, KeyError) as error:
    raise DataUnavailableError(_unavailable_message(builder, error)) from None
  return list(sources), str(builder.data_dir)


def read_split(source: Sequence[dict[str, Any]], description: str) -> Split:
  """Decode every example of `source` once into uint8 images and int32 labels held in memory."""
  start = time.perf_counter()
  num_examples = len(source)
  if num_examples == 0:
    raise DataUnavailableError(f"{description} contains no examples.")
  first = source[0]
  images = np.empty((num_examples, *first["image"].shape), np.uint8)
  labels = np.empty((num_examples,), np.int32)
  for i in range(num_examples):
    example = source[i]
    images[i] = example["image"]
    labels[i] = example["label"]
  seconds = time.perf_counter() - start
  logging.info("Read %d examples of %s in %.1f s.", num_examples, description, seconds)
  return Split(images, labels)
