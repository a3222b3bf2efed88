"""Splitting global batches over processes and over the local devices of a process."""

from collections.abc import Mapping

import numpy as np


def check_batch_divides(
    batch_size: int, num_devices: int, process_count: int = 1, *, name: str = "batch_size"
) -> None:
  """Raise ValueError unless `batch_size` splits evenly over all processes and their devices.

  `num_devices` is the number of local devices of one process (jax.local_device_count()), and
  `name` is the config key named in the message.
  """
  multiple = num_devices * process_count
  if batch_size < 1 or batch_size % multiple:
    raise ValueError(
        f"{name}={batch_size} does not divide over {process_count} process(es) with {num_devices} "
        f"local device(s) each; set --config.{name} to a positive multiple of {multiple}.")


def _check_leading_axis(batch: Mapping[str, np.ndarray], parts: int, part_name: str) -> int:
  sizes = {key: value.shape[0] for key, value in batch.items()}
  size = next(iter(sizes.values()))
  if any(other != size for other in sizes.values()):
    raise ValueError(f"batch arrays have different leading sizes: {sizes}.")
  if size % parts:
    raise ValueError(
        f"A batch of {size} examples does not divide over {parts} {part_name}; "
        f"use a batch size that is a multiple of {parts}.")
  return size


def shard_for_devices(batch: Mapping[str, np.ndarray], num_devices: int) -> dict[str, np.ndarray]:
  """Reshape each array's leading axis to (num_devices, per_device), the pmap layout."""
  _check_leading_axis(batch, num_devices, "devices")
  return {key: value.reshape(num_devices, -1, *value.shape[1:]) for key, value in batch.items()}


def process_shard(
    batch: Mapping[str, np.ndarray], process_index: int, process_count: int
) -> dict[str, np.ndarray]:
  """Return process `process_index`'s contiguous slice of a global batch."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}.")
  size = _check_leading_axis(batch, process_count, "processes")
  per_process = size // process_count
  start = process_index * per_process
  return {key: value[start:start + per_process] for key, value in batch.items()}
