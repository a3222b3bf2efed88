"""One benchmark measurement, run in its own process by `benchmarks/run.py`.

`python -m benchmarks.measure SPEC_JSON` measures what the spec names and prints one line
`RESULT {json}` last. A fresh process per measurement keeps peak memory, compile time and
compilation caches of one net apart from the others.

Spec keys:
- `kind`: "resflax", "torch" or "matmul".
- nets: `family`, `depth`, `width`, `batch_size`, `image_size`, `warmup` (untimed steps after
  the first), `windows`, `window_seconds` and `max_timed_seconds` (see `_timed_windows`).
- resflax only: `mode` ("jit", "pmap", "mesh"), `dtype`, `scan_blocks`, `materialize_blocks`
  and `conv_gradient` (None: platform default), `remat`, and `cache_dir` (a persistent
  compilation cache, or None). `flops` requests XLA's FLOP count. `compile_only` compiles
  the jitted step ahead of time and reports XLA's memory analysis instead of running it.
- torch only: `device` ("cpu" or "cuda").
"""

import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any

RESULT_PREFIX = "RESULT "


def peak_rss_mib() -> float:
  """Return this process's peak resident memory so far, in MiB (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
  """Describe the machine and the JAX install the measurements ran on."""
  import jax
  import jaxlib

  device = jax.devices()[0]
  return {
      "cpu": cpu_model(),
      "cores": len(os.sched_getaffinity(0)),
      "platform": platform.platform(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "backend": jax.default_backend(),
      "device_kind": device.device_kind,
      "device_count": jax.device_count(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def _timed_windows(step, spec: dict[str, Any], batch_size: int) -> list[float]:
  """Return the examples/second of each timed window of calls of `step`, which must block
  until its work is done.

  One extra step sizes the windows: each lasts at least `window_seconds` (whole steps), and
  their number is cut from `windows` down to no fewer than 2 when they would take more than
  `max_timed_seconds` in all.
  """
  started = time.perf_counter()
  step()
  step_seconds = time.perf_counter() - started
  steps_per_window = max(1, math.ceil(spec["window_seconds"] / step_seconds))
  window = steps_per_window * step_seconds
  windows = max(2, min(spec["windows"], int(spec["max_timed_seconds"] // window)))
  rates = []
  for _ in range(windows):
    started = time.perf_counter()
    for _ in range(steps_per_window):
      step()
    rates.append(steps_per_window * batch_size / (time.perf_counter() - started))
  return rates


def _summary(rates: list[float], first_step_seconds: float, batch_size: int) -> dict[str, Any]:
  median = statistics.median(rates)
  step_seconds = batch_size / median
  return {
      "examples_per_second": median,
      "window_examples_per_second": rates,
      "step_seconds": step_seconds,
      "first_step_seconds": first_step_seconds,
      # The first call compiles and runs one step; a steady step is subtracted.
      "compile_seconds": max(first_step_seconds - step_seconds, 0.0),
  }


def _set_compilation_cache(cache_dir: str | None) -> None:
  import jax

  if cache_dir:
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _train_step_flops(step_fn, state, batch, mean, std) -> float | None:
  """Return XLA's FLOP count of one train step on one device, from the lowered (uncompiled)
  computation, or None when XLA gives none."""
  import jax

  cost = jax.jit(step_fn).lower(state, batch, mean, std).cost_analysis()
  if isinstance(cost, list):  # Older JAX returns one dict per device.
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and cost.get("flops") else None


def measure_resflax(spec: dict[str, Any]) -> dict[str, Any]:
  """Time resflax's own train step (augmentation, NaN guard and update included)."""
  import functools

  import jax
  import numpy as np

  from resflax import models
  from resflax.configs import default
  from resflax.training import loop
  from resflax.training import parallel
  from resflax.training import state as train_state
  from resflax.training import steps

  _set_compilation_cache(spec.get("cache_dir"))
  config = default.get_config()
  config.family, config.depth, config.width = spec["family"], spec["depth"], spec["width"]
  config.batch_size, config.parallel, config.dtype = spec["batch_size"], spec["mode"], spec["dtype"]
  config.scan_blocks, config.remat = spec["scan_blocks"], spec["remat"]
  config.materialize_blocks = spec.get("materialize_blocks")
  config.conv_gradient = spec.get("conv_gradient")
  config.remat_group_size = spec.get("remat_group_size")
  size = spec["image_size"]
  rss_before = peak_rss_mib()

  step_fn = functools.partial(steps.train_step, seed=0, pad=4, flip=True)
  mean = np.full((size, size, 3), 0.5, np.float32)
  runner = parallel.create_runner(config, step_fn, steps.eval_step, mean, None)
  model = loop.build_model(config, 10, runner.model_axis_name)
  host_state = jax.device_get(train_state.create_train_state(jax.random.key(0), model, config,
                                                             (size, size, 3)))
  rng = np.random.default_rng(0)
  host_batch = {
      "images": rng.integers(0, 256, (config.batch_size, size, size, 3), dtype=np.uint8),
      "labels": rng.integers(0, 10, config.batch_size).astype(np.int32),
      "index": np.arange(config.batch_size, dtype=np.int32),
  }
  flops = None
  scanned = models.default_scan_blocks() if config.scan_blocks is None else config.scan_blocks
  # XLA's cost analysis counts a loop body once, not once per iteration, so a scanned step's
  # count is too low. The table then uses the count of an unrolled row of the same net.
  if spec.get("flops", True) and not scanned:
    flops = _train_step_flops(step_fn, host_state, host_batch, mean, None)
  if spec.get("compile_only"):
    return _compile_only(step_fn, host_state, host_batch, mean, flops, config.batch_size)

  state = runner.place_state(host_state)
  batch = runner.shard_batch(host_batch)
  holder = {"state": state}

  def step():
    holder["state"], metrics = runner.train_step(holder["state"], batch)
    jax.block_until_ready(metrics)

  started = time.perf_counter()
  step()
  first_step_seconds = time.perf_counter() - started
  for _ in range(spec["warmup"]):
    step()
  rates = _timed_windows(step, spec, config.batch_size)
  result = _summary(rates, first_step_seconds, config.batch_size)
  result.update({
      "params": models.count_params(host_state.params),
      "num_devices": runner.num_devices,
      "flops_per_example": flops / config.batch_size if flops else None,
      "peak_rss_mib": peak_rss_mib(),
      "rss_before_mib": rss_before,
      "device_peak_bytes": _device_peak_bytes(),
  })
  return result


def _compile_only(step_fn, host_state, host_batch, mean, flops: float | None,
                  batch_size: int) -> dict[str, Any]:
  """Compile the jitted train step ahead of time, without running it, and return the compile
  time and XLA's memory analysis of the compiled step."""
  import jax

  started = time.perf_counter()
  lowered = jax.jit(step_fn, donate_argnums=0).lower(host_state, host_batch, mean, None)
  lower_seconds = time.perf_counter() - started
  compiled = lowered.compile()
  compile_seconds = time.perf_counter() - started - lower_seconds
  memory = compiled.memory_analysis()
  return {
      "lower_seconds": lower_seconds,
      "compile_seconds": compile_seconds,
      "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
      "argument_bytes": getattr(memory, "argument_size_in_bytes", None),
      "flops_per_example": flops / batch_size if flops else None,
      "peak_rss_mib": peak_rss_mib(),
  }


def _device_peak_bytes() -> int | None:
  import jax

  stats = jax.local_devices()[0].memory_stats()
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def measure_torch(spec: dict[str, Any]) -> dict[str, Any]:
  """Time the PyTorch reference net (see `torch_reference.py`)."""
  from benchmarks import torch_reference

  step, info = torch_reference.train_step_closure(
      spec["family"], spec["depth"], batch_size=spec["batch_size"],
      image_size=spec["image_size"], width=spec["width"], device=spec.get("device", "cpu"))
  started = time.perf_counter()
  step()
  first_step_seconds = time.perf_counter() - started
  for _ in range(spec["warmup"]):
    step()
  rates = _timed_windows(step, spec, spec["batch_size"])
  result = _summary(rates, first_step_seconds, spec["batch_size"])
  result.pop("compile_seconds")
  result.update(info)
  result["peak_rss_mib"] = peak_rss_mib()
  return result


def measure_matmul(spec: dict[str, Any]) -> dict[str, Any]:
  """Return the float32 GFLOP/s of a large square matmul through JAX: the ceiling used for
  the fraction of peak."""
  import jax
  import jax.numpy as jnp

  n = spec.get("size", 4096)
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  matmul(a, b).block_until_ready()
  seconds = []
  for _ in range(spec.get("repeats", 5)):
    started = time.perf_counter()
    matmul(a, b).block_until_ready()
    seconds.append(time.perf_counter() - started)
  return {"size": n, "gflops": 2 * n**3 / statistics.median(seconds) / 1e9,
          "machine": machine_info()}


MEASURES = {"resflax": measure_resflax, "torch": measure_torch, "matmul": measure_matmul}


def main(argv: list[str]) -> int:
  if len(argv) != 2:
    print("usage: python -m benchmarks.measure SPEC_JSON", file=sys.stderr)
    return 2
  spec = json.loads(argv[1])
  if spec.get("kind") not in MEASURES:
    print(f"unknown measurement kind {spec.get('kind')!r}; expected one of "
          f"{', '.join(MEASURES)}", file=sys.stderr)
    return 2
  result = MEASURES[spec["kind"]](spec)
  print(RESULT_PREFIX + json.dumps(result), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
