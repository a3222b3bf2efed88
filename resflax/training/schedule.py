"""Learning-rate schedule of He et al. 2015 (step decay with an optional warm-up)."""

from collections.abc import Sequence

import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_scale(config: ml_collections.ConfigDict) -> float:
  """Return the factor applied to every configured learning rate.

  With `scale_lr_with_batch` the rates follow the linear scaling rule (Goyal et al. 2017):
  they are multiplied by `batch_size / base_batch_size`. The decay boundaries stay in steps.
  """
  if not config.scale_lr_with_batch:
    return 1.0
  if config.base_batch_size <= 0:
    raise ValueError(f"base_batch_size must be positive, got {config.base_batch_size}.")
  return config.batch_size / config.base_batch_size


def _validate_boundaries(boundaries: Sequence[int]) -> None:
  if any(b <= 0 for b in boundaries):
    raise ValueError(f"lr_boundaries must be positive steps, got {tuple(boundaries)}.")
  if any(a >= b for a, b in zip(boundaries, boundaries[1:])):
    raise ValueError(f"lr_boundaries must be strictly increasing, got {tuple(boundaries)}.")


def create_learning_rate_fn(config: ml_collections.ConfigDict, depth: int) -> optax.Schedule:
  """Create the schedule that maps a step (the number of updates already applied) to a rate.

  The rate starts at `learning_rate` and is multiplied by `lr_decay_factor` at each step in
  `lr_boundaries`. Nets with `depth >= warmup_min_depth` use `warmup_learning_rate` for the
  first `warmup_steps` steps instead; He et al. 2015 train their 110-layer CIFAR net at 0.01
  until the training error falls below 80% (about 400 iterations) and then go back to 0.1.
  All rates are multiplied by `learning_rate_scale(config)`.
  """
  boundaries = tuple(int(b) for b in config.lr_boundaries)
  _validate_boundaries(boundaries)
  scale = learning_rate_scale(config)
  # The rate of each stage is computed in Python (float64) and then rounded once to float32,
  # so 0.1 * 0.1**2 becomes float32(0.001) instead of a product of rounded factors.
  stage_rates = [config.learning_rate * scale * config.lr_decay_factor**i
                 for i in range(len(boundaries) + 1)]
  stage_rates = jnp.asarray(stage_rates, dtype=jnp.float32)
  boundary_array = jnp.asarray(boundaries, dtype=jnp.int32)
  use_warmup = depth >= config.warmup_min_depth and config.warmup_steps > 0
  warmup_steps = int(config.warmup_steps)
  warmup_rate = jnp.float32(config.warmup_learning_rate * scale)

  def learning_rate_fn(step: jnp.ndarray | int) -> jnp.ndarray:
    step = jnp.asarray(step, dtype=jnp.int32)
    # The number of boundaries at or before `step` is the number of decays applied so far.
    stage = jnp.sum(boundary_array <= step) if boundaries else 0
    rate = stage_rates[stage]
    if use_warmup:
      rate = jnp.where(step < warmup_steps, warmup_rate, rate)
    return rate

  return learning_rate_fn
