"""Stages: the blocks of one resolution, unrolled or run with `nn.scan`, optionally rematerialised."""

import functools
import math
import numbers
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from resflax.models.layers import ModuleDef

# Name of the module that holds the stacked blocks 2..N of a stage in the scanned layout.
SCANNED_BLOCKS = "blocks"

# Collections whose variables `nn.scan` stacks along a leading block axis.
SCANNED_COLLECTIONS = ("params", "batch_stats", "intermediates")

# Submodules of the grouped view of `blocks` (see `RematGroups`).
_GROUPS = "groups"
_TAIL = "tail"


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
    remat: rematerialise each block's activations in the backward pass (`nn.remat`). Scanned
      blocks 2..N can also be checkpointed in groups (see `remat_group_size`).
    remat_group_size: blocks per rematerialised group of the N-1 scanned blocks (`RematGroups`).
      None picks the size from N-1 (`resolve_group_size`), which groups stages of 14 or more
      scanned blocks. 1 rematerialises block by block only.
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
  remat_group_size: int | None = None

  def __post_init__(self) -> None:
    if self.num_blocks < 1:
      raise ValueError(f"invalid num_blocks {self.num_blocks}: a stage needs at least 1 block")
    check_remat_group_size(self.remat_group_size)
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
    if not self.remat:
      return _scan_blocks(self.block, self.features, repeats, SCANNED_BLOCKS)(x)
    # jax.checkpoint documents prevent_cse as unnecessary inside lax.scan, where its
    # optimisation barriers would only cost speed.
    block = _rematerialised(self.block, prevent_cse=False)
    group_size = resolve_group_size(repeats, self.remat_group_size)
    num_groups, _ = group_layout(repeats, group_size)
    # Initialisation runs the flat scan, so grouping never changes the initial variables. A
    # single group would save nothing over block-by-block remat.
    if group_size == 1 or num_groups <= 1 or self.is_initializing():
      return _scan_blocks(block, self.features, repeats, SCANNED_BLOCKS)(x)
    grouped = nn.map_variables(
        RematGroups,
        trans_in_fn=functools.partial(group_view, repeats=repeats, group_size=group_size),
        trans_out_fn=flat_view,
        mutable=True,
    )
    return grouped(block, self.features, repeats, group_size, name=SCANNED_BLOCKS)(x)


def check_remat_group_size(group_size: int | None) -> None:
  """Raise ValueError unless `group_size` is None or an integer >= 1."""
  if group_size is None:
    return
  if not isinstance(group_size, numbers.Integral) or isinstance(group_size, bool) or group_size < 1:
    raise ValueError(
        f"invalid remat_group_size {group_size!r}: expected an integer >= 1, or None to let "
        "each stage pick its own"
    )


def resolve_group_size(repeats: int, requested: int | None) -> int:
  """Return the blocks per rematerialised group for a scanned stage of `repeats` blocks.

  With `requested` None, the size is the one that keeps the fewest block inputs for the backward
  pass (`kept_block_inputs`), if that at least halves them. Otherwise the size is 1 (block by
  block). So stages of 14 or more scanned blocks are grouped. A request above `repeats` gives one
  group of all the blocks.
  """
  _check_repeats(repeats)
  if requested is not None:
    check_remat_group_size(requested)
    return min(requested, repeats)
  root = math.sqrt(repeats)
  best = min(range(1, repeats + 1),
             key=lambda size: (kept_block_inputs(repeats, size), abs(size - root)))
  return best if 2 * kept_block_inputs(repeats, best) <= repeats else 1


def group_layout(repeats: int, group_size: int) -> tuple[int, int]:
  """Return `(num_groups, tail)`: the whole groups of `group_size` blocks that `RematGroups`
  runs, and the blocks after them, which it rematerialises block by block.

  A tail of one block would be a loop of one step. XLA removes such loops, and with it the
  block's rematerialisation on CPU: such layouts needed more memory than block by block in
  compiled steps (jax 0.10.2). The last group then joins the tail instead.
  """
  _check_repeats(repeats)
  check_remat_group_size(group_size)
  group_size = min(group_size, repeats)
  num_groups, tail = divmod(repeats, group_size)
  if tail == 1 and group_size > 1:
    num_groups, tail = num_groups - 1, tail + group_size
  return num_groups, tail


def kept_block_inputs(repeats: int, group_size: int) -> int:
  """Return about the largest number of block inputs that the backward pass of a scanned stage
  keeps at once.

  The forward pass keeps one input per group and one per tail block. The tail is
  differentiated first, and then each group with its `group_size` recomputed inputs, so the
  count is the groups plus the larger of the tail and `group_size`. A single group or block by
  block keeps `repeats`.
  """
  num_groups, tail = group_layout(repeats, group_size)
  if group_size == 1 or num_groups <= 1:
    return repeats
  return num_groups + max(tail, min(group_size, repeats))


def _check_repeats(repeats: int) -> None:
  if not isinstance(repeats, numbers.Integral) or repeats < 1:
    raise ValueError(f"invalid repeats {repeats!r}: a scanned stage has at least 1 block")


def _scan(body: Any, length: int) -> Any:
  """Return `body` (a function of a module and the carry) under `nn.scan` over `length` steps,
  with the variables of every step stacked along a leading axis."""
  return nn.scan(
      body,
      variable_axes={collection: 0 for collection in SCANNED_COLLECTIONS},
      split_rngs={"params": True},
      length=length,
  )


def _scan_blocks(block: ModuleDef, features: int, length: int, name: str) -> Any:
  """Return a function of x that applies `length` copies of `block` (submodule `name`) under
  `nn.scan`."""
  module = block(features, name=name)
  return lambda x: _scan(_apply_block, length)(module, x)[0]


class _Group(nn.Module):
  """`length` scanned blocks, the body of the outer loop of `RematGroups`."""

  block: ModuleDef
  features: int
  length: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return _scan_blocks(self.block, self.features, self.length, SCANNED_BLOCKS)(x)


class RematGroups(nn.Module):
  """`repeats` scanned blocks run as a loop over rematerialised groups of `group_size` blocks,
  then a loop over the blocks left over (the tail), rematerialised block by block.

  The backward pass then keeps one input per group and recomputes the inputs inside a group
  when it reaches it: about 2 sqrt(repeats) block inputs instead of `repeats`, for one more
  forward pass. `group_layout` gives the number of groups and the tail. The variables are
  `groups/blocks` with leading axes (groups, group_size) and `tail` with a leading axis of the
  tail's length. `group_view` and `flat_view` convert them to and from the flat `blocks`
  layout.
  """

  block: ModuleDef
  features: int
  repeats: int
  group_size: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    num_groups, tail = group_layout(self.repeats, self.group_size)
    if num_groups:
      group = nn.remat(_Group, prevent_cse=False)(
          self.block, self.features, self.group_size, name=_GROUPS
      )
      x, _ = _scan(_apply_block, num_groups)(group, x)
    if tail:
      x = _scan_blocks(self.block, self.features, tail, _TAIL)(x)
    return x


def group_view(
    variables: Mapping[str, Any], repeats: int, group_size: int
) -> dict[str, Any]:
  """Split every collection of flat `blocks` variables (leading axis `repeats`) into the
  `groups` and `tail` of `RematGroups`."""
  num_groups, _ = group_layout(repeats, group_size)
  whole = num_groups * group_size

  view = {}
  for collection, tree in variables.items():
    groups = jax.tree.map(
        lambda leaf: leaf[:whole].reshape(-1, group_size, *leaf.shape[1:]), tree
    )
    view[collection] = {_GROUPS: {SCANNED_BLOCKS: groups}}
    if whole < repeats:
      view[collection][_TAIL] = jax.tree.map(lambda leaf: leaf[whole:], tree)
  return view


def flat_view(variables: Mapping[str, Any]) -> dict[str, Any]:
  """Join the `groups` and `tail` of `RematGroups` variables back into flat `blocks` variables."""
  flat = {}
  for collection, tree in variables.items():
    grouped = jax.tree.map(
        lambda leaf: leaf.reshape(-1, *leaf.shape[2:]), tree[_GROUPS][SCANNED_BLOCKS]
    )
    if _TAIL in tree:
      grouped = jax.tree.map(
          lambda head, tail: jnp.concatenate([head, tail]), grouped, tree[_TAIL]
      )
    flat[collection] = grouped
  return flat
