"""Reading MNIST-format IDX files (gzipped or not) with numpy alone.

An IDX file starts with two zero bytes, a data-type code and the number of dimensions, followed by
one big-endian uint32 size per dimension and then the data in row-major order.
"""

import gzip
import os

import numpy as np

from resflax.data import catalog
from resflax.data.errors import DataUnavailableError
from resflax.data.dataset import Split

_UNSIGNED_BYTE = 0x08

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def parse_idx(data: bytes) -> np.ndarray:
  """Parse the bytes of one unsigned-byte IDX file, raising ValueError if they are malformed."""
  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise ValueError("not an IDX file (the first two bytes must be zero)")
  if data[2] != _UNSIGNED_BYTE:
    raise ValueError(f"data-type code 0x{data[2]:02x} is not unsigned byte (0x08)")
  ndim = data[3]
  header_size = 4 + 4 * ndim
  if len(data) < header_size:
    raise ValueError("the header is truncated")
  shape = tuple(int(size) for size in np.frombuffer(data, ">u4", count=ndim, offset=4))
  expected_size = header_size + int(np.prod(shape))
  if len(data) != expected_size:
    raise ValueError(
        f"the header gives shape {shape}, so {expected_size} bytes, but the file has {len(data)}")
  return np.frombuffer(data, np.uint8, offset=header_size).reshape(shape)


def find_idx_file(directory: str, stem: str) -> str | None:
  """Return the path of `stem`.gz or `stem` in `directory`, preferring the gzipped file."""
  for file_name in (stem + ".gz", stem):
    path = os.path.join(directory, file_name)
    if os.path.isfile(path):
      return path
  return None


def read_idx_file(path: str) -> np.ndarray:
  """Read one IDX file, decompressing it if its name ends in .gz."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as file:
    return parse_idx(file.read())


def _fix_hint(name: str) -> str:
  hint = "pass --config.idx_dir=DIR naming a folder with the four MNIST-format IDX files"
  if name == "fashion_mnist":
    hint = (f"run `apt-get install dataset-fashion-mnist` (it installs them in "
            f"{catalog.DEBIAN_FASHION_MNIST_DIR}), or {hint}")
  return hint


def _load_array(name: str, directory: str, stem: str) -> np.ndarray:
  path = find_idx_file(directory, stem)
  if path is None:
    raise DataUnavailableError(
        f"{name}: IDX file {stem}.gz (or {stem}) not found in {directory}.\n"
        f"To fix it, {_fix_hint(name)}.")
  try:
    return read_idx_file(path)
  except (OSError, EOFError, ValueError) as error:
    raise DataUnavailableError(
        f"{name}: cannot read IDX file {path}: {error}.\n"
        f"Replace it with an intact copy, or {_fix_hint(name)}.") from None


def read_idx_split(name: str, directory: str, split: str, num_classes: int) -> Split:
  """Read one split ("train" or "test") of an MNIST-format dataset as (N, H, W, 1) images."""
  images_stem, labels_stem = SPLIT_FILES[split]
  images = _load_array(name, directory, images_stem)
  labels = _load_array(name, directory, labels_stem)

  problem = None
  if images.ndim != 3:
    problem = f"{images_stem} has shape {images.shape}, expected (N, height, width)"
  elif labels.shape != images.shape[:1]:
    problem = f"{labels_stem} has shape {labels.shape}, expected ({len(images)},) like the images"
  elif labels.size and labels.max() >= num_classes:
    problem = f"{labels_stem} contains label {labels.max()}, but {name} has {num_classes} classes"
  if problem:
    raise DataUnavailableError(
        f"{name}: invalid IDX data in {directory}: {problem}.\nTo fix it, {_fix_hint(name)}.")
  return Split(images[..., np.newaxis].copy(), labels.astype(np.int32))
