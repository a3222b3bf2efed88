"""The data of a sweep's analyses: its dataset and the fixed batches every net is measured on."""

import dataclasses
from collections.abc import Sequence

import numpy as np

from resflax import data
from resflax.analysis import identity
from resflax.training import feeds
from resflax.analysis.runs import AnalysisError
from resflax.analysis.runs import SweepRun

# Config keys that decide which dataset `data.load_from_config` reads and how it splits it.
DATA_KEYS = ("dataset", "data_source", "data_dir", "idx_dir", "download", "validation_size",
             "split_seed", "normalize_std")


@dataclasses.dataclass(frozen=True)
class Inputs:
  """The dataset and the fixed batches of one seed's runs.

  Attributes:
    dataset: the sweep's dataset, held in memory.
    test_images: the first `batch_size` test images, normalised as in evaluation (float32).
    test_labels: their labels (int32).
    train_images: the first `batch_size` examples of the fixed training subset on which the
      sweep measures training error, normalised without augmentation (float32).
    train_labels: their labels (int32).
  """

  dataset: data.Dataset
  test_images: np.ndarray
  test_labels: np.ndarray
  train_images: np.ndarray
  train_labels: np.ndarray


def _check_same_data(runs: Sequence[SweepRun]) -> None:
  first = runs[0]
  for run in runs[1:]:
    differing = [key for key in DATA_KEYS if run.config.get(key) != first.config.get(key)]
    if differing:
      raise AnalysisError(
          f"runs {first.name} and {run.name} read different data ({', '.join(differing)} "
          "differ). Analyse runs of one sweep config together.")


def _normalised(split: data.Split, size: int, dataset: data.Dataset) -> tuple[np.ndarray,
                                                                               np.ndarray]:
  images = data.preprocess_eval(split.images[:size], dataset.mean, dataset.std)
  return np.asarray(images), split.labels[:size]


def load_inputs(runs: Sequence[SweepRun], batch_size: int) -> Inputs:
  """Load the dataset of `runs` and cut their fixed batches of `batch_size` examples.

  All runs must read the same data and share the fixed training subset, which depends on
  `final_train_eval_size` and the seed. Raises AnalysisError otherwise or for a streamed dataset,
  and data.DataUnavailableError when the data cannot be read.
  """
  if batch_size < 2:
    raise AnalysisError(f"invalid batch size {batch_size}: the analyses need at least 2 images.")
  _check_same_data(runs)
  config = runs[0].config
  dataset = data.load_from_config(config)
  if not isinstance(dataset, data.Dataset):
    raise AnalysisError(f"{config.dataset} is streamed from disk, but the analyses read "
                        "in-memory datasets (CIFAR, SVHN, the MNIST family) only.")
  subsets = {(feeds.final_train_eval_size(run.config), run.seed) for run in runs}
  if len(subsets) > 1:
    raise AnalysisError(f"the runs measure training error on different subsets "
                        f"(final_train_eval_size, seed) {sorted(subsets)}. Analyse one seed at "
                        "a time.")
  test_images, test_labels = _normalised(dataset.test, batch_size, dataset)
  train_images, train_labels = _normalised(identity.training_subset(dataset, config), batch_size,
                                           dataset)
  return Inputs(dataset, test_images, test_labels, train_images, train_labels)
