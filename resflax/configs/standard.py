"""A longer offline sweep on Fashion-MNIST that trains far enough for depth to pay off.

Depths 20 and 56 of both families, width 8, 4,500 steps with the rate divided by 10 at 2,250
and 3,375 (half and three quarters of the run, the paper's proportions). Augmentation is off,
so the training error measures how well each net fits the training set, which is the quantity
the degradation problem is about. The verdict lists this deviation from the 2015 recipe. The
curves are measured on 5,000 training examples and the final training error on all 60,000. At
5% error, two standard errors of the gap between two depths are then about 0.26 points, against
0.9 points on 5,000 examples. One run took 1 h 41 min on a 2-core CPU.
"""

from resflax.configs import default


def get_config():
  config = default.get_config()
  config.name = "standard"
  config.dataset = "fashion_mnist"
  config.data_source = "idx"
  config.validation_size = 0  # all 60k for training; the sweep reports the 10k test set
  config.depths = (20, 56)
  config.width = 8
  config.num_steps = 4500
  config.lr_boundaries = (2250, 3375)
  config.augment_pad = 0
  config.augment_flip = False
  config.train_eval_size = 5000
  config.final_train_eval_size = 60_000
  config.eval_batch_size = 1000
  config.log_every = 100
  config.eval_every = 500
  config.checkpoint_every = 500
  return config
