"""Why deep plain nets degrade: analyses of a sweep's checkpoints and of fresh nets.

- Layer responses (Figure 7 of He et al. 2015): `responses.response_stds`.
- Gradient flow: `gradients.layer_gradient_norms` and `gradients.gradient_correlation`.
- The identity construction: `deepening.deepen` builds a deeper net that computes what a trained
  shallower one computes, and `identity` checks and measures it.

`analyse_workdir` runs them on a sweep workdir, as `python -m resflax.analyze` does.
"""

from resflax.analysis.deepening import check_deepenable
from resflax.analysis.deepening import deepen
from resflax.analysis.deepening import deepened_config
from resflax.analysis.gradients import gradient_correlation
from resflax.analysis.gradients import layer_gradient_norms
from resflax.analysis.gradients import neighbour_correlation
from resflax.analysis.identity import error_rate
from resflax.analysis.identity import max_logit_difference
from resflax.analysis.identity import train_deepened
from resflax.analysis.pipeline import ANALYSES
from resflax.analysis.pipeline import Settings
from resflax.analysis.responses import response_stds
from resflax.analysis.runs import AnalysisError
from resflax.analysis.runs import SweepRun
from resflax.analysis.runs import load_variables
from resflax.analysis.runs import read_sweep
from resflax.analysis.summary import summary_lines
from resflax.analysis.workdir import AnalysisReport
from resflax.analysis.workdir import analyse_workdir

__all__ = [
    "ANALYSES",
    "AnalysisError",
    "AnalysisReport",
    "Settings",
    "SweepRun",
    "analyse_workdir",
    "check_deepenable",
    "deepen",
    "deepened_config",
    "error_rate",
    "gradient_correlation",
    "layer_gradient_norms",
    "load_variables",
    "max_logit_difference",
    "neighbour_correlation",
    "read_sweep",
    "response_stds",
    "summary_lines",
    "train_deepened",
]
