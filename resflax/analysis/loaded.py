"""Models and variables of a sweep's runs, each read or computed once."""

from typing import Any

import flax.linen as nn

from resflax.analysis import networks
from resflax.analysis import runs as sweep_runs
from resflax.analysis.inputs import Inputs
from resflax.analysis.runs import AnalysisError
from resflax.analysis.runs import SweepRun


class LoadedRuns:
  """The unrolled model of each run, its checkpoints and its freshly initialised variables."""

  def __init__(self, inputs: Inputs):
    self._inputs = inputs
    self._models: dict[str, nn.Module] = {}
    self._initial: dict[str, dict[str, Any]] = {}
    self._newest: dict[str, tuple[int, dict[str, Any]]] = {}

  def model(self, run: SweepRun) -> nn.Module:
    """Return the run's net with unrolled blocks."""
    if run.name not in self._models:
      self._models[run.name] = networks.unrolled_model(run.config,
                                                       self._inputs.dataset.num_classes)
    return self._models[run.name]

  def checkpoint(self, run: SweepRun, step: int | None = None) -> tuple[int, dict[str, Any]]:
    """Return (step, variables) of the run's checkpoint of `step`, by default the newest.

    Raises AnalysisError when it is missing or does not fit the run's model.
    """
    if step is None and run.name in self._newest:
      return self._newest[run.name]
    step, variables = sweep_runs.load_variables(run, step)
    expected = networks.abstract_variables(self.model(run), self._inputs.dataset.image_shape)
    mismatch = networks.describe_mismatch(variables, expected)
    if mismatch:
      raise AnalysisError(f"checkpoint of step {step} of run {run.name} does not fit the net "
                          f"its config describes ({mismatch}).")
    if step == sweep_runs.checkpoint_steps(run)[-1]:
      self._newest[run.name] = (step, variables)
    return step, variables

  def initial(self, run: SweepRun) -> dict[str, Any]:
    """Return the run's variables at step 0, with BatchNorm statistics of the fixed training
    batch (see `networks.calibrate_batch_stats`)."""
    if run.name not in self._initial:
      model = self.model(run)
      variables = networks.fresh_variables(model, run.seed, self._inputs.dataset.image_shape)
      self._initial[run.name] = networks.calibrate_batch_stats(model, variables,
                                                               self._inputs.train_images)
    return self._initial[run.name]
