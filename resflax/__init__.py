"""resflax: plain and residual networks in JAX/Flax for studying deep residual learning."""
