"""Plain-18/34 against ResNet-18/34 on ImageNet (tfds imagenet2012), for TPU pods or GPU hosts.

Batch 256, rate 0.1, momentum 0.9, weight decay 1e-4 as in the paper. The paper divides the
rate by 10 when the error plateaus and trains up to 600k iterations. This config uses fixed
decays at epochs 30, 60 and 90 (5,005 steps an epoch) in place of watching the plateau.
"""

from resflax.configs import default

STEPS_PER_EPOCH = 1_281_167 // 256


def get_config():
  config = default.get_config()
  config.name = "imagenet"
  config.arch = "imagenet"
  config.dataset = "imagenet2012"
  config.depths = (18, 34)
  config.shortcut = "B"
  config.validation_size = 0  # the official validation split serves as the test set
  config.train_eval_size = 50_000
  config.batch_size = 256
  config.num_steps = 600_000
  config.lr_boundaries = tuple(epoch * STEPS_PER_EPOCH for epoch in (30, 60, 90))
  config.warmup_steps = 0
  config.dtype = "bfloat16"
  config.parallel = "mesh"
  config.eval_batch_size = 1000
  config.log_every = 500
  config.eval_every = 10 * STEPS_PER_EPOCH
  config.checkpoint_every = STEPS_PER_EPOCH
  return config
