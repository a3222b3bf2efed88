"""Base configuration: the 2015 CIFAR-10 recipe. Other configs override parts of it.

Every key is documented where it is set; `python train.py --help` prints them with their units.
Sweep keys (`families`, `depths`, `seeds`) list the runs; the sweep sets the per-run keys
(`family`, `depth`, `seed`) before each run.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = "default"  # sweep name; the default workdir is runs/<name>

  # Sweep: every (seed, depth, family) combination is one run.
  config.families = ("plain", "residual")  # network families to train: "plain" and/or "residual"
  config.depths = (20, 32, 44, 56, 110)  # depths in weight layers: 6n+2 for CIFAR nets
  config.seeds = (0,)  # one run per seed; seeds set initialisation, shuffling and augmentation
  # Per-run keys: the sweep overwrites them from the lists above before each run.
  config.family = "residual"  # set by the sweep
  config.depth = 20  # set by the sweep
  config.seed = 0  # set by the sweep

  # Data.
  config.dataset = "cifar10"  # cifar10, cifar100, mnist, fashion_mnist, svhn_cropped, imagenet2012
  config.data_source = "tfds"  # "tfds" (prepared tfds data) or "idx" (gzipped IDX files in idx_dir)
  config.idx_dir = "/usr/share/datasets/fashion-mnist"  # IDX files, as Debian's dataset-fashion-mnist installs them
  config.data_dir = config_dict.placeholder(str)  # tfds data_dir; None means the tfds default (~/tensorflow_datasets)
  config.download = False  # allow tfds to download and prepare; False fails fast when data is missing
  config.validation_size = 5000  # examples held out of the training split for validation; 0 keeps all for training
  config.split_seed = 0  # seed of the fixed train/validation split
  config.normalize_std = False  # divide by the per-channel std after per-pixel mean subtraction
  config.augment_pad = 4  # zero padding in pixels before the random crop; 0 turns cropping off
  config.augment_flip = config_dict.placeholder(bool)  # random horizontal flip; None means the dataset's default
  config.train_eval_size = 5000  # fixed training subset on which training error is measured, in eval mode
  config.final_train_eval_size = config_dict.placeholder(int)  # examples for the final training error (the result); None means train_eval_size

  # Model.
  config.arch = "cifar"  # "cifar" (6n+2 layers) or "imagenet" (18/34/50/101/152)
  config.width = 16  # filters of the first stage (CIFAR nets); stages use width, 2*width, 4*width
  config.shortcut = "A"  # A: zero-pad identity, B: projection where shapes change, C: projection everywhere
  config.preactivation = False  # pre-activation blocks (He et al. 2016, "Identity Mappings")
  config.zero_init_residual = False  # zero the last BN scale of each residual branch (Goyal et al. 2017)
  config.dtype = "float32"  # compute dtype: float32 or bfloat16 (parameters stay float32)
  config.scan_blocks = config_dict.placeholder(bool)  # run identical blocks with nn.scan; None: platform default
  config.remat = False  # rematerialise block activations in the backward pass to save memory
  config.remat_group_size = config_dict.placeholder(int)  # scanned blocks per checkpointed group with remat (1: block by block); None: picked per stage, grouping stages of 14 or more scanned blocks
  config.materialize_blocks = config_dict.placeholder(bool)  # write each block's output once; None: platform default (on for CPU)
  config.conv_gradient = config_dict.placeholder(str)  # "xla" or "patches" (fast inside scanned blocks on CPU), or unset for the platform default
  config.bn_momentum = 0.9  # running-average decay of BatchNorm statistics (PyTorch momentum 0.1)
  config.bn_epsilon = 1e-5  # added to the BatchNorm variance

  # Optimisation: SGD with momentum, weight decay added to the gradient, step decay.
  config.batch_size = 128  # global batch size, in examples, summed over all devices and processes
  config.num_steps = 64_000  # training steps (iterations)
  config.learning_rate = 0.1  # peak learning rate
  config.lr_boundaries = (32_000, 48_000)  # steps at which the rate is multiplied by lr_decay_factor
  config.lr_decay_factor = 0.1  # factor applied to the rate at each boundary
  config.momentum = 0.9  # SGD momentum
  config.nesterov = False  # Nesterov momentum instead of the heavy-ball form
  config.weight_decay = 1e-4  # L2 coefficient, added to the gradient before momentum
  config.weight_decay_on = "all"  # "all" parameters (as the reference Caffe/PyTorch code) or "kernels" only
  config.warmup_steps = 400  # steps at warmup_learning_rate for nets of depth >= warmup_min_depth
  config.warmup_learning_rate = 0.01  # rate during the warm-up steps
  config.warmup_min_depth = 110  # nets at least this deep get the warm-up (He et al.: ResNet-110)
  config.scale_lr_with_batch = False  # multiply learning rates by batch_size / base_batch_size
  config.base_batch_size = 128  # batch size at which learning_rate applies unscaled

  # Devices.
  config.parallel = "jit"  # "jit" (one device), "pmap" (local devices) or "mesh" (jit over a device mesh)
  config.sync_batch_norm = False  # pmap only: BatchNorm statistics over all devices instead of per device

  # Evaluation, logging and checkpoints.
  config.eval_batch_size = 500  # examples per evaluation batch; the last batch is padded and masked
  config.log_every = 100  # steps between training-metric log lines
  config.eval_every = 4000  # steps between evaluations; the final step is always evaluated
  config.checkpoint_every = 4000  # steps between checkpoints; the final step is always saved
  config.keep_checkpoints = 2  # newest checkpoints kept per run
  config.progress = True  # show a progress bar per run
  config.compilation_cache_dir = "~/.cache/resflax/xla"  # JAX's persistent compilation cache, so a net compiles once across runs and sweeps; "" turns it off
  return config
