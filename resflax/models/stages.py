"""Stages: the blocks of one resolution, unrolled or run with `nn.scan`, optionally rematerialised."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from resflax.models.layers import ModuleDef

# Name of the module that holds the stacked blocks 2..N of a stage in the scanned layout.
SCANNED_BLOCKS = "blocks"

# Collections whose variables `nn.scan` stacks along a leading block axis.
SCANNED_COLLECTIONS = ("params", "batch_stats", "intermediates")


def default_scan_blocks() -> bool:
  """Return the platform default of `scan_blocks`: False on CPU, True on GPU and TPU.

  Scanning keeps compile time flat in depth. On XLA:CPU, though, convolution gradients inside a
  loop body run far slower than unrolled ones. Measured with jax 0.10.2 on 2 AMD EPYC cores: the
  gradient through eight 3x3 convolutions (batch 8, 32x32, 16 channels) took 0.24 s inside
  `lax.scan` against 0.012 s unrolled, while the forward passes took the same time. The jax issue
  https://github.com/jax-ml/jax/issues/12868 reports a related CPU slowdown of convolutions
  inside `fori_loop`. Scanned nets on CPU therefore use the gradient of `patch_conv` (see
  `network.default_conv_gradient`). With it a scanned ResNet-110 train step ran at 0.86 times
  the unrolled speed (width 16, batch 128), so unrolling stays the CPU default. The platform is
  that of the default device, `jax.default_backend()`.
  """
  return jax.default_backend() != "cpu"


def default_materialize_blocks() -> bool:
  """Return the platform default of `materialize_blocks`: True on CPU, False elsewhere.

  XLA:CPU fuses the elementwise tail of a residual block (BatchNorm, shortcut addition, ReLU)
  into every consumer of the block's output instead of writing the output once. Each consumer
  then recomputes the residual stream back to the start of the stage, which is work quadratic
  in depth. The worst consumers are the layout transposes of the weight-gradient convolutions.
  Measured with jax 0.10.2 on 2 AMD EPYC cores shared with another job (batch 128, width 16).
  In a ResNet-56 train step the transposes took 2.67 s of a 4.2 s step. With each block's
  output materialized they took 0.36 s of a 2.1 s step.
  """
  return jax.default_backend() == "cpu"


def materialize(x: jax.Array) -> jax.Array:
  """Return `x`, written to its own buffer so that XLA does not fuse its computation into
  the consumers.

  `lax.optimization_barrier` does not do this on CPU: with jax 0.10.2 no barrier is left in
  the compiled step and the recomputation stays. A conditional whose predicate XLA cannot
  decide at compile time is a fusion boundary. Both branches return `x` unchanged (the second
  adds zero).
  """
  is_nan = jnp.isnan(x.reshape(-1)[0])
  return jax.lax.cond(is_nan, lambda v: v, lambda v: v + jnp.zeros((), v.dtype), x)


def _apply_block(block: nn.Module, x: jax.Array) -> tuple[jax.Array, None]:
  return block(x), None


def _rematerialised(block: ModuleDef, prevent_cse: bool) -> ModuleDef:
  """Wrap the block class inside `block` (a class or a functools.partial of one) in `nn.remat`."""
  if isinstance(block, functools.partial):
    remat_class = nn.remat(block.func, prevent_cse=prevent_cse)
    return functools.partial(remat_class, *block.args, **block.keywords)
  return nn.remat(block, prevent_cse=prevent_cse)


class Stage(nn.Module):
  """`num_blocks` blocks at one resolution: `block1`, which may change the shape, and N-1 copies.

  Unrolled, the copies are the submodules `block2` .. `blockN`. Scanned, they are one submodule
  `blocks` whose variables have a leading axis of length N-1; `layout.unstack_blocks` and
  `layout.stack_blocks` convert between the two layouts.

  Attributes:
    block: block class or partial; the stage passes `features`, `strides` and `name`.
    features: `features` of every block in the stage.
    num_blocks: blocks in the stage, at least 1.
    strides: stride of `block1`; the other blocks have stride 1.
    scan_blocks: run blocks 2..N with `nn.scan` instead of unrolling them.
    remat: rematerialise each block's activations in the backward pass (`nn.remat`).
    materialize_blocks: write each unrolled block's output to its own buffer (see
      `materialize`); a scanned block's output is the loop carry, written anyway.
  """

  block: ModuleDef
  features: int
  num_blocks: int
  strides: int = 1
  scan_blocks: bool = False
  remat: bool = False
  materialize_blocks: bool = False

  def __post_init__(self) -> None:
    if self.num_blocks < 1:
      raise ValueError(f"invalid num_blocks {self.num_blocks}: a stage needs at least 1 block")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    unrolled_block = self.block
    if self.remat:
      unrolled_block = _rematerialised(self.block, prevent_cse=True)
    x = self._output(unrolled_block(self.features, strides=self.strides, name="block1")(x))

    repeats = self.num_blocks - 1
    if repeats == 0:
      return x
    if self.scan_blocks:
      return self._scan(x, repeats)
    for index in range(2, self.num_blocks + 1):
      x = self._output(unrolled_block(self.features, name=f"block{index}")(x))
    return x

  @nn.nowrap
  def _output(self, x: jax.Array) -> jax.Array:
    return materialize(x) if self.materialize_blocks else x

  @nn.nowrap
  def _scan(self, x: jax.Array, repeats: int) -> jax.Array:
    # TODO: checkpoint groups of blocks (a scan of scans) so that remat keeps about sqrt(N)
    # block inputs, not N: scanned ResNet-1202 with remat peaked at 4.37 GiB on CPU (batch 128).
    block = self.block
    if self.remat:
      # jax.checkpoint documents prevent_cse as unnecessary inside lax.scan, where its
      # optimisation barriers would only cost speed.
      block = _rematerialised(self.block, prevent_cse=False)
    scanned = nn.scan(
        _apply_block,
        variable_axes={collection: 0 for collection in SCANNED_COLLECTIONS},
        split_rngs={"params": True},
        length=repeats,
    )
    x, _ = scanned(block(self.features, name=SCANNED_BLOCKS), x)
    return x
