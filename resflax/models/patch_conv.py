"""A convolution whose gradients are a transposed convolution and one patch matmul.

XLA:CPU runs its own convolution gradients slowly inside a loop body, which makes scanned
blocks (`scan_blocks=True`) impractical on CPU. `conv_general_dilated` below computes the same
forward convolution, but its backward pass is written out with ops that XLA:CPU runs at full
speed inside `lax.scan`:

- input gradient: a forward NHWC convolution of the output gradient with the spatially flipped
  kernel, its input and output channels swapped (with input dilation for strided convs);
- kernel gradient: the kh*kw shifted views of the padded input, concatenated along channels,
  times the output gradient, as one matmul of shape (kh*kw*Cin, N*H*W) x (N*H*W, Cout).

Pass it to `nn.Conv(conv_general_dilated=...)`. Calls that it does not handle (grouped,
dilated or non-NHWC/HWIO convolutions, strided "SAME", "SAME_LOWER" and negative padding) go to
`lax.conv_general_dilated` unchanged.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def _is_nhwc(dimension_numbers) -> bool:
  """Return whether `dimension_numbers` (strings or ConvDimensionNumbers) mean NHWC/HWIO/NHWC."""
  if dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    expected = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
    return dimension_numbers == expected
  return tuple(dimension_numbers) == _NHWC


def _is_one(values: Sequence[int] | None) -> bool:
  return values is None or all(value == 1 for value in values)


def _explicit_padding(padding, kernel_shape: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """Return `padding` as (low, high) pairs per spatial axis.

  The custom rule needs numbers, so the strings are resolved here: "VALID", and "SAME" as lax
  resolves it at stride 1. `_handles_padding` sends the other strings to lax.
  """
  if isinstance(padding, str):
    if padding.upper() == "VALID":
      return tuple((0, 0) for _ in kernel_shape)
    return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_shape)
  return tuple((int(low), int(high)) for low, high in padding)


def _handles_padding(padding, strides: tuple[int, ...]) -> bool:
  """Return whether the custom rule handles `padding`: "VALID", "SAME" at stride 1, or
  non-negative (low, high) pairs."""
  if isinstance(padding, str):
    return padding.upper() == "VALID" or (padding.upper() == "SAME" and set(strides) == {1})
  return all(low >= 0 and high >= 0 for low, high in padding)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
  """Compute `lax.conv_general_dilated`, with the patch-matmul backward pass for NHWC/HWIO convs."""
  strides = tuple(int(s) for s in window_strides)
  handled = (
      lhs.ndim == 4
      and _is_nhwc(dimension_numbers)
      and _is_one(lhs_dilation)
      and _is_one(rhs_dilation)
      and feature_group_count == 1
      and batch_group_count == 1
      and preferred_element_type is None
      and _handles_padding(padding, strides)
  )
  if not handled:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type,
    )
  pads = _explicit_padding(padding, rhs.shape[:2])
  return patch_conv(lhs, rhs, strides, pads, precision)


def _forward(x, kernel, strides, pads, precision):
  return lax.conv_general_dilated(
      x, kernel, strides, pads, dimension_numbers=_NHWC, precision=precision
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def patch_conv(x, kernel, strides, pads, precision=None):
  """Convolve NHWC `x` with HWIO `kernel`, padded by (low, high) `pads`, with the patch-matmul
  gradient."""
  return _forward(x, kernel, strides, pads, precision)


def _patch_conv_fwd(x, kernel, strides, pads, precision):
  return _forward(x, kernel, strides, pads, precision), (x, kernel)


def _input_gradient(g, x_shape, kernel, strides, pads, precision):
  """Return the transposed convolution of `g`: the stride becomes input dilation, and the kernel
  is flipped with its channel axes swapped."""
  flipped = jnp.flip(kernel, axis=(0, 1)).swapaxes(2, 3)
  transposed_pads = []
  for axis, (low, high) in enumerate(pads):
    size, k, stride = x_shape[1 + axis], kernel.shape[axis], strides[axis]
    # Input rows that no output window reaches (the remainder of a strided conv) get zeros.
    unused = (size + low + high - k) % stride
    transposed_pads.append((k - 1 - low, k - 1 - high + unused))
  return lax.conv_general_dilated(
      g, flipped, (1, 1), transposed_pads, lhs_dilation=strides,
      dimension_numbers=_NHWC, precision=precision,
  )


def _kernel_gradient(g, x, kernel_shape, strides, pads, precision):
  """Multiply the kh*kw shifted (and strided) views of the padded input by `g` in one matmul."""
  kh, kw, cin, cout = kernel_shape
  padded = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  out_h, out_w = g.shape[1], g.shape[2]
  views = [
      padded[
          :,
          i : i + strides[0] * (out_h - 1) + 1 : strides[0],
          j : j + strides[1] * (out_w - 1) + 1 : strides[1],
          :,
      ]
      for i in range(kh)
      for j in range(kw)
  ]
  patches = jnp.concatenate(views, axis=-1).reshape(-1, kh * kw * cin)
  gradient = lax.dot_general(
      patches, g.reshape(-1, cout), (((0,), (0,)), ((), ())), precision=precision
  )
  return gradient.reshape(kh, kw, cin, cout)


def _patch_conv_bwd(strides, pads, precision, residuals, g):
  x, kernel = residuals
  dx = _input_gradient(g, x.shape, kernel, strides, pads, precision)
  dkernel = _kernel_gradient(g, x, kernel.shape, strides, pads, precision)
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


patch_conv.defvjp(_patch_conv_fwd, _patch_conv_bwd)
