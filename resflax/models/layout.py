"""Variable trees: conversion between the unrolled and scanned layouts, parameter counts and
per-layer responses.

Unrolled, a stage contains `block1` .. `blockN`. Scanned, it contains `block1` and `blocks`, whose
leaves are those of `block2` .. `blockN` stacked along a new leading axis. The functions take any
nested dict of these: a whole variables dict, one collection (`params`, `batch_stats`,
`intermediates`) or a subtree.
"""

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from resflax.models.stages import SCANNED_BLOCKS

_BLOCK_NAME = re.compile(r"block(\d+)")
_NUMBERED_NAME = re.compile(r"[a-z_]*?(\d+)")
# BatchNorm modules whose `response` is a layer response: the main path, not `shortcut_bn`.
_RESPONSE_NORM = re.compile(r"stem_bn|bn\d+|final_bn")


def _block_numbers(tree: Mapping[str, Any]) -> list[int]:
  return sorted(
      int(match.group(1)) for key in tree if (match := _BLOCK_NAME.fullmatch(key))
  )


def stack_blocks(tree: Any) -> Any:
  """Convert a tree from the unrolled to the scanned layout.

  In every dict with keys `block1` .. `blockN` (N >= 2), stacks `block2` .. `blockN` into
  `blocks`. Dicts with `block1` alone stay as they are, as in a scanned stage of one block.
  Raises ValueError when the block numbers have gaps.
  """
  if not isinstance(tree, Mapping):
    return tree
  numbers = _block_numbers(tree)
  if numbers and numbers != list(range(1, len(numbers) + 1)):
    raise ValueError(f"cannot stack blocks {numbers}: expected block1 .. block{len(numbers)}")

  stacked = {}
  for key, value in tree.items():
    match = _BLOCK_NAME.fullmatch(key)
    if match is None or int(match.group(1)) == 1:
      stacked[key] = stack_blocks(value)
  repeats = [tree[f"block{number}"] for number in numbers[1:]]
  if repeats:
    stacked[SCANNED_BLOCKS] = jax.tree.map(lambda *leaves: jnp.stack(leaves), *repeats)
  return stacked


def unstack_blocks(tree: Any) -> Any:
  """Convert a tree from the scanned to the unrolled layout.

  In every dict with `blocks`, splits its leaves along the leading axis into `block2`,
  `block3`, ... The number of blocks comes from that axis. Raises ValueError when the leaves of
  one `blocks` disagree on it.
  """
  if not isinstance(tree, Mapping):
    return tree
  unstacked = {}
  for key, value in tree.items():
    if key != SCANNED_BLOCKS:
      unstacked[key] = unstack_blocks(value)
      continue
    lengths = {leaf.shape[0] for leaf in jax.tree.leaves(value)}
    if len(lengths) != 1:
      raise ValueError(f"cannot unstack {SCANNED_BLOCKS!r}: leading axes differ: {sorted(lengths)}")
    for index in range(lengths.pop()):
      unstacked[f"block{index + 2}"] = jax.tree.map(lambda leaf, i=index: leaf[i], value)
  return unstacked


def count_params(params: Any) -> int:
  """Return the number of scalars in `params` (pass `variables["params"]`, not all variables)."""
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def _name_rank(name: str) -> tuple[int, int]:
  """Sort key of one path component in network order: stem, numbered parts, final_bn."""
  if name.startswith("stem"):
    return (0, 0)
  if name == "final_bn":
    return (2, 0)
  match = _NUMBERED_NAME.fullmatch(name)
  return (1, int(match.group(1)) if match else 0)


def _collect_responses(
    tree: Mapping[str, Any], path: tuple[str, ...], found: list[tuple[tuple[str, ...], Any]]
) -> None:
  for key, value in tree.items():
    if not isinstance(value, Mapping):
      continue
    if _RESPONSE_NORM.fullmatch(key) and "response" in value:
      found.append(((*path, key), value["response"]))
    else:
      _collect_responses(value, (*path, key), found)


def layer_responses(intermediates: Mapping[str, Any]) -> list[tuple[str, jax.Array]]:
  """Return `(path, response)` for every conv layer of the main path, in network order.

  `intermediates` is the `intermediates` collection from `apply(..., mutable=["intermediates"])`
  (or the dict containing it), in either layout. A response is the output of the BatchNorm that
  follows a conv layer, before the ReLU or the addition. In pre-activation nets that BatchNorm
  sits before the next conv (or is `final_bn`). Paths look like "stage2/block3/bn1", and the
  order is the stem, then stage by stage and block by block, `bn1` before `bn2`. Projection
  shortcuts (`shortcut_bn`) are left out. A layer that ran more than once in the apply gives its
  first response.
  """
  if "intermediates" in intermediates:
    intermediates = intermediates["intermediates"]
  found: list[tuple[tuple[str, ...], Any]] = []
  _collect_responses(unstack_blocks(intermediates), (), found)
  found.sort(key=lambda item: [_name_rank(name) for name in item[0]])
  return [("/".join(path), values[0]) for path, values in found]
