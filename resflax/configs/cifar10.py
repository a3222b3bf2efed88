"""The 2015 CIFAR-10 recipe for depths 20 to 110, both families; meant for a GPU or TPU.

45k/5k train/validation split, batch 128, rate 0.1 divided by 10 at 32k and 48k steps, 64k
steps, warm-up at 0.01 for the first 400 steps of the 110-layer nets.
"""

from resflax.configs import default


def get_config():
  config = default.get_config()
  config.name = "cifar10"
  config.depths = (20, 32, 44, 56, 110)
  config.eval_every = 2000
  config.checkpoint_every = 2000
  return config
