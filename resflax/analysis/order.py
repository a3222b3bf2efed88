"""Network order of variable paths such as "stage2/block10/conv1": the stem first, then stages,
blocks and layers by number, then `final_bn` and the head."""

import re

_TRAILING_NUMBER = re.compile(r"\D*?(\d+)")
_LAST_MODULES = ("final_bn", "head")


def _component_rank(name: str) -> tuple[int, int]:
  if name.startswith("stem"):
    return (0, 0)
  if name in _LAST_MODULES:
    return (2, _LAST_MODULES.index(name))
  match = _TRAILING_NUMBER.fullmatch(name)
  return (1, int(match.group(1)) if match else 0)


def network_order(path: str) -> list[tuple[int, int]]:
  """Return the sort key of a "/"-separated module path ("block10" sorts after "block9")."""
  return [_component_rank(name) for name in path.split("/")]
