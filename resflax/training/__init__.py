"""Training core: pure step functions, three ways to run them, checkpoints and the run loop.

`train_and_evaluate(config, dataset, workdir)` trains one run. The pieces it is built from
can be used on their own: `create_train_state`, `create_learning_rate_fn`, `create_optimizer`,
`train_step` and `eval_step`, and a `Runner` (`create_runner`) per `config.parallel` mode.
"""

from resflax.training.checkpoint import CheckpointError
from resflax.training.checkpoint import create_checkpoint_manager
from resflax.training.checkpoint import restore_checkpoint
from resflax.training.checkpoint import save_checkpoint
from resflax.training.feeds import create_feed
from resflax.training.feeds import final_train_eval_size
from resflax.training.history import read_history
from resflax.training.loop import build_model
from resflax.training.loop import evaluate
from resflax.training.loop import train_and_evaluate
from resflax.training.optim import applied_learning_rate
from resflax.training.optim import create_optimizer
from resflax.training.optim import weight_decay_mask
from resflax.training.parallel import JitRunner
from resflax.training.parallel import MeshRunner
from resflax.training.parallel import PmapRunner
from resflax.training.parallel import Runner
from resflax.training.parallel import create_runner
from resflax.training.schedule import create_learning_rate_fn
from resflax.training.state import TrainState
from resflax.training.state import create_train_state
from resflax.training.steps import eval_step
from resflax.training.steps import train_step

__all__ = [
    "CheckpointError",
    "JitRunner",
    "MeshRunner",
    "PmapRunner",
    "Runner",
    "TrainState",
    "applied_learning_rate",
    "build_model",
    "create_checkpoint_manager",
    "create_feed",
    "create_learning_rate_fn",
    "create_optimizer",
    "create_runner",
    "create_train_state",
    "eval_step",
    "evaluate",
    "final_train_eval_size",
    "read_history",
    "restore_checkpoint",
    "save_checkpoint",
    "train_and_evaluate",
    "train_step",
    "weight_decay_mask",
]
