"""Tests of the patch-matmul convolution gradient (`resflax.models.patch_conv`)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from resflax import models
from resflax.models import CifarNet, ImageNetNet, network, patch_conv

NHWC = ("NHWC", "HWIO", "NHWC")

# (height, width, kernel, stride, padding, in channels, out channels)
CONV_CASES = [
    (8, 9, 3, 1, ((1, 1), (1, 1)), 3, 5),
    (9, 9, 3, 2, ((1, 1), (1, 1)), 4, 6),  # a strided conv whose last input row no window reads
    (8, 8, 1, 2, ((0, 0), (0, 0)), 4, 8),  # an option-B/C projection
    (7, 6, 3, 2, ((0, 1), (1, 0)), 2, 3),  # asymmetric padding
    (6, 7, 3, 1, "SAME", 2, 2),
    (6, 7, 3, 1, "VALID", 2, 2),
    (12, 12, 7, 2, ((3, 3), (3, 3)), 3, 4),  # the ImageNet stem
]


def _loss(conv, strides, padding, x, kernel):
  y = conv(x, kernel, strides, padding, dimension_numbers=NHWC)
  return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size)


@pytest.mark.parametrize("height, width, size, stride, padding, cin, cout", CONV_CASES)
def test_values_and_gradients_match_lax(height, width, size, stride, padding, cin, cout):
  x = jax.random.normal(jax.random.key(0), (2, height, width, cin))
  kernel = jax.random.normal(jax.random.key(1), (size, size, cin, cout))
  strides = (stride, stride)
  expected = lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC)
  actual = patch_conv.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC)
  np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)

  grads = [jax.grad(functools.partial(_loss, conv, strides, padding), argnums=(0, 1))(x, kernel)
           for conv in (lax.conv_general_dilated, patch_conv.conv_general_dilated)]
  for want, got in zip(*grads):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_kernel_gradient_is_a_matmul():
  # The kernel gradient must come from the patch matmul, not from XLA's convolution transpose.
  # Both jaxprs contain two convs: lax's forward and kernel-gradient convs, or the custom rule's
  # forward and input-gradient convs (its backward pass computes both gradients).
  x = jnp.ones((2, 8, 8, 3))
  kernel = jnp.ones((3, 3, 3, 4))

  def kernel_gradient_ops(conv):
    grad = jax.grad(functools.partial(_loss, conv, (1, 1), ((1, 1), (1, 1))), argnums=1)
    text = str(jax.make_jaxpr(grad)(x, kernel))
    return text.count("conv_general_dilated["), text.count("dot_general[")

  assert kernel_gradient_ops(lax.conv_general_dilated) == (2, 0)
  assert kernel_gradient_ops(patch_conv.conv_general_dilated) == (2, 1)


def test_unhandled_calls_go_to_lax():
  x = jax.random.normal(jax.random.key(0), (1, 9, 9, 4))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 2, 4))
  grouped = patch_conv.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=NHWC,
                                            feature_group_count=2)
  np.testing.assert_allclose(
      grouped,
      lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=NHWC,
                               feature_group_count=2),
      rtol=1e-6,
  )
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 4, 4))
  for kwargs in ({"rhs_dilation": (2, 2)}, {"lhs_dilation": (2, 2)}):
    np.testing.assert_allclose(
        patch_conv.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=NHWC, **kwargs),
        lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC,
                                 **kwargs),
        rtol=1e-6,
    )
  small = jax.random.normal(jax.random.key(1), (2, 2, 4, 4))
  for strides, padding in [((2, 2), "SAME"), ((1, 1), "SAME_LOWER"), ((2, 2), "SAME_LOWER"),
                           ((1, 1), ((-1, 0), (0, -1)))]:
    for rhs in (kernel, small):
      conv = functools.partial(_loss, patch_conv.conv_general_dilated, strides, padding)
      reference = functools.partial(_loss, lax.conv_general_dilated, strides, padding)
      np.testing.assert_allclose(conv(x, rhs), reference(x, rhs), rtol=1e-6)
      for got, want in zip(jax.grad(conv, (0, 1))(x, rhs), jax.grad(reference, (0, 1))(x, rhs)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _param_gradients(net, variables, x):
  def loss(params):
    logits, _ = net.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                          train=True, mutable=["batch_stats"])
    return jnp.sum(logits**2)

  return jax.jit(jax.grad(loss))(variables["params"])


@pytest.mark.parametrize("scan_blocks", [False, True])
@pytest.mark.parametrize("residual, shortcut", [(True, "A"), (True, "C"), (False, "A")])
def test_cifar_net_gradients_match(scan_blocks, residual, shortcut):
  x = jax.random.normal(jax.random.key(2), (4, 16, 16, 3))
  nets = [CifarNet(14, residual=residual, shortcut=shortcut, width=4, scan_blocks=scan_blocks,
                   conv_gradient=gradient) for gradient in ("xla", "patches")]
  variables = nets[0].init(jax.random.key(0), x, train=False)
  reference, patches = (_param_gradients(net, variables, x) for net in nets)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=2e-3, atol=1e-5), patches,
               reference)


def test_imagenet_net_accepts_patch_gradient():
  x = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
  nets = [ImageNetNet(18, width=4, num_classes=5, conv_gradient=gradient)
          for gradient in ("xla", "patches")]
  variables = nets[0].init(jax.random.key(0), x, train=False)
  reference, patches = (_param_gradients(net, variables, x) for net in nets)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=2e-3, atol=1e-5), patches,
               reference)


def test_default_conv_gradient():
  on_cpu = jax.default_backend() == "cpu"
  assert network.default_conv_gradient(scan_blocks=True) == ("patches" if on_cpu else "xla")
  assert network.default_conv_gradient(scan_blocks=False) == "xla"


def test_invalid_conv_gradient_raises():
  with pytest.raises(ValueError, match="invalid conv_gradient 'fast'"):
    CifarNet(20, conv_gradient="fast")
  assert models.CifarNet(20, conv_gradient=None).conv_gradient is None
