"""One training run: resume, train, log, evaluate, checkpoint, and stop on divergence."""

import dataclasses
import functools
import logging
import math
import pathlib
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tqdm

from resflax import data
from resflax import models
from resflax.training import checkpoint
from resflax.training import feeds
from resflax.training import history
from resflax.training import parallel
from resflax.training import steps
from resflax.training.state import TrainState
from resflax.training.state import create_train_state

CHECKPOINT_DIR = "checkpoints"
FAMILIES = ("plain", "residual")
ARCHS = ("cifar", "imagenet")


def build_model(config: ml_collections.ConfigDict, num_classes: int,
                axis_name: str | None = None) -> nn.Module:
  """Build the plain or residual net of `config.family`, `config.arch` and `config.depth`.

  `axis_name` is the axis over which BatchNorm averages batch statistics: the pmap axis for
  synchronised BatchNorm, otherwise None (see `Runner.model_axis_name`). `config.width` sets
  the first-stage filters of CIFAR nets only; ImageNet nets keep their own default.
  """
  if config.family not in FAMILIES:
    raise ValueError(f"Invalid family {config.family!r}; expected one of {FAMILIES}.")
  options = dict(
      depth=int(config.depth),
      residual=config.family == "residual",
      shortcut=config.shortcut,
      num_classes=num_classes,
      preactivation=config.preactivation,
      zero_init_residual=config.zero_init_residual,
      dtype=jnp.dtype(config.dtype),
      axis_name=axis_name,
      bn_momentum=config.bn_momentum,
      bn_epsilon=config.bn_epsilon,
      scan_blocks=config.scan_blocks,
      remat=config.remat,
      remat_group_size=config.get("remat_group_size"),
      materialize_blocks=config.get("materialize_blocks"),
      conv_gradient=config.get("conv_gradient"),
  )
  if config.arch == "cifar":
    return models.CifarNet(width=config.width, **options)
  if config.arch == "imagenet":
    return models.ImageNetNet(**options)
  raise ValueError(f"Invalid arch {config.arch!r}; expected one of {ARCHS}.")


def evaluate(runner: parallel.Runner, state: TrainState, feed: feeds.Feed,
             final: bool = False) -> dict[str, float | int]:
  """Return `<set>_loss`, `<set>_error` (a fraction) and `<set>_examples` for every
  evaluation set of `feed`; `final` measures "train" on the final training subset.

  Runs in inference mode (BatchNorm running statistics). Counts are summed exactly over all
  batches, padding excluded.
  """
  results = {}
  for name in feed.eval_sets:
    sums = [runner.eval_step(state, runner.shard_batch(batch))
            for batch in feed.eval_batches(name, final=final)]
    sums = runner.fetch(sums)
    count = sum(int(s["count"]) for s in sums)
    results[f"{name}_loss"] = sum(float(s["loss_sum"]) for s in sums) / count
    results[f"{name}_error"] = sum(int(s["error_count"]) for s in sums) / count
    results[f"{name}_examples"] = count
  return results


def _describe(results: dict[str, float | int]) -> str:
  return ", ".join(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
                   for key, value in results.items())


@dataclasses.dataclass
class IntervalMetrics:
  """Sums of the per-step training metrics since the last log line.

  The sums are float64 on the host and are saved with each checkpoint, so a resumed run logs
  the same means as an uninterrupted one.
  """

  steps: int = 0
  loss_sum: float = 0.0
  error_sum: float = 0.0
  grad_norm_sum: float = 0.0

  def add(self, metrics: dict[str, float]) -> None:
    self.steps += 1
    self.loss_sum += metrics["loss"]
    self.error_sum += metrics["error"]
    self.grad_norm_sum += metrics["grad_norm"]

  def means(self) -> dict[str, float]:
    return {
        "loss": self.loss_sum / self.steps,
        "batch_error": self.error_sum / self.steps,
        "grad_norm": self.grad_norm_sum / self.steps,
    }


@dataclasses.dataclass
class _Throughput:
  """Training time of this session, without compilation, evaluation and checkpoints."""

  seconds: float = 0.0
  steps: int = 0
  interval_start: float = 0.0
  interval_steps: int = 0

  def restart_interval(self) -> None:
    self.interval_start = time.perf_counter()
    self.interval_steps = 0

  def end_interval(self) -> tuple[float, int]:
    elapsed = time.perf_counter() - self.interval_start
    self.seconds += elapsed
    self.steps += self.interval_steps
    return elapsed, self.interval_steps


def _as_float(value: Any) -> float | None:
  value = float(value)
  return value if math.isfinite(value) else None


def _host_metrics(metrics: dict[str, np.ndarray]) -> dict[str, Any]:
  values = {key: float(value) for key, value in metrics.items() if key != "finite"}
  values["finite"] = bool(metrics["finite"])
  return values


class _TrainingLoop:
  """The mutable parts of one run between `train_and_evaluate`'s setup and its result."""

  def __init__(self, config: ml_collections.ConfigDict, runner: parallel.Runner,
               feed: feeds.Feed, manager: ocp.CheckpointManager, writer: history.MetricWriter,
               loop_state: dict[str, Any]):
    self.config = config
    self.runner = runner
    self.feed = feed
    self.manager = manager
    self.writer = writer
    self.name = f"{config.family}-{config.depth} seed {config.seed}"
    self.interval = IntervalMetrics(**loop_state.get("interval", {}))
    self.last_metrics: dict[str, Any] = loop_state.get("last_metrics", {})
    self.wall_seconds_before = loop_state.get("wall_seconds", 0.0)
    self.session_start = time.time()
    self.throughput = _Throughput()
    self.compile_seconds: float | None = None
    self.last_eval: dict[str, float] | None = None
    self.batch_stats_synced_at = -1

  def _check(self, step: int, metrics: Any) -> bool:
    """Fetch and record the metrics of the update with index `step`. Return False if it diverged."""
    values = _host_metrics(self.runner.fetch(metrics))
    if not values["finite"]:
      logging.error(
          "Run %s diverged at step %d: loss %s, gradient norm %s. The run stops here, and its "
          "newest checkpoint, of step %s, is the last good one.", self.name, step, values["loss"],
          values["grad_norm"], self.manager.latest_step())
      self.writer.write({"step": step, "kind": history.DIVERGED,
                         "loss": _as_float(values["loss"]),
                         "grad_norm": _as_float(values["grad_norm"])})
      return False
    self.interval.add(values)
    self.last_metrics = values
    return True

  def _sync(self, state: TrainState, step: int) -> TrainState:
    if self.batch_stats_synced_at != step:
      state = self.runner.sync_batch_stats(state)
      self.batch_stats_synced_at = step
    return state

  def _log(self, step: int, elapsed: float, timed_steps: int) -> None:
    record = {"step": step, "kind": history.TRAIN, **self.interval.means(),
              "learning_rate": self.last_metrics["learning_rate"],
              "param_norm": self.last_metrics["param_norm"],
              "examples_per_second": None, "step_seconds": None}
    if timed_steps:
      record["examples_per_second"] = timed_steps * self.config.batch_size / elapsed
      record["step_seconds"] = elapsed / timed_steps
    self.writer.write(record)
    logging.info("Run %s step %d: loss %.4f, batch error %.4f, learning rate %g, gradient norm "
                 "%.3g, parameter norm %.3g, %s examples/s.", self.name, step, record["loss"],
                 record["batch_error"], record["learning_rate"], record["grad_norm"],
                 record["param_norm"], _format_rate(record["examples_per_second"]))
    self.interval = IntervalMetrics()

  def _evaluate(self, state: TrainState, step: int) -> TrainState:
    state = self._sync(state, step)
    started = time.perf_counter()
    results = evaluate(self.runner, state, self.feed, final=step == self.config.num_steps)
    self.last_eval = results
    self.writer.write({"step": step, "kind": history.EVAL, **results,
                       "eval_seconds": time.perf_counter() - started})
    logging.info("Run %s step %d evaluation: %s.", self.name, step, _describe(results))
    return state

  def _save(self, state: TrainState, step: int) -> TrainState:
    state = self._sync(state, step)
    loop_state = {
        "interval": dataclasses.asdict(self.interval),
        "last_metrics": self.last_metrics,
        "wall_seconds": self.wall_seconds(),
    }
    checkpoint.save_checkpoint(self.manager, self.runner.fetch(state), self.config, loop_state)
    return state

  def wall_seconds(self) -> float:
    return self.wall_seconds_before + time.time() - self.session_start

  def _at_boundary(self, state: TrainState, completed: int, progress: tqdm.tqdm) -> TrainState:
    """Log, evaluate and save where the config's intervals divide `completed` or the run ends."""
    config = self.config
    is_last = completed == config.num_steps
    elapsed, timed_steps = self.throughput.end_interval()
    if completed % config.log_every == 0 or is_last:
      self._log(completed, elapsed, timed_steps)
      progress.set_postfix(loss=f"{self.last_metrics['loss']:.3f}",
                           examples_per_second=_format_rate(self.examples_per_second()),
                           refresh=False)
    if completed % config.eval_every == 0 or is_last:
      state = self._evaluate(state, completed)
    if completed % config.checkpoint_every == 0 or is_last:
      state = self._save(state, completed)
    self.throughput.restart_interval()
    return state

  def _is_boundary(self, completed: int) -> bool:
    config = self.config
    return (completed == config.num_steps or completed % config.log_every == 0
            or completed % config.eval_every == 0 or completed % config.checkpoint_every == 0)

  def train(self, state: TrainState, start_step: int) -> int | None:
    """Run steps start_step .. num_steps - 1 and return the index of a diverged step, or None."""
    config = self.config
    progress = tqdm.tqdm(total=config.num_steps, initial=start_step, desc=self.name,
                         unit="step", dynamic_ncols=True,
                         disable=not (config.progress and self.writer.enabled))
    # Step k's metrics are checked after step k + 1 has been dispatched, so the host does not
    # wait for the device after every step. At a boundary (log, eval, checkpoint) and after
    # the first step they are checked at once.
    pending: tuple[int, Any] | None = None
    first_started = time.perf_counter()
    try:
      for step in range(start_step, config.num_steps):
        batch = self.runner.shard_batch(self.feed.train_batch(step))
        state, metrics = self.runner.train_step(state, batch)
        if pending is not None and not self._check(*pending):
          return pending[0]
        pending = (step, metrics)
        progress.update()

        if step == start_step:
          # The first step includes compilation; throughput is measured without it.
          if not self._check(*pending):
            return step
          pending = None
          self.compile_seconds = time.perf_counter() - first_started
          logging.info("Run %s compiled and ran step %d in %.1f s.", self.name, step,
                       self.compile_seconds)
          self.throughput.restart_interval()
        else:
          self.throughput.interval_steps += 1

        if self._is_boundary(step + 1):
          if pending is not None and not self._check(*pending):
            return pending[0]
          pending = None
          state = self._at_boundary(state, step + 1, progress)
      return None
    finally:
      progress.close()

  def examples_per_second(self) -> float | None:
    if not self.throughput.steps:
      return None
    return self.throughput.steps * self.config.batch_size / self.throughput.seconds


def _format_rate(rate: float | None) -> str:
  return "n/a" if rate is None else f"{rate:.0f}"


def train_and_evaluate(config: ml_collections.ConfigDict,
                       dataset: data.Dataset | data.StreamedDataset,
                       workdir: str | pathlib.Path) -> dict[str, Any]:
  """Train and evaluate one run (`config.family`, `config.depth`, `config.seed`) in `workdir`.

  Resumes from the newest checkpoint under `<workdir>/checkpoints` if there is one and trains
  up to `config.num_steps`. It logs every `log_every` steps, evaluates every `eval_every`
  steps and saves every `checkpoint_every` steps. The last step is always logged, evaluated
  and saved.
  Process 0 writes `<workdir>/history.jsonl` and TensorBoard events; every process must call
  this function with the same arguments.

  A non-finite loss, gradient or parameter stops the run at that step without saving. The
  result then has `diverged=True`, `diverged_step` (the index of the failed update, which is
  also the number of updates applied before it), errors None, and the newest checkpoint is the
  last good one. Divergence never raises.

  Returns a dict with `family`, `depth`, `seed`, `params` (count), `steps` (updates applied),
  `train_error` (eval mode, on a fixed training subset of `final_train_eval_size` examples,
  by default `train_eval_size`), `val_error` (None without a validation split), `test_error`,
  the matching `*_loss` values and `*_examples` counts,
  `diverged`, `diverged_step`, `wall_seconds` (summed over sessions up to each one's last
  checkpoint), `examples_per_second` and `compile_seconds` (this session), the last step's
  `learning_rate`, `grad_norm` and `param_norm`, `resumed_from_step` and `checkpoint_step`.
  Errors are fractions in [0, 1].

  Raises CheckpointError when the newest checkpoint cannot be restored or was written with a
  different config, and ValueError for batch sizes that do not divide over the devices.
  """
  workdir = pathlib.Path(workdir)
  process_count = jax.process_count()
  feed = feeds.create_feed(dataset, config)
  try:
    train_step = functools.partial(steps.train_step, seed=config.seed, pad=feed.pad,
                                   flip=feed.flip)
    runner = parallel.create_runner(config, train_step, steps.eval_step, dataset.mean,
                                    dataset.std)
    local_devices = runner.num_devices // process_count
    data.check_batch_divides(config.batch_size, local_devices, process_count)
    data.check_batch_divides(config.eval_batch_size, local_devices, process_count,
                             name="eval_batch_size")
    model = build_model(config, dataset.num_classes, runner.model_axis_name)
    initial = jax.device_get(create_train_state(jax.random.key(config.seed), model, config,
                                                feed.image_shape))
    manager = checkpoint.create_checkpoint_manager(workdir / CHECKPOINT_DIR,
                                                   config.keep_checkpoints)
    try:
      return _resume_and_train(config, runner, feed, manager, initial, workdir)
    finally:
      manager.wait_until_finished()
      manager.close()
  finally:
    feed.close()


def _resume_and_train(config: ml_collections.ConfigDict, runner: parallel.Runner,
                      feed: feeds.Feed, manager: ocp.CheckpointManager, initial: TrainState,
                      workdir: pathlib.Path) -> dict[str, Any]:
  restored = checkpoint.restore_checkpoint(manager, initial, config)
  host_state, loop_state = restored if restored is not None else (initial, {})
  start_step = int(host_state.step)
  if start_step > config.num_steps:
    raise checkpoint.CheckpointError(
        f"The newest checkpoint in {manager.directory} is at step {start_step}, beyond "
        f"num_steps={config.num_steps}. Set --config.num_steps to at least {start_step}, or "
        "delete that directory (or use another --workdir) to start fresh.")

  writer = history.MetricWriter(workdir, start_step, enabled=jax.process_index() == 0)
  try:
    loop = _TrainingLoop(config, runner, feed, manager, writer, loop_state)
    if start_step:
      logging.info("Run %s resumes from step %d of %d in %s.", loop.name, start_step,
                   config.num_steps, workdir)
    else:
      logging.info("Run %s starts: %d steps on %d %s device(s) in %s mode, in %s.", loop.name,
                   config.num_steps, runner.num_devices, jax.default_backend(), runner.mode,
                   workdir)
    state = runner.place_state(host_state)
    diverged_step = loop.train(state, start_step)
    if diverged_step is None and loop.last_eval is None:
      # The run had finished before this call: evaluate the restored state for the result.
      loop.last_eval = evaluate(runner, state, feed, final=True)
  finally:
    writer.close()

  manager.wait_until_finished()
  errors = loop.last_eval if diverged_step is None else {}
  result = {
      "family": config.family,
      "depth": int(config.depth),
      "seed": int(config.seed),
      "params": models.count_params(initial.params),
      "steps": config.num_steps if diverged_step is None else diverged_step,
      "diverged": diverged_step is not None,
      "diverged_step": diverged_step,
      "wall_seconds": loop.wall_seconds(),
      "examples_per_second": loop.examples_per_second(),
      "compile_seconds": loop.compile_seconds,
      "learning_rate": loop.last_metrics.get("learning_rate"),
      "grad_norm": loop.last_metrics.get("grad_norm"),
      "param_norm": loop.last_metrics.get("param_norm"),
      "resumed_from_step": start_step or None,
      "checkpoint_step": manager.latest_step(),
  }
  for name in ("train", "val", "test"):
    result[f"{name}_error"] = errors.get(f"{name}_error")
    result[f"{name}_loss"] = errors.get(f"{name}_loss")
    result[f"{name}_examples"] = errors.get(f"{name}_examples")
  if diverged_step is None:
    logging.info("Run %s finished at step %d in %.0f s: train error %.4f, test error %.4f.",
                 loop.name, result["steps"], result["wall_seconds"], result["train_error"],
                 result["test_error"])
  return result
