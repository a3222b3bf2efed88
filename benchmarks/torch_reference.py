"""PyTorch reference of resflax's CIFAR nets, to compare training speed on the same machine.

`build_model` gives the architecture of `resflax.models.CifarNet` with option-A shortcuts and
post-activation basic blocks (He et al. 2015, "Deep Residual Learning for Image Recognition",
Sec. 4.2): a 3x3 stem conv with BatchNorm and ReLU, three stages of n blocks with `width`,
`2*width` and `4*width` filters (stride 2 at the start of stages 2 and 3), global average
pooling and a dense head. The parameter counts equal resflax's.

This module needs only torch, so the benchmark process does not import jax. torch is an
optional dependency, used only under `benchmarks/`.

Run `python benchmarks/torch_reference.py --family residual --depth 20 --batch_size 128` to
print one JSON line with the training throughput.
"""

import argparse
import collections
import json
import math
import numbers
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FAMILIES = ("plain", "residual")
NUM_STAGES = 3

# BatchNorm settings of resflax.configs.default. Flax's momentum 0.9 is the decay of the running
# averages, which PyTorch writes as momentum 0.1.
# NOTE: PyTorch updates the running variance with the unbiased batch variance and Flax with the
# biased one, so eval-mode outputs differ slightly. Both normalise with the biased batch variance
# in training mode.
BN_MOMENTUM = 0.1
BN_EPSILON = 1e-5

# SGD settings of resflax.configs.default. PyTorch's SGD adds the weight decay to the gradient
# before the momentum update and applies it to all parameters, as resflax does by default.
LEARNING_RATE = 0.1
SGD_MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4

# Standard deviation of a unit normal truncated to [-2, 2]. Flax's default Dense initialiser
# (lecun_normal) divides by it so that the truncated kernel keeps a variance of 1 / fan_in.
_TRUNCATED_NORMAL_STDDEV = 0.87962566103423978


def blocks_per_stage(depth: int) -> int:
  """Return n for a depth of 6n+2, or raise ValueError for any other depth."""
  valid = isinstance(depth, numbers.Integral) and not isinstance(depth, bool)
  if not valid or depth < 8 or (depth - 2) % 6 != 0:
    raise ValueError(
        f"invalid CIFAR depth {depth!r}: expected 6n+2 with n >= 1 "
        "(8, 14, 20, 32, 44, 56, 110, 1202, ...)"
    )
  return (int(depth) - 2) // 6


def _check_positive(name: str, value: int) -> None:
  valid = isinstance(value, numbers.Integral) and not isinstance(value, bool)
  if not valid or value < 1:
    raise ValueError(f"invalid {name} {value!r}: expected a positive integer")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
  """Return a 3x3 conv without bias, padded by 1 pixel as resflax's convs are."""
  return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def batch_norm(channels: int) -> nn.BatchNorm2d:
  """Return a BatchNorm with resflax's default momentum and epsilon."""
  return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)


class PadShortcut(nn.Module):
  """Option-A shortcut where the shape changes: subsample by `stride`, then zero-pad channels.

  The zero channels go after the input channels, as in `resflax.models.layers.pad_shortcut`.
  The kept pixels (0, stride, 2*stride, ...) are those on which the block's stride-`stride` conv
  with padding 1 centres its outputs. There are no parameters.
  """

  def __init__(self, out_channels: int, stride: int) -> None:
    super().__init__()
    self.out_channels = out_channels
    self.stride = stride

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.stride > 1:
      x = x[:, :, ::self.stride, ::self.stride]
    extra = self.out_channels - x.shape[1]
    # F.pad lists (before, after) pairs from the last dimension back, so the third pair is the
    # channel dimension of NCHW. It keeps the channels_last memory format of its input.
    return F.pad(x, (0, 0, 0, 0, 0, extra))


class BasicBlock(nn.Module):
  """conv3x3-BN-ReLU-conv3x3-BN, then the shortcut added (residual only), then ReLU.

  `shortcut` is None in plain blocks, `nn.Identity` where the shape stays and `PadShortcut`
  where it changes.
  """

  def __init__(self, in_channels: int, out_channels: int, stride: int, residual: bool) -> None:
    super().__init__()
    self.conv1 = conv3x3(in_channels, out_channels, stride)
    self.bn1 = batch_norm(out_channels)
    self.conv2 = conv3x3(out_channels, out_channels)
    self.bn2 = batch_norm(out_channels)

    self.shortcut: nn.Module | None = None
    if residual:
      changes_shape = stride != 1 or in_channels != out_channels
      self.shortcut = PadShortcut(out_channels, stride) if changes_shape else nn.Identity()

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(self.bn1(self.conv1(x)), inplace=True)
    y = self.bn2(self.conv2(y))
    if self.shortcut is not None:
      y = y + self.shortcut(x)
    return F.relu(y, inplace=True)


class CifarNet(nn.Module):
  """Plain or residual CIFAR net with 6n+2 weighted layers, mapping NCHW images to logits.

  The submodules `stem_conv`, `stem_bn`, `stages.stage{k}.block{i}` and `head` carry the names
  of resflax's modules.
  """

  def __init__(
      self,
      depth: int,
      residual: bool = True,
      width: int = 16,
      num_classes: int = 10,
      in_channels: int = 3,
  ) -> None:
    super().__init__()
    num_blocks = blocks_per_stage(depth)
    self.stem_conv = conv3x3(in_channels, width)
    self.stem_bn = batch_norm(width)

    stages = collections.OrderedDict()
    channels = width
    for index in range(NUM_STAGES):
      out_channels = width * 2**index
      stride = 1 if index == 0 else 2
      blocks = collections.OrderedDict()
      blocks["block1"] = BasicBlock(channels, out_channels, stride, residual)
      for block_index in range(2, num_blocks + 1):
        blocks[f"block{block_index}"] = BasicBlock(out_channels, out_channels, 1, residual)
      stages[f"stage{index + 1}"] = nn.Sequential(blocks)
      channels = out_channels
    self.stages = nn.Sequential(stages)

    self.head = nn.Linear(channels, num_classes)
    self.reset_parameters()

  def reset_parameters(self) -> None:
    """Initialise the parameters as resflax does.

    Convs get He-normal kernels (variance 2 / fan_out, not truncated). The head gets Flax's
    default Dense initialisation: a normal truncated to 2 standard deviations with variance
    1 / fan_in, and a zero bias. BatchNorm keeps scale 1 and offset 0.
    """
    for module in self.modules():
      if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
      elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

    stddev = math.sqrt(1.0 / self.head.in_features) / _TRUNCATED_NORMAL_STDDEV
    nn.init.trunc_normal_(self.head.weight, std=stddev, a=-2 * stddev, b=2 * stddev)
    nn.init.zeros_(self.head.bias)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(self.stem_bn(self.stem_conv(x)), inplace=True)
    x = self.stages(x)
    x = x.mean(dim=(2, 3))
    return self.head(x)


def build_model(
    family: str, depth: int, width: int = 16, num_classes: int = 10, in_channels: int = 3
) -> nn.Module:
  """Build the plain or residual CIFAR net of `depth` = 6n+2 layers, in training mode.

  Raises ValueError for a family other than "plain" and "residual", a depth that is not 6n+2
  with n >= 1, or a width, num_classes or in_channels below 1.
  """
  if family not in FAMILIES:
    raise ValueError(f"invalid family {family!r}: expected one of {', '.join(FAMILIES)}")
  _check_positive("width", width)
  _check_positive("num_classes", num_classes)
  _check_positive("in_channels", in_channels)
  return CifarNet(
      depth,
      residual=family == "residual",
      width=width,
      num_classes=num_classes,
      in_channels=in_channels,
  )


def count_params(model: nn.Module) -> int:
  """Return the number of trainable scalars in `model` (BatchNorm running statistics excluded)."""
  return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def _synchronize(device: torch.device) -> None:
  """Wait for the queued kernels of a CUDA device. CPU ops run synchronously and need no wait."""
  if device.type == "cuda":
    torch.cuda.synchronize(device)


def train_step_closure(
    family: str,
    depth: int,
    *,
    batch_size: int = 128,
    image_size: int = 32,
    channels: int = 3,
    width: int = 16,
    threads: int | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[Callable[[], None], dict[str, Any]]:
  """Build a net, its optimizer and one fixed random batch, and return a train step and facts.

  Each call of the step runs forward, cross-entropy loss, backward, optimizer step and
  zero_grad, with SGD (learning rate 0.1, momentum 0.9, weight decay 1e-4), and returns once the
  work is done, so a caller can time it with time.perf_counter. Model and batch are in the
  channels_last memory format. On a CUDA device the step waits for its kernels with
  torch.cuda.synchronize. NOTE: only the CPU path has been run, with a CPU build of torch.

  `threads`, when given, calls torch.set_num_threads, which changes the whole process.
  NOTE: run on an otherwise idle machine, or set `threads` to the free cores. With torch 2.13 on
  2 AMD EPYC cores already busy with another job, depth 8, width 4, batch 4 of 8x8 images ran at
  about 1900 examples/s with 1 thread and 5 to 350 examples/s with 2 threads.

  The facts are `params`, `threads` (torch.get_num_threads()), `torch_version` and `device`.
  """
  for name, value in (
      ("batch_size", batch_size),
      ("image_size", image_size),
      ("channels", channels),
  ):
    _check_positive(name, value)
  if threads is not None:
    _check_positive("threads", threads)
    torch.set_num_threads(threads)

  target = torch.device(device)
  num_classes = 10
  torch.manual_seed(seed)
  model = build_model(family, depth, width=width, num_classes=num_classes, in_channels=channels)
  model = model.to(target, memory_format=torch.channels_last)
  model.train()
  optimizer = torch.optim.SGD(
      model.parameters(), lr=LEARNING_RATE, momentum=SGD_MOMENTUM, weight_decay=WEIGHT_DECAY
  )
  loss_fn = nn.CrossEntropyLoss()

  generator = torch.Generator().manual_seed(seed)
  images = torch.randn(batch_size, channels, image_size, image_size, generator=generator)
  images = images.to(target, memory_format=torch.channels_last)
  labels = torch.randint(0, num_classes, (batch_size,), generator=generator).to(target)
  _synchronize(target)

  def train_step() -> None:
    loss = loss_fn(model(images), labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _synchronize(target)

  info = {
      "params": count_params(model),
      "threads": torch.get_num_threads(),
      "torch_version": torch.__version__,
      "device": str(target),
  }
  return train_step, info


def benchmark_train_step(
    family: str,
    depth: int,
    *,
    batch_size: int = 128,
    image_size: int = 32,
    channels: int = 3,
    width: int = 16,
    warmup_steps: int = 3,
    windows: int = 5,
    steps_per_window: int = 5,
    threads: int | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
  """Time the train steps of `train_step_closure`, and return throughput and settings.

  `warmup_steps` untimed steps run first, then `windows` windows of `steps_per_window` steps,
  each timed with time.perf_counter. The other arguments go to `train_step_closure`.

  Returns a dict with `examples_per_second` (median over windows), `window_examples_per_second`,
  `first_step_seconds` (the first warm-up step), the facts of `train_step_closure` (`params`,
  `threads`, `torch_version`, `device`), and the settings `family`, `depth`, `batch_size`,
  `image_size` and `width`.
  """
  for name, value in (
      ("warmup_steps", warmup_steps),
      ("windows", windows),
      ("steps_per_window", steps_per_window),
  ):
    _check_positive(name, value)
  train_step, info = train_step_closure(
      family,
      depth,
      batch_size=batch_size,
      image_size=image_size,
      channels=channels,
      width=width,
      threads=threads,
      seed=seed,
      device=device,
  )

  start = time.perf_counter()
  train_step()
  first_step_seconds = time.perf_counter() - start
  for _ in range(warmup_steps - 1):
    train_step()

  window_rates = []
  for _ in range(windows):
    start = time.perf_counter()
    for _ in range(steps_per_window):
      train_step()
    elapsed = time.perf_counter() - start
    window_rates.append(steps_per_window * batch_size / elapsed)

  return {
      "examples_per_second": statistics.median(window_rates),
      "window_examples_per_second": window_rates,
      "first_step_seconds": first_step_seconds,
      **info,
      "family": family,
      "depth": depth,
      "batch_size": batch_size,
      "image_size": image_size,
      "width": width,
  }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  """Parse the command line (`argv`, or sys.argv when None)."""
  parser = argparse.ArgumentParser(
      description="Time SGD train steps of a PyTorch CIFAR net that matches resflax's CifarNet, "
      "and print one JSON line."
  )
  parser.add_argument(
      "--family", choices=FAMILIES, default="residual", help="plain or residual blocks"
  )
  parser.add_argument("--depth", type=int, default=20, help="weighted layers, 6n+2")
  parser.add_argument("--batch_size", type=int, default=128, help="images per train step")
  parser.add_argument(
      "--image_size", type=int, default=32, help="image height and width, in pixels"
  )
  parser.add_argument("--channels", type=int, default=3, help="input channels")
  parser.add_argument("--width", type=int, default=16, help="filters of the first stage")

  parser.add_argument(
      "--warmup_steps", type=int, default=3, help="untimed train steps before timing"
  )
  parser.add_argument(
      "--windows", type=int, default=5, help="timed windows, whose median is reported"
  )
  parser.add_argument(
      "--steps_per_window", type=int, default=5, help="train steps per timed window"
  )

  parser.add_argument(
      "--threads",
      type=int,
      default=None,
      help="intra-op threads for torch.set_num_threads (default: torch's own default)",
  )
  parser.add_argument(
      "--seed", type=int, default=0, help="seed of the parameters and the batch"
  )
  parser.add_argument(
      "--device", default="cpu", help="torch device, for example cpu or cuda:0"
  )
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
  """Run `benchmark_train_step` with the command-line settings and print its result as JSON."""
  args = parse_args(argv)
  result = benchmark_train_step(
      args.family,
      args.depth,
      batch_size=args.batch_size,
      image_size=args.image_size,
      channels=args.channels,
      width=args.width,
      warmup_steps=args.warmup_steps,
      windows=args.windows,
      steps_per_window=args.steps_per_window,
      threads=args.threads,
      seed=args.seed,
      device=args.device,
  )
  print(json.dumps(result))


if __name__ == "__main__":
  main()
