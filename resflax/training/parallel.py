"""Three ways to run the same train and eval steps: one device, pmap, or jit over a mesh.

A runner places the state and the batches on its devices, runs the compiled steps and fetches
results back to the host. It takes host batches with this process's contiguous part of the
global batch, which is all of it in a single-process run. It returns host copies of the state
without a device axis, so checkpoints do not depend on the mode.

- `JitRunner` ("jit"): `jax.jit` on one device.
- `PmapRunner` ("pmap"): `jax.pmap` over the local devices. Gradients are averaged with
  `lax.pmean`. BatchNorm normalizes with per-device batch statistics, unless the model was
  built with `model_axis_name`, which makes it average them over devices (synchronised
  BatchNorm). Without it the running statistics drift apart between devices, so the loop
  calls `sync_batch_stats` to replace them with their mean before every evaluation and
  checkpoint.
- `MeshRunner` ("mesh"): `jax.jit` over a one-axis `jax.make_mesh` of all devices of all
  processes, with the state replicated and the batch sharded along the mesh axis. The step is
  written as for one device and the compiler partitions it, so BatchNorm statistics cover the
  global batch.

All runners donate the state to the train step, so the state passed in must not be used again.
"""

import abc
from collections.abc import Callable, Mapping, Sequence
import functools
from typing import Any

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np

from resflax import data
from resflax.training.state import TrainState

PMAP_AXIS = "devices"
MESH_AXIS = "data"
PARALLEL_MODES = ("jit", "pmap", "mesh")

HostBatch = Mapping[str, np.ndarray]
# A step function with the signature of steps.train_step (or steps.eval_step) whose keyword
# hyperparameters, apart from `axis_name`, are already bound.
StepFn = Callable[..., Any]


class Runner(abc.ABC):
  """Runner of bound train and eval steps on a set of devices.

  Attributes:
    mode: "jit", "pmap" or "mesh".
    model_axis_name: the axis over which the model's BatchNorm must average batch statistics,
      or None. Build the model with it.
    num_devices: devices that share one global batch, over all processes.
  """

  mode: str
  model_axis_name: str | None = None
  num_devices: int

  @abc.abstractmethod
  def place_state(self, state: TrainState) -> TrainState:
    """Copy a host state (one copy, no device axis) to the devices."""

  @abc.abstractmethod
  def shard_batch(self, batch: HostBatch) -> dict[str, jax.Array]:
    """Copy this process's part of a global batch to the devices, split along the batch axis."""

  @abc.abstractmethod
  def train_step(self, state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, Any]:
    """Run one train step on a placed state and batch; the input state is donated."""

  @abc.abstractmethod
  def eval_step(self, state: TrainState, batch: dict[str, jax.Array]) -> Any:
    """Return the eval step's sums over the whole global batch."""

  def sync_batch_stats(self, state: TrainState) -> TrainState:
    """Make the BatchNorm running statistics equal on all devices (a no-op by default)."""
    return state

  @abc.abstractmethod
  def fetch(self, tree: Any) -> Any:
    """Copy a placed state, metrics or sums to the host as numpy arrays, without a device axis."""


def _check_single_process(mode: str) -> None:
  if jax.process_count() > 1:
    raise ValueError(f"parallel={mode!r} runs within one process, but this run has "
                     f"{jax.process_count()} processes; use --config.parallel=mesh.")


class JitRunner(Runner):
  """Runner that compiles the steps with `jax.jit` for one device."""

  mode = "jit"

  def __init__(self, train_step: StepFn, eval_step: StepFn, mean: np.ndarray,
               std: np.ndarray | None, device: jax.Device | None = None):
    _check_single_process(self.mode)
    self.device = device or jax.local_devices()[0]
    self.num_devices = 1
    self._mean, self._std = jax.device_put((mean, std), self.device)
    self._train_step = jax.jit(train_step, donate_argnums=0)
    self._eval_step = jax.jit(eval_step)

  def place_state(self, state: TrainState) -> TrainState:
    # Copy through the host, because the train step donates the placed state, and placing an
    # array already on this device would donate (and delete) the caller's array.
    return jax.device_put(jax.device_get(state), self.device)

  def shard_batch(self, batch: HostBatch) -> dict[str, jax.Array]:
    return jax.device_put(dict(batch), self.device)

  def train_step(self, state, batch):
    return self._train_step(state, batch, self._mean, self._std)

  def eval_step(self, state, batch):
    return self._eval_step(state, batch, self._mean, self._std)

  def fetch(self, tree: Any) -> Any:
    return jax.device_get(tree)


def _first_replica(x: jax.Array) -> np.ndarray:
  """Return device 0's slice of an array whose leading axis is the pmap device axis."""
  shard = min(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.asarray(shard.data)[0]


class PmapRunner(Runner):
  """Data-parallel runner that maps the steps with `jax.pmap` over the local devices.

  Placed values carry a leading device axis. With `sync_batch_norm`, `model_axis_name` is the
  pmap axis, so a model built with it normalizes with statistics of the global batch.
  """

  mode = "pmap"

  def __init__(self, train_step: StepFn, eval_step: StepFn, mean: np.ndarray,
               std: np.ndarray | None, *, sync_batch_norm: bool,
               devices: Sequence[jax.Device] | None = None):
    _check_single_process(self.mode)
    self.devices = list(devices or jax.local_devices())
    self.num_devices = len(self.devices)
    self.sync_batch_norm = sync_batch_norm
    self.model_axis_name = PMAP_AXIS if sync_batch_norm else None
    mesh = jax.sharding.Mesh(np.array(self.devices), (PMAP_AXIS,))
    self._stacked = NamedSharding(mesh, P(PMAP_AXIS))
    pmap = functools.partial(jax.pmap, axis_name=PMAP_AXIS, devices=self.devices)
    self._train_step = pmap(functools.partial(train_step, axis_name=PMAP_AXIS), donate_argnums=0)
    self._eval_step = pmap(functools.partial(eval_step, axis_name=PMAP_AXIS))
    self._mean_over_devices = pmap(lambda tree: jax.lax.pmean(tree, PMAP_AXIS), donate_argnums=0)
    self._mean, self._std = self._replicate((mean, std))

  def _replicate(self, tree: Any) -> Any:
    return jax.tree.map(
        lambda x: jax.device_put(np.stack([np.asarray(x)] * self.num_devices), self._stacked),
        tree)

  def place_state(self, state: TrainState) -> TrainState:
    return self._replicate(state)

  def shard_batch(self, batch: HostBatch) -> dict[str, jax.Array]:
    return jax.device_put(data.shard_for_devices(batch, self.num_devices), self._stacked)

  def train_step(self, state, batch):
    return self._train_step(state, batch, self._mean, self._std)

  def eval_step(self, state, batch):
    return self._eval_step(state, batch, self._mean, self._std)

  def sync_batch_stats(self, state: TrainState) -> TrainState:
    """Replace each device's BatchNorm running statistics with their mean over devices.

    Running averages are linear in the batch statistics, so replacing them with their mean
    does not change the mean that later steps reach. It makes evaluation and checkpoints use
    the same statistics on every device.
    """
    if self.sync_batch_norm:
      return state  # Synchronised BatchNorm keeps the statistics equal on all devices.
    return state.replace(batch_stats=self._mean_over_devices(state.batch_stats))

  def fetch(self, tree: Any) -> Any:
    return jax.tree.map(_first_replica, tree)


class MeshRunner(Runner):
  """Runner that compiles the steps with `jax.jit` for a one-axis mesh of all processes' devices."""

  mode = "mesh"

  def __init__(self, train_step: StepFn, eval_step: StepFn, mean: np.ndarray,
               std: np.ndarray | None, devices: Sequence[jax.Device] | None = None):
    devices = list(devices or jax.devices())
    self.num_devices = len(devices)
    # Auto axes let the compiler place intermediate values. Explicit axes (the default of
    # jax.make_mesh in jax 0.10) would type every intermediate with a sharding, which the
    # per-example augmentation does not need.
    self.mesh = jax.make_mesh((self.num_devices,), (MESH_AXIS,),
                              axis_types=(jax.sharding.AxisType.Auto,), devices=devices)
    self._replicated = NamedSharding(self.mesh, P())
    self._sharded = NamedSharding(self.mesh, P(MESH_AXIS))
    self._train_step = jax.jit(train_step, out_shardings=(self._replicated, self._replicated),
                               donate_argnums=0)
    self._eval_step = jax.jit(eval_step, out_shardings=self._replicated)
    self._mean, self._std = self._replicate((mean, std))

  def _replicate(self, tree: Any) -> Any:
    # Every process passes the same host values, so each can build its own replicas.
    def replicate(x):
      x = np.asarray(x)
      return jax.make_array_from_callback(x.shape, self._replicated, lambda index: x[index])

    return jax.tree.map(replicate, tree)

  def place_state(self, state: TrainState) -> TrainState:
    return self._replicate(state)

  def shard_batch(self, batch: HostBatch) -> dict[str, jax.Array]:
    process_count = jax.process_count()

    def shard(x):
      global_shape = (x.shape[0] * process_count, *x.shape[1:])
      return jax.make_array_from_process_local_data(self._sharded, x, global_shape)

    return {key: shard(np.asarray(value)) for key, value in batch.items()}

  def train_step(self, state, batch):
    return self._train_step(state, batch, self._mean, self._std)

  def eval_step(self, state, batch):
    return self._eval_step(state, batch, self._mean, self._std)

  def fetch(self, tree: Any) -> Any:
    # Outputs are replicated, so this process's first shard is the whole value.
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def create_runner(config: ml_collections.ConfigDict, train_step: StepFn, eval_step: StepFn,
                  mean: np.ndarray, std: np.ndarray | None,
                  devices: Sequence[jax.Device] | None = None) -> Runner:
  """Create the runner that `config.parallel` selects.

  `train_step` and `eval_step` have their hyperparameters bound, except `axis_name`. `mean`
  and `std` are the normalisation statistics passed to every step. `devices` defaults to the
  local devices (jit: the first one) or, for mesh, to all devices of all processes.
  """
  if config.parallel == "jit":
    return JitRunner(train_step, eval_step, mean, std,
                     device=devices[0] if devices else None)
  if config.parallel == "pmap":
    return PmapRunner(train_step, eval_step, mean, std,
                      sync_batch_norm=config.sync_batch_norm, devices=devices)
  if config.parallel == "mesh":
    return MeshRunner(train_step, eval_step, mean, std, devices=devices)
  raise ValueError(f"Invalid parallel mode {config.parallel!r}; expected one of {PARALLEL_MODES}.")
