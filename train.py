"""Train a depth sweep of plain and residual networks and report where the plain ones degrade.

  python train.py                                  # quick offline sweep on Fashion-MNIST
  python train.py --config standard                # longer offline sweep with a rate decay
  python train.py --config cifar10 --workdir runs/c10 --config.parallel=pmap
  python train.py --config.depths='(20,56)' --config.num_steps=400
"""

from absl import app
from absl import flags

from resflax import cli

_CONFIG = cli.define_config_flag()
flags.declare_key_flag("config")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for results, checkpoints and figures (default: runs/<config name>)."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0 for multi-process training with jax.distributed; with "
    "--num_processes and --process_id. Leave unset on one host.",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, from 0.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() with auto-detected settings (TPU pods, SLURM).",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  cli.quiet_library_logs()
  cli.interrupt_on_sigterm()
  if _COORDINATOR.value or _DISTRIBUTED.value:
    cli.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  return cli.run(cli.read_config(_CONFIG), _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
