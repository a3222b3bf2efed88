"""Tests of resflax.data: loading, offline errors, splits, batching, augmentation and metrics.

Nothing here downloads. tfds paths run under `tfds.testing.mock_data`, or read a tiny real
array_record dataset that tfds's own writer prepares in a temporary directory (PIL encodes its
images, so TensorFlow is not needed). The Fashion-MNIST test reads the files of Debian's
dataset-fashion-mnist package, which CI installs.
"""

import gzip
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import traceback

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.datasets.imagenet2012 import imagenet2012_dataset_builder
from tensorflow_datasets.image_classification import cifar

from resflax import data
from resflax.data import idx
from resflax.data import imagenet
from resflax.data import statistics

DATA_PACKAGE_DIR = os.path.dirname(data.__file__)
REPO_ROOT = pathlib.Path(data.__file__).parents[2]
TINY_TRAIN_SIZE = 30
TINY_TEST_SIZE = 12


def _tiny_images(count: int, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


class _TinyCifar10(cifar.Cifar10, skip_registration=True):
  """cifar10 with a few random examples, written as real tfds array_record files."""

  name = "cifar10"

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._examples(TINY_TRAIN_SIZE, 0), "test": self._examples(TINY_TEST_SIZE, 1)}

  def _examples(self, count, seed):
    for i, image in enumerate(_tiny_images(count, seed)):
      # A PIL image makes tfds encode the PNG with PIL instead of TensorFlow.
      yield f"{seed}_{i}", {"id": f"{seed}_{i}", "image": Image.fromarray(image), "label": i % 10}


@pytest.fixture(scope="module")
def tiny_cifar10_dir(tmp_path_factory) -> str:
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  _TinyCifar10(data_dir=data_dir, file_format="array_record").download_and_prepare()
  return data_dir


class _TinyImagenet(imagenet2012_dataset_builder.Builder, skip_registration=True):
  """imagenet2012 with a few random JPEG images of different sizes, as array_record files."""

  name = "imagenet2012"
  # The builder reads its label names from the folder of the real builder's module.
  pkg_dir_path = epath.Path(imagenet2012_dataset_builder.__file__).parent

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._examples(6, 0), "validation": self._examples(5, 1)}

  def _examples(self, count, seed):
    rng = np.random.default_rng(seed)
    for i in range(count):
      image = rng.integers(0, 256, (50 + 10 * i, 80, 3), dtype=np.uint8)
      example = {"file_name": f"{seed}_{i}.JPEG", "image": Image.fromarray(image), "label": i}
      yield f"{seed}_{i}", example


@pytest.fixture(scope="module")
def tiny_imagenet_dir(tmp_path_factory) -> str:
  data_dir = str(tmp_path_factory.mktemp("tfds_imagenet"))
  _TinyImagenet(data_dir=data_dir, file_format="array_record").download_and_prepare()
  return data_dir


def _assert_clean_error(error_info: pytest.ExceptionInfo, *fragments: str) -> None:
  message = str(error_info.value)
  for fragment in fragments:
    assert fragment in message, f"{fragment!r} missing from: {message}"
  assert len(message.splitlines()) <= 2, message
  assert error_info.value.__cause__ is None
  assert error_info.value.__context__ is None or error_info.value.__suppress_context__
  innermost_file = traceback.extract_tb(error_info.tb)[-1].filename
  assert innermost_file.startswith(DATA_PACKAGE_DIR), innermost_file


def _write_idx(path: pathlib.Path, array: np.ndarray, compress: bool) -> None:
  header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
  content = header + array.astype(np.uint8).tobytes()
  if compress:
    path = path.with_name(path.name + ".gz")
    path.write_bytes(gzip.compress(content))
  else:
    path.write_bytes(content)


def _write_mnist_copy(directory: pathlib.Path, compress: bool = True) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(3)
  arrays = {
      "train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28)),
      "train-labels-idx1-ubyte": np.arange(20) % 10,
      "t10k-images-idx3-ubyte": rng.integers(0, 256, (7, 28, 28)),
      "t10k-labels-idx1-ubyte": np.arange(7) % 10,
  }
  directory.mkdir(parents=True, exist_ok=True)
  for stem, array in arrays.items():
    _write_idx(directory / stem, array, compress)
  return arrays


# Import.


def test_import_skips_tensorflow():
  code = "import sys, resflax.data; print('tensorflow' in sys.modules)"
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=REPO_ROOT)
  assert result.stdout.strip() == "False"


# tfds, under mock_data.


def test_mock_cifar10_loads():
  with tfds.testing.mock_data(num_examples=24):
    dataset = data.load_dataset("cifar10", data_dir="/nonexistent", validation_size=4)
  assert dataset.train.images.shape == (20, 32, 32, 3)
  assert dataset.train.images.dtype == np.uint8
  assert dataset.train.labels.dtype == np.int32
  assert len(dataset.validation) == 4
  assert len(dataset.test) == 24
  assert dataset.num_classes == 10
  assert dataset.mean.shape == (32, 32, 3)
  assert dataset.mean.dtype == np.float32
  assert dataset.std is None
  assert dataset.flip
  assert dataset.train.labels.min() >= 0
  assert dataset.train.labels.max() < 10


def test_mock_fashion_mnist_loads():
  with tfds.testing.mock_data(num_examples=16):
    dataset = data.load_dataset("fashion_mnist", normalize_std=True)
  assert dataset.train.images.shape == (16, 28, 28, 1)
  assert dataset.test.images.shape == (16, 28, 28, 1)
  assert dataset.validation is None
  assert dataset.std.shape == (1,)
  assert dataset.flip


def test_mock_digits_default_no_flip():
  with tfds.testing.mock_data(num_examples=4):
    for name in ("mnist", "svhn_cropped"):
      assert not data.load_dataset(name).flip, name


def test_mock_imagenet_streams():
  with tfds.testing.mock_data(num_examples=10):
    dataset = data.load_imagenet()
    batch = imagenet.train_batch(dataset.train, 4, seed=0, step=3)
    eval_batches = list(imagenet.eval_batches(dataset.test, 4, num_threads=2))
  assert batch["images"].shape == (4, 224, 224, 3)
  assert batch["images"].dtype == np.uint8
  assert dataset.mean.shape == (1, 1, 3)
  assert len(eval_batches) == 3
  assert sum(b["mask"].sum() for b in eval_batches) == 10


def test_load_from_config_reads_keys():
  from resflax.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.dataset = "cifar10"
  config.validation_size = 5
  config.normalize_std = True
  with tfds.testing.mock_data(num_examples=12):
    dataset = data.load_from_config(config)
  assert len(dataset.train) == 7
  assert len(dataset.validation) == 5
  assert dataset.std is not None


def test_load_from_config_streams_imagenet():
  from resflax.configs import imagenet as imagenet_config  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=3):
    dataset = data.load_from_config(imagenet_config.get_config())
  assert isinstance(dataset, data.StreamedDataset)
  assert len(dataset.test) == 3


# tfds, real array_record files.


def test_array_record_reads_examples(tiny_cifar10_dir):
  dataset = data.load_dataset("cifar10", data_dir=tiny_cifar10_dir)
  written = {image.tobytes() for image in _tiny_images(TINY_TRAIN_SIZE, 0)}
  read = {image.tobytes() for image in dataset.train.images}
  assert read == written
  assert len(dataset.test) == TINY_TEST_SIZE
  assert tiny_cifar10_dir in dataset.source


def test_array_record_mean_is_train_only(tiny_cifar10_dir):
  dataset = data.load_dataset("cifar10", data_dir=tiny_cifar10_dir, validation_size=10)
  expected = dataset.train.images.astype(np.float64).mean(axis=0) / 255.0
  np.testing.assert_allclose(dataset.mean, expected, rtol=1e-6)


def test_std_gives_unit_variance(tiny_cifar10_dir):
  dataset = data.load_dataset("cifar10", data_dir=tiny_cifar10_dir, normalize_std=True)
  normalized = np.asarray(data.normalize(dataset.train.images, dataset.mean, dataset.std))
  np.testing.assert_allclose(normalized.std(axis=(0, 1, 2)), 1.0, rtol=1e-4)
  np.testing.assert_allclose(normalized.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)


def test_array_record_imagenet_streams(tiny_imagenet_dir):
  dataset = data.load_imagenet(data_dir=tiny_imagenet_dir)
  batch = imagenet.train_batch(dataset.train, 4, seed=0, step=0)
  eval_batches = list(imagenet.eval_batches(dataset.test, 4, num_threads=2))
  assert len(dataset.train) == 6
  assert batch["images"].shape == (4, 224, 224, 3)
  assert len(set(batch["labels"].tolist())) == 4  # four different training examples
  assert [batch["mask"].sum() for batch in eval_batches] == [4, 1]
  real_labels = np.concatenate([b["labels"][b["mask"] > 0] for b in eval_batches])
  assert sorted(real_labels.tolist()) == list(range(5))


# Offline errors.


def test_missing_data_dir_message(tmp_path):
  missing = str(tmp_path / "absent")
  with pytest.raises(data.DataUnavailableError) as error_info:
    data.load_dataset("cifar10", data_dir=missing, download=False)
  _assert_clean_error(error_info, "cifar10", missing, "download=False",
                      f"tfds build cifar10 --data_dir={missing} --file_format=array_record",
                      "pip install tensorflow", f"--config.data_dir={missing}")


def test_tfrecord_data_message(tiny_cifar10_dir, tmp_path):
  copy = tmp_path / "tfrecord"
  shutil.copytree(tiny_cifar10_dir, copy)
  info_path = copy / "cifar10" / "3.0.2" / "dataset_info.json"
  info = json.loads(info_path.read_text())
  info["fileFormat"] = "tfrecord"
  info_path.write_text(json.dumps(info))
  with pytest.raises(data.DataUnavailableError) as error_info:
    data.load_dataset("cifar10", data_dir=str(copy))
  _assert_clean_error(error_info, "cifar10", "tfrecord format", "--file_format=array_record")


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None,
                    reason="TensorFlow is installed, so preparing would try to download")
def test_download_needs_tensorflow(tmp_path):
  missing = str(tmp_path / "absent")
  with pytest.raises(data.DataUnavailableError) as error_info:
    data.load_dataset("cifar10", data_dir=missing, download=True)
  _assert_clean_error(error_info, "cifar10", missing, "TensorFlow", "tfds build cifar10")


def test_imagenet_message_names_manual(tmp_path):
  with pytest.raises(data.DataUnavailableError) as error_info:
    data.load_imagenet(data_dir=str(tmp_path))
  _assert_clean_error(error_info, "imagenet2012", "ILSVRC2012_img_train.tar",
                      f"{tmp_path}/downloads/manual", "tfds build imagenet2012")


def test_missing_idx_dir_message(tmp_path):
  missing = str(tmp_path / "fashion-mnist")
  with pytest.raises(data.DataUnavailableError) as error_info:
    data.load_dataset("fashion_mnist", source="idx", idx_dir=missing)
  _assert_clean_error(error_info, "fashion_mnist", missing, "apt-get install dataset-fashion-mnist",
                      "--config.idx_dir=DIR")


def test_corrupt_idx_message(tmp_path):
  _write_mnist_copy(tmp_path)
  path = tmp_path / "train-images-idx3-ubyte.gz"
  path.write_bytes(path.read_bytes()[:100])
  with pytest.raises(data.DataUnavailableError) as error_info:
    data.load_dataset("mnist", source="idx", idx_dir=str(tmp_path))
  _assert_clean_error(error_info, "mnist", str(path), "--config.idx_dir=DIR")


def test_mnist_rejects_fashion_dir():
  with pytest.raises(data.DataUnavailableError, match="contains Fashion-MNIST"):
    data.load_dataset("mnist", source="idx", idx_dir=data.DEBIAN_FASHION_MNIST_DIR)


def test_unknown_dataset_lists_names():
  valid_names = "cifar10, cifar100, mnist, fashion_mnist, svhn_cropped, imagenet2012"
  with pytest.raises(ValueError, match=valid_names):
    data.load_dataset("cifar11")


def test_unknown_source_rejected():
  with pytest.raises(ValueError, match="tfds, idx"):
    data.load_dataset("mnist", source="csv")


def test_imagenet_not_in_memory():
  with pytest.raises(ValueError, match="load_imagenet"):
    data.load_dataset("imagenet2012")


# IDX files.


def test_debian_fashion_mnist_loads():
  dataset = data.load_dataset("fashion_mnist", source="idx")
  assert len(dataset.train) == 60_000
  assert len(dataset.test) == 10_000
  assert dataset.train.images.shape[1:] == (28, 28, 1)
  assert dataset.test.images.shape[1:] == (28, 28, 1)
  assert dataset.train.images.dtype == np.uint8
  assert set(np.unique(dataset.train.labels)) == set(range(10))
  assert set(np.unique(dataset.test.labels)) == set(range(10))
  assert dataset.source == f"IDX files in {data.DEBIAN_FASHION_MNIST_DIR}"


@pytest.mark.parametrize("compress", [True, False])
def test_idx_copy_loads(tmp_path, compress):
  arrays = _write_mnist_copy(tmp_path, compress)
  dataset = data.load_dataset("mnist", source="idx", idx_dir=str(tmp_path), validation_size=0)
  np.testing.assert_array_equal(dataset.train.images[..., 0], arrays["train-images-idx3-ubyte"])
  np.testing.assert_array_equal(dataset.test.labels, arrays["t10k-labels-idx1-ubyte"])
  assert not dataset.flip


def test_parse_idx_rejects_wrong_size():
  header = bytes([0, 0, 0x08, 1]) + np.asarray([5], ">u4").tobytes()
  with pytest.raises(ValueError, match="5"):
    idx.parse_idx(header + bytes(4))


def test_statistics_match_numpy():
  images = np.random.default_rng(6).integers(0, 256, (5000, 2, 2, 3), dtype=np.uint8)
  mean = statistics.pixel_mean(images)
  std = statistics.channel_std(images, mean)
  centred = images / 255.0 - images.mean(axis=0) / 255.0
  np.testing.assert_allclose(mean, images.mean(axis=0) / 255.0, rtol=1e-6)
  np.testing.assert_allclose(std, centred.std(axis=(0, 1, 2)), rtol=1e-5)


# Validation split.


def test_validation_split_disjoint_covering():
  train, held_out = data.validation_indices(50_000, 5_000, seed=0)
  assert len(train) == 45_000
  assert len(held_out) == 5_000
  assert len(np.intersect1d(train, held_out)) == 0
  np.testing.assert_array_equal(np.union1d(train, held_out), np.arange(50_000))


def test_validation_split_reproducible():
  first = data.validation_indices(50_000, 5_000, seed=7)
  second = data.validation_indices(50_000, 5_000, seed=7)
  other_seed = data.validation_indices(50_000, 5_000, seed=8)
  np.testing.assert_array_equal(first[1], second[1])
  assert not np.array_equal(first[1], other_seed[1])


def test_validation_size_too_large():
  with pytest.raises(ValueError, match="validation_size"):
    data.validation_indices(100, 100, seed=0)


def test_hold_out_keeps_examples(tiny_cifar10_dir):
  full = data.load_dataset("cifar10", data_dir=tiny_cifar10_dir)
  split = data.load_dataset("cifar10", data_dir=tiny_cifar10_dir, validation_size=10, split_seed=3)
  together = np.concatenate([split.train.images, split.validation.images])
  expected = sorted(image.tobytes() for image in full.train.images)
  assert sorted(image.tobytes() for image in together) == expected


# Exact evaluation.


def _predictor_split(num_examples: int) -> tuple[data.Split, int]:
  """Return examples whose pixel (0, 0) is the class a predictor outputs, and the correct count."""
  labels = (np.arange(num_examples) % 10).astype(np.int32)
  wrong = np.arange(num_examples) % 7 == 0
  predicted = np.where(wrong, (labels + 1) % 10, labels)
  images = np.zeros((num_examples, 4, 4, 1), np.uint8)
  images[:, 0, 0, 0] = predicted
  return data.Split(images, labels), int((~wrong).sum())


def _predict(images: np.ndarray) -> jax.Array:
  return jax.nn.one_hot(images[:, 0, 0, 0], 10)


def test_eval_batches_cover_once():
  split, _ = _predictor_split(1000)
  batches = list(data.eval_batches(split, 96))
  assert len(batches) == 11
  assert data.num_eval_batches(1000, 96) == 11
  assert all(batch["images"].shape == (96, 4, 4, 1) for batch in batches)
  assert batches[-1]["mask"].sum() == 40
  assert sum(batch["mask"].sum() for batch in batches) == 1000
  real_labels = [batch["labels"][batch["mask"] > 0] for batch in batches]
  np.testing.assert_array_equal(np.concatenate(real_labels), split.labels)


def test_eval_accuracy_exact():
  split, expected_correct = _predictor_split(1000)
  correct = count = 0
  for batch in data.eval_batches(split, 96):
    logits = _predict(batch["images"])
    batch_correct, batch_count = data.masked_error_counts(logits, batch["labels"], batch["mask"])
    correct += int(batch_correct)
    count += int(batch_count)
  assert count == 1000
  assert correct == expected_correct
  assert correct / count == expected_correct / 1000


def test_padding_has_zero_weight():
  split, _ = _predictor_split(1000)
  last = list(data.eval_batches(split, 96))[-1]
  # Padding rows are zero images labelled 0, which the predictor gets right if counted.
  logits = _predict(last["images"])
  unmasked_correct, _ = data.masked_error_counts(logits, last["labels"], np.ones(96, np.float32))
  masked_correct, masked_count = data.masked_error_counts(logits, last["labels"], last["mask"])
  real = last["mask"] > 0
  expected = int(np.sum(last["images"][real, 0, 0, 0] == last["labels"][real]))
  assert int(masked_count) == 40
  assert int(masked_correct) == expected
  assert int(unmasked_correct) == expected + 56


def test_top_k_counts():
  logits = jnp.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
  labels = jnp.array([0, 1, 2])
  correct, count = data.masked_error_counts(logits, labels, jnp.ones(3), k=2)
  assert int(correct) == 2
  assert int(count) == 3


# Training batches.


def _counting_split(num_examples: int) -> data.Split:
  images = np.zeros((num_examples, 2, 2, 1), np.uint8)
  return data.Split(images, np.arange(num_examples, dtype=np.int32))


def test_train_batch_fixed_shape():
  split = _counting_split(100)
  for step in (0, 2, 3, 7):  # 3 steps per epoch, so steps 3 and 7 fall in later epochs
    batch = data.train_batch(split, 32, seed=0, step=step)
    assert batch["images"].shape == (32, 2, 2, 1), step
    np.testing.assert_array_equal(batch["index"], np.arange(32, dtype=np.int32))


def test_epoch_visits_each_once():
  split = _counting_split(96)
  batches = [data.train_batch(split, 32, seed=1, step=step) for step in range(3)]
  labels = np.concatenate([batch["labels"] for batch in batches])
  np.testing.assert_array_equal(np.sort(labels), np.arange(96))


def test_epochs_reshuffle():
  first = data.epoch_permutation(1000, seed=0, epoch=0)
  second = data.epoch_permutation(1000, seed=0, epoch=1)
  assert not np.array_equal(first, second)
  np.testing.assert_array_equal(first, data.epoch_permutation(1000, seed=0, epoch=0))


def test_resume_matches_uninterrupted():
  split = _counting_split(100)
  uninterrupted = data.train_batches(split, 32, seed=4)
  from_start = [next(uninterrupted)["labels"] for _ in range(8)]
  resumed = data.train_batches(split, 32, seed=4, start_step=5)
  for step in range(5, 8):
    np.testing.assert_array_equal(next(resumed)["labels"], from_start[step])


def test_steps_per_epoch_drops_remainder():
  assert data.steps_per_epoch(45_000, 128) == 351
  with pytest.raises(ValueError, match="batch_size"):
    data.steps_per_epoch(10, 11)


def test_fixed_subset_deterministic():
  split = _counting_split(1000)
  subset = data.fixed_subset(split, 100, seed=2)
  assert len(subset) == 100
  assert len(np.unique(subset.labels)) == 100
  np.testing.assert_array_equal(subset.labels, np.sort(subset.labels))
  np.testing.assert_array_equal(subset.labels, data.fixed_subset(split, 100, seed=2).labels)
  assert data.fixed_subset(split, 5000, seed=2) is split


# Sharding.


def test_shard_for_devices_layout():
  batch = {"images": np.zeros((96, 4, 4, 1)), "labels": np.arange(96)}
  sharded = data.shard_for_devices(batch, 4)
  assert sharded["images"].shape == (4, 24, 4, 4, 1)
  np.testing.assert_array_equal(sharded["labels"][1], np.arange(24, 48))


def test_shard_for_devices_rejects_remainder():
  with pytest.raises(ValueError, match="100 examples does not divide over 8 devices"):
    data.shard_for_devices({"labels": np.arange(100)}, 8)


def test_process_shards_rebuild_batch():
  batch = {"labels": np.arange(12)}
  parts = [data.process_shard(batch, index, 3)["labels"] for index in range(3)]
  np.testing.assert_array_equal(np.concatenate(parts), batch["labels"])
  with pytest.raises(ValueError, match="processes"):
    data.process_shard(batch, 0, 5)


def test_check_batch_divides_message():
  data.check_batch_divides(128, 8, 2)
  with pytest.raises(ValueError, match="--config.batch_size to a positive multiple of 16"):
    data.check_batch_divides(120, 8, 2)


# Augmentation and normalisation on the device.


def _random_images(count: int = 8, size: int = 8) -> np.ndarray:
  return np.random.default_rng(5).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_keys_fixed_by_seed_step():
  images = jnp.asarray(_random_images(), jnp.float32)
  keys = data.example_keys(0, 10, jnp.arange(8))
  jitted_keys = jax.jit(data.example_keys)(0, 10, jnp.arange(8))
  first = data.augment(images, keys, pad=4, flip=True)
  again = data.augment(images, data.example_keys(0, 10, jnp.arange(8)), pad=4, flip=True)
  np.testing.assert_array_equal(first, again)
  np.testing.assert_array_equal(jax.random.key_data(jitted_keys), jax.random.key_data(keys))


def test_steps_change_augmentation():
  image = jnp.asarray(_random_images(1), jnp.float32)
  outputs = set()
  for step in range(10):
    keys = data.example_keys(0, step, jnp.arange(1))
    outputs.add(np.asarray(data.augment(image, keys, pad=4, flip=True)).tobytes())
  assert len(outputs) > 1


def test_crop_is_window_of_padding():
  images = _random_images(4)
  mean = images.mean(axis=0) / 255.0
  normalized = np.asarray(data.normalize(images, mean))
  keys = data.example_keys(1, 2, jnp.arange(4))
  outputs = np.asarray(data.preprocess_train(images, keys, mean, None, pad=2, flip=True))
  for image, output in zip(normalized, outputs):
    padded = np.pad(image, ((2, 2), (2, 2), (0, 0)))
    windows = [padded[top:top + 8, left:left + 8] for top in range(5) for left in range(5)]
    windows += [window[:, ::-1] for window in windows]
    assert any(np.allclose(output, window, rtol=0, atol=1e-6) for window in windows)


def test_augment_off_is_identity():
  images = jnp.asarray(_random_images(), jnp.float32)
  output = data.augment(images, data.example_keys(0, 0, jnp.arange(8)), pad=0, flip=False)
  np.testing.assert_array_equal(output, images)


def test_augment_same_when_split():
  images = jnp.asarray(_random_images(), jnp.float32)
  batch = {"images": np.asarray(images), "index": np.arange(8, dtype=np.int32)}
  whole = data.augment(images, data.example_keys(3, 5, batch["index"]), pad=4, flip=True)

  def augment_step(images, index):
    return data.augment(images, data.example_keys(3, 5, index), pad=4, flip=True)

  augment_step = jax.jit(augment_step)
  sharded = data.shard_for_devices(batch, 2)
  parts = [augment_step(sharded["images"][device], sharded["index"][device]) for device in range(2)]
  np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_eval_preprocess_deterministic():
  images = _random_images()
  mean = np.full((8, 8, 3), 0.4, np.float32)
  std = np.array([0.2, 0.25, 0.5], np.float32)
  first = np.asarray(data.preprocess_eval(images, mean, std))
  np.testing.assert_array_equal(first, np.asarray(data.preprocess_eval(images, mean, std)))
  np.testing.assert_allclose(first, (images / 255.0 - 0.4) / std, rtol=1e-5, atol=1e-6)


def test_train_eval_same_normalization():
  images = _random_images()
  mean = images.mean(axis=0) / 255.0
  std = np.array([0.2, 0.25, 0.5], np.float32)
  keys = data.example_keys(0, 0, jnp.arange(8))
  train = data.preprocess_train(images, keys, mean, std, pad=0, flip=False)
  np.testing.assert_array_equal(train, data.preprocess_eval(images, mean, std))


# ImageNet host-side augmentation.


def test_scale_augment_deterministic():
  image = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
  first = imagenet.scale_augment(image, np.random.default_rng((1, 2, 3)))
  second = imagenet.scale_augment(image, np.random.default_rng((1, 2, 3)))
  other = imagenet.scale_augment(image, np.random.default_rng((1, 2, 4)))
  assert first.shape == (224, 224, 3)
  np.testing.assert_array_equal(first, second)
  assert not np.array_equal(first, other)


def test_center_crop_takes_centre():
  image = np.zeros((256, 512, 3), np.uint8)
  image[:, 144:368] = 255  # exactly the central 224 columns at the eval scale
  crop = imagenet.center_crop(image)
  assert crop.shape == (224, 224, 3)
  assert crop[:, 2:-2].min() == 255


def test_imagenet_process_shards_match():
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, (40 + i, 60, 3), dtype=np.uint8) for i in range(16)]
  source = [{"image": image, "label": i} for i, image in enumerate(images)]
  whole = imagenet.train_batch(source, 8, seed=0, step=1)
  parts = [imagenet.train_batch(source, 8, seed=0, step=1, process_index=index, process_count=2)
           for index in range(2)]
  np.testing.assert_array_equal(np.concatenate([p["images"] for p in parts]), whole["images"])
  np.testing.assert_array_equal(np.concatenate([p["index"] for p in parts]), whole["index"])
