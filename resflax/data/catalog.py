"""The datasets resflax can load, with the facts about each that loading needs."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Facts about one dataset.

  `flip` is the default for random horizontal flips: off for digits, where a mirrored digit can
  become another class or no digit at all. `test_split` is the tfds split reported as the test
  set. `in_memory` is False for datasets too large to hold in host memory, which are streamed.
  """

  num_classes: int
  flip: bool
  test_split: str = "test"
  in_memory: bool = True


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(num_classes=10, flip=True),
    "cifar100": DatasetSpec(num_classes=100, flip=True),
    "mnist": DatasetSpec(num_classes=10, flip=False),
    "fashion_mnist": DatasetSpec(num_classes=10, flip=True),
    "svhn_cropped": DatasetSpec(num_classes=10, flip=False),
    "imagenet2012": DatasetSpec(
        num_classes=1000, flip=True, test_split="validation", in_memory=False),
}

# Datasets that Debian's IDX packages or any MNIST-format copy provide.
IDX_DATASETS = ("mnist", "fashion_mnist")

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def dataset_spec(name: str) -> DatasetSpec:
  """Return the spec of `name`, raising ValueError that lists the valid names if it is unknown."""
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}. Valid names: {', '.join(DATASETS)}.")
  return DATASETS[name]
