"""Checks and measurements of the identity construction: equal logits, training error on the
sweep's fixed training subset, and optional further training of a deepened net."""

import functools
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from resflax import data
from resflax import models
from resflax import training
from resflax.training import checkpoint
from resflax.training import feeds
from resflax.training import loop


@functools.partial(jax.jit, static_argnames="model")
def _eval_logits(model: nn.Module, variables: Any, images: jax.Array) -> jax.Array:
  return model.apply(variables, images, train=False)


def max_logit_difference(shallow_model: nn.Module, shallow_variables: Any, deep_model: nn.Module,
                         deep_variables: Any, images: jax.Array) -> tuple[float, float]:
  """Return (max |deep - shallow| over all logits, max |shallow logit|) in evaluation mode.

  Convolutions run at the highest precision, because a GPU's default TF32 convolutions would
  round the added identity layers' outputs to 10 mantissa bits.
  """
  with jax.default_matmul_precision("highest"):
    shallow = np.asarray(_eval_logits(shallow_model, shallow_variables, images))
    deep = np.asarray(_eval_logits(deep_model, deep_variables, images))
  return float(np.max(np.abs(deep - shallow))), float(np.max(np.abs(shallow)))


@functools.partial(jax.jit, static_argnames="model")
def _error_counts(model: nn.Module, variables: Any, batch: dict[str, jax.Array],
                  mean: jax.Array, std: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  images = data.preprocess_eval(batch["images"], mean, std)
  logits = model.apply(variables, images, train=False)
  correct, count = data.masked_error_counts(logits, batch["labels"], batch["mask"])
  return count - correct, count


def error_rate(model: nn.Module, variables: Any, split: data.Split, mean: np.ndarray,
               std: np.ndarray | None, batch_size: int) -> float:
  """Return the fraction of `split` that `model` misclassifies in evaluation mode.

  Computed as the training loop's evaluation is, so on the sweep's fixed training subset it
  reproduces a run's `train_error`.
  """
  errors = count = 0
  for batch in data.eval_batches(split, batch_size):
    batch_errors, batch_count = _error_counts(model, variables, batch, mean, std)
    errors += int(batch_errors)
    count += int(batch_count)
  return errors / count


def training_subset(dataset: data.Dataset, config: ml_collections.ConfigDict) -> data.Split:
  """Return the fixed training subset on which the sweep measures a run's `train_error`.

  It is the subset `training.feeds.InMemoryFeed` evaluates as "train" at a run's last step.
  """
  return data.fixed_subset(dataset.train, feeds.final_train_eval_size(config), config.seed)


def _layout_for(config: ml_collections.ConfigDict, variables: dict[str, Any]) -> dict[str, Any]:
  scanned = models.default_scan_blocks() if config.scan_blocks is None else config.scan_blocks
  return models.stack_blocks(variables) if scanned else variables


def train_deepened(variables: dict[str, Any], config: ml_collections.ConfigDict,
                   dataset: data.Dataset, workdir: pathlib.Path) -> dict[str, Any]:
  """Train the deepened net of `config` from `variables` with `config`'s recipe, in `workdir`.

  Saves the deepened net as the step-0 checkpoint of `<workdir>/checkpoints`, with a fresh
  optimizer state, then runs `training.train_and_evaluate`, which resumes from it. A workdir
  that already has checkpoints resumes from its newest one. Returns the run's result dict.
  """
  manager = training.create_checkpoint_manager(workdir / loop.CHECKPOINT_DIR,
                                               config.keep_checkpoints)
  try:
    if manager.latest_step() is None:
      model = training.build_model(config, dataset.num_classes)
      state = training.create_train_state(jax.random.key(config.seed), model, config,
                                          dataset.image_shape)
      params = jax.tree.map(jnp.asarray, _layout_for(config, variables["params"]))
      state = state.replace(params=params,
                            batch_stats=_layout_for(config, variables["batch_stats"]),
                            opt_state=state.tx.init(params))
      checkpoint.save_checkpoint(manager, jax.device_get(state), config, loop_state={})
      manager.wait_until_finished()
  finally:
    manager.close()
  return training.train_and_evaluate(config, dataset, workdir)
