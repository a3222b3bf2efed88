"""Data for resflax: from a dataset name to device-ready batches.

Small datasets (CIFAR, SVHN, the MNIST family) are read once into host memory as uint8 arrays.
Host code batches them deterministically from (seed, step), and the jitted steps normalise and
augment them on the device. ImageNet is streamed (see resflax.data.imagenet).
"""

from resflax.data.batching import eval_batches
from resflax.data.batching import epoch_permutation
from resflax.data.batching import fixed_subset
from resflax.data.batching import num_eval_batches
from resflax.data.batching import steps_per_epoch
from resflax.data.batching import train_batch
from resflax.data.batching import train_batches
from resflax.data.batching import train_indices
from resflax.data.catalog import DATASETS
from resflax.data.catalog import DEBIAN_FASHION_MNIST_DIR
from resflax.data.errors import DataUnavailableError
from resflax.data.imagenet import load_imagenet
from resflax.data.imagenet import StreamedDataset
from resflax.data.loading import hold_out_validation
from resflax.data.loading import load_dataset
from resflax.data.loading import load_from_config
from resflax.data.loading import resolve_flip
from resflax.data.loading import validation_indices
from resflax.data.metrics import masked_error_counts
from resflax.data.preprocess import augment
from resflax.data.preprocess import example_keys
from resflax.data.preprocess import normalize
from resflax.data.preprocess import preprocess_eval
from resflax.data.preprocess import preprocess_train
from resflax.data.sharding import check_batch_divides
from resflax.data.sharding import process_shard
from resflax.data.sharding import shard_for_devices
from resflax.data.dataset import Dataset
from resflax.data.dataset import Split
