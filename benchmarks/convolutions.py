"""Time one 3x3 convolution and its two gradients at the shapes of the CIFAR stages, in JAX and
in PyTorch, on this machine.

  python benchmarks/convolutions.py                  # batch 128, width 16: 3 stages x 3 ops
  python benchmarks/convolutions.py --torch no --batch_size 8 --json /tmp/convolutions.json

A train step of a CIFAR net is mostly these convolutions, so this separates the speed of the
convolution kernels (XLA:CPU's against PyTorch's) from everything else in the step. Each op runs
alone: the forward pass, the gradient with respect to the input and the gradient with respect
to the kernel, NHWC in JAX and channels-last in PyTorch, float32, stride 1, padding 1. PyTorch
runs in a subprocess, so the two frameworks never share a process or its threads. A table goes
to stdout, and with `--json` the measurements go to a file.
"""

import argparse
import json
import pathlib
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

OPS = ("forward", "input_gradient", "kernel_gradient")
NUM_STAGES = 3


def stage_shapes(batch_size: int, width: int, image_size: int) -> list[dict[str, int]]:
  """Return the input shape of the 3x3 convolutions of each CIFAR stage: the maps halve and the
  channels double from stage to stage."""
  return [{"batch": batch_size, "size": image_size // 2**stage, "channels": width * 2**stage}
           for stage in range(NUM_STAGES)]


def conv_flops(shape: dict[str, int]) -> float:
  """Return the multiply-adds times 2 of one 3x3 convolution with as many output channels as
  input channels and 'SAME' padding; each gradient costs the same."""
  return 2.0 * shape["batch"] * shape["size"] ** 2 * shape["channels"] ** 2 * 9


def median_seconds(run: Callable[[], Any], repeats: int, warmup: int) -> float:
  """Return the median wall time of `run()`, which must block until its result is ready."""
  for _ in range(warmup):
    run()
  times = []
  for _ in range(repeats):
    started = time.perf_counter()
    run()
    times.append(time.perf_counter() - started)
  return statistics.median(times)


def time_jax(shape: dict[str, int], repeats: int, warmup: int) -> dict[str, float]:
  """Return the median seconds of each op in `OPS`, jitted, in JAX."""
  import jax

  batch, size, channels = shape["batch"], shape["size"], shape["channels"]
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (batch, size, size, channels))
  kernel = jax.random.normal(keys[1], (3, 3, channels, channels))
  cotangent = jax.random.normal(keys[2], (batch, size, size, channels))

  def conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  # jax.vjp also traces the forward pass, but the gradient does not read its output, so XLA
  # removes it from the compiled function.
  functions = {
      "forward": jax.jit(lambda x, kernel, cotangent: conv(x, kernel)),
      "input_gradient": jax.jit(
          lambda x, kernel, cotangent: jax.vjp(lambda v: conv(v, kernel), x)[1](cotangent)[0]),
      "kernel_gradient": jax.jit(
          lambda x, kernel, cotangent: jax.vjp(lambda k: conv(x, k), kernel)[1](cotangent)[0]),
  }
  return {op: median_seconds(lambda f=function: jax.block_until_ready(f(x, kernel, cotangent)),
                             repeats, warmup)
          for op, function in functions.items()}


def time_torch(shape: dict[str, int], repeats: int, warmup: int) -> dict[str, float]:
  """Return the median seconds of each op in `OPS` in PyTorch (eager, channels-last), through
  the `convolution_backward` op that autograd calls."""
  import torch

  batch, size, channels = shape["batch"], shape["size"], shape["channels"]
  generator = torch.Generator().manual_seed(0)
  channels_last = torch.channels_last
  x = torch.randn(batch, channels, size, size, generator=generator).to(
      memory_format=channels_last)
  kernel = torch.randn(channels, channels, 3, 3, generator=generator).to(
      memory_format=channels_last)
  cotangent = torch.randn(batch, channels, size, size, generator=generator).to(
      memory_format=channels_last)

  def backward(mask: list[bool]) -> Any:
    return torch.ops.aten.convolution_backward(
        cotangent, x, kernel, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

  functions = {
      "forward": lambda: torch.nn.functional.conv2d(x, kernel, padding=1),
      "input_gradient": lambda: backward([True, False, False]),
      "kernel_gradient": lambda: backward([False, True, False]),
  }
  with torch.no_grad():
    return {op: median_seconds(function, repeats, warmup) for op, function in functions.items()}


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch_size", type=int, default=128,
                      help="examples per convolution (default: %(default)s)")
  parser.add_argument("--width", type=int, default=16,
                      help="channels of the first stage (default: %(default)s)")
  parser.add_argument("--image_size", type=int, default=32,
                      help="height and width of the first stage's maps (default: %(default)s)")
  parser.add_argument("--repeats", type=int, default=20,
                      help="timed calls per op; the median is reported (default: %(default)s)")
  parser.add_argument("--warmup", type=int, default=3,
                      help="untimed calls per op first, compiling in JAX (default: %(default)s)")
  parser.add_argument("--torch", choices=("auto", "yes", "no"), default="auto",
                      help="also time PyTorch; auto: when torch imports (default: %(default)s)")
  parser.add_argument("--json", default=None,
                      help="file to write the measurements to (default: none)")
  parser.add_argument("--framework", choices=("jax", "torch"), default=None,
                      help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  for name in ("batch_size", "width", "image_size", "repeats"):
    if getattr(args, name) < 1:
      parser.error(f"invalid --{name}={getattr(args, name)}: must be a positive integer")
  if args.image_size < 2**(NUM_STAGES - 1):
    parser.error(f"invalid --image_size={args.image_size}: the third stage needs at least "
                 f"{2**(NUM_STAGES - 1)} pixels")
  if args.warmup < 1:
    parser.error(f"invalid --warmup={args.warmup}: at least 1 call must compile before timing")
  return args


def measure(framework: str, args: argparse.Namespace) -> list[dict[str, float]]:
  """Return the median seconds of every op, one dict per stage, in `framework`."""
  timer = time_jax if framework == "jax" else time_torch
  shapes = stage_shapes(args.batch_size, args.width, args.image_size)
  return [timer(shape, args.repeats, args.warmup) for shape in shapes]


def torch_available() -> bool:
  completed = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True,
                             check=False)
  return completed.returncode == 0


def measure_torch_in_subprocess(argv: list[str]) -> list[dict[str, float]]:
  """Run this script with `--framework torch` and return what it prints."""
  completed = subprocess.run([sys.executable, __file__, *argv, "--framework", "torch"],
                             capture_output=True, text=True, check=False)
  if completed.returncode != 0:
    raise RuntimeError(f"the PyTorch measurement failed: {completed.stderr.strip()[-2000:]}")
  return json.loads(completed.stdout)


def format_table(shapes: list[dict[str, int]], jax_times: list[dict[str, float]],
                 torch_times: list[dict[str, float]] | None) -> str:
  """Return a Markdown table with milliseconds and GFLOP/s per stage and op."""
  header = "| stage input (NHWC) | op | GFLOP | JAX ms | JAX GFLOP/s |"
  rule = "|---|---|---:|---:|---:|"
  if torch_times is not None:
    header += " PyTorch ms | PyTorch GFLOP/s | JAX / PyTorch speed |"
    rule += "---:|---:|---:|"
  lines = [header, rule]
  for stage, shape in enumerate(shapes):
    gflop = conv_flops(shape) / 1e9
    dims = f"{shape['batch']}x{shape['size']}x{shape['size']}x{shape['channels']}"
    for op in OPS:
      seconds = jax_times[stage][op]
      line = f"| {dims} | {op} | {gflop:.2f} | {seconds * 1e3:.2f} | {gflop / seconds:.0f} |"
      if torch_times is not None:
        torch_seconds = torch_times[stage][op]
        line += (f" {torch_seconds * 1e3:.2f} | {gflop / torch_seconds:.0f} |"
                 f" {torch_seconds / seconds:.2f}x |")
      lines.append(line)
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  args = parse_args(argv)
  if args.framework is not None:
    print(json.dumps(measure(args.framework, args)))
    return 0

  with_torch = args.torch != "no" and torch_available()
  if args.torch == "yes" and not with_torch:
    print("error: --torch=yes, but torch does not import: run pip install torch==2.13.0",
          file=sys.stderr)
    return 2
  if args.torch == "auto" and not with_torch:
    print("PyTorch skipped: torch does not import (pip install torch==2.13.0).",
          file=sys.stderr)
  print(f"Timing 3x3 convolutions at batch {args.batch_size}, width {args.width}, "
        f"{args.image_size}x{args.image_size} maps.", file=sys.stderr)
  try:
    torch_times = measure_torch_in_subprocess(argv) if with_torch else None
  except RuntimeError as error:
    print(f"error: {error}\nRerun with --torch no to time JAX alone.", file=sys.stderr)
    return 1
  jax_times = measure("jax", args)
  shapes = stage_shapes(args.batch_size, args.width, args.image_size)
  print(format_table(shapes, jax_times, torch_times))
  if args.json:
    record = {"command": shlex.join(["python", "benchmarks/convolutions.py", *argv]),
              "shapes": shapes, "jax_seconds": jax_times, "torch_seconds": torch_times}
    pathlib.Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
