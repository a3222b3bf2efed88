"""ResNet-1202 on CIFAR-10 with the 2015 recipe, the paper's test of extreme depth.

The paper reports 7.93% test error, worse than ResNet-110's 6.43%, which it attributes to
overfitting. Blocks run under nn.scan on every platform, so the train step compiles in seconds
(unrolled, it had not compiled after 12 minutes on a 2-core CPU); on CPU the scanned blocks use
resflax's convolution gradient (`conv_gradient`). Without remat, XLA planned 18 GiB of
temporary buffers for a train step at batch 128; with `--config.remat=True` the process peaked at
2.2 GiB on CPU (see BENCHMARKS.md).
"""

from resflax.configs import default


def get_config():
  config = default.get_config()
  config.name = "cifar10_1202"
  config.families = ("residual",)
  config.depths = (1202,)
  config.scan_blocks = True
  config.eval_every = 2000
  config.checkpoint_every = 2000
  return config
