"""The default sweep: plain and residual nets of depth 20 and 56 on Fashion-MNIST, offline.

Sized to finish within 15 minutes on a 2-core CPU. At this length plain-56 already trains
far worse than plain-20 while ResNet-56 does not; whether deeper residual nets train
better needs the longer `standard` config.
"""

from resflax.configs import default


def get_config():
  config = default.get_config()
  config.name = "quick"
  config.dataset = "fashion_mnist"
  config.data_source = "idx"
  config.validation_size = 0  # all 60k for training; the sweep reports the 10k test set
  config.depths = (20, 56)
  config.width = 8
  config.num_steps = 400
  config.lr_boundaries = (300,)
  config.train_eval_size = 2000
  config.eval_batch_size = 1000
  config.log_every = 50
  config.eval_every = 100
  config.checkpoint_every = 200
  return config
