"""The command line behind train.py: config help, checks, the sweep and its report."""

from __future__ import annotations

import io
import logging
import pathlib
import re
import signal
import sys
import tokenize
from collections.abc import Sequence

import ml_collections

from resflax import jsonl
from resflax import validation

CONFIG_DIR = pathlib.Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "quick.py"
RECIPE_CONFIG = CONFIG_DIR / "default.py"

# Exit status for input that can be fixed by the user: a bad config value, missing data, a
# checkpoint that cannot be restored.
EXIT_BAD_INPUT = 2
# Exit status after Ctrl-C or SIGTERM, as a shell reports a process ended by SIGINT.
EXIT_INTERRUPTED = 130

_ASSIGNMENT = re.compile(r"^\s*config\.(\w+)\s*=")

# Libraries whose INFO lines (orbax logs every save step by step) would bury resflax's own.
_QUIET_LIBRARIES = ("/orbax/", "/matplotlib/", "/jax/_src/xla_bridge.py")


class _LibraryInfoFilter(logging.Filter):
  """Drop INFO and DEBUG records that come from the noisy libraries above."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.WARNING:
      return True
    return not any(part in record.pathname for part in _QUIET_LIBRARIES)


def quiet_library_logs() -> None:
  """Keep resflax's INFO lines and library warnings, but not library INFO chatter."""
  for handler in logging.getLogger().handlers:
    handler.addFilter(_LibraryInfoFilter())


def _exit_on_bad_command_line(parse):
  """Run `parse`, exiting with one clear line on an unknown key, a missing file or a bad value."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  try:
    return parse()
  except AttributeError as error:
    # ml_collections raises AttributeError for a --config.KEY that does not exist; its text
    # quotes the key and may add a "Did you mean" suggestion.
    names = re.findall(r"[A-Za-z_]\w*", str(error))
    message = f"unknown config key {names[0]!r}" if names else "unknown config key"
    suggestion = re.search(r'Did you mean "(\w+)"', str(error))
    if suggestion:
      message += f" (did you mean {suggestion.group(1)!r}?)"
    message += ": `python train.py --help` lists the keys"
  except BrokenPipeError:
    sys.exit(0)  # the reader of --help output, e.g. `head`, closed the pipe
  except OSError as error:
    # ml_collections reports a config file it cannot load over several lines; the last one
    # names the file and the reason.
    message = f"cannot load the config file: {str(error).strip().splitlines()[-1].strip()}"
  except (flags.Error, ValueError, TypeError, KeyError) as error:
    message = str(error).strip().splitlines()[0]
  print(f"train.py: error: {message}", file=sys.stderr)
  sys.exit(EXIT_BAD_INPUT)


def define_config_flag():
  """Define --config; ml_collections reads the file and applies overrides from sys.argv here."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  sys.argv = expand_config_argument(sys.argv)
  return _exit_on_bad_command_line(lambda: config_flags.DEFINE_config_file(
      "config", str(DEFAULT_CONFIG), config_help(), lock_config=True))


def read_config(holder) -> ml_collections.ConfigDict:
  """Return the parsed --config; ml_collections loads the file on first access."""

  def load() -> ml_collections.ConfigDict:
    config = holder.value
    config.get("name")  # ml_collections raises on first use for a file it failed to load
    return config

  return _exit_on_bad_command_line(load)


def parse_flags(argv: Sequence[str]) -> list[str]:
  """Parse the command line for absl's app.run, exiting with one clear line on bad input."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  return _exit_on_bad_command_line(lambda: flags.FLAGS(list(argv)))


def config_names() -> list[str]:
  return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))


def expand_config_argument(argv: Sequence[str]) -> list[str]:
  """Let `--config NAME` stand for a shipped config file, e.g. `--config standard`.

  Exits with one line when a `--config.KEY` override is given twice, because ml_collections
  would concatenate repeated tuple overrides instead of keeping the last.
  """
  keys = [arg.split("=", 1)[0] for arg in argv if arg.startswith("--config.")]
  repeated = sorted({key for key in keys if keys.count(key) > 1})
  if repeated:
    print(f"train.py: error: {', '.join(repeated)} given more than once; give each key once",
          file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
  expanded = list(argv)
  for i, arg in enumerate(expanded):
    if arg == "--config" and i + 1 < len(expanded):
      expanded[i + 1] = _config_path(expanded[i + 1])
    elif arg.startswith("--config="):
      expanded[i] = "--config=" + _config_path(arg.split("=", 1)[1])
  return expanded


def _config_path(value: str) -> str:
  name, _, argument = value.partition(":")
  if name in config_names():
    name = str(CONFIG_DIR / f"{name}.py")
  return name + (":" + argument if argument else "")


def describe_config_keys(path: pathlib.Path = RECIPE_CONFIG) -> str:
  """Build the help text of every config key from the comments beside it in default.py."""
  lines = []
  pending_comment = []
  source = path.read_text()
  comments = {}
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT:
      comments[token.start[0]] = token.string.lstrip("# ").strip()
  for number, text in enumerate(source.splitlines(), start=1):
    match = _ASSIGNMENT.match(text)
    if not match:
      pending_comment = pending_comment + [comments[number]] if text.strip().startswith("#") else []
      continue
    key = match.group(1)
    value = text.split("=", 1)[1].split("#", 1)[0].strip()
    if value.startswith("config_dict.placeholder"):
      value = "None"
    description = comments.get(number) or " ".join(pending_comment)
    lines.append(f"  {key} = {value}" + (f": {description}" if description else ""))
    pending_comment = []
  return "\n".join(lines)


def config_help() -> str:
  return (
      "Config file, or the name of a shipped config ("
      + ", ".join(config_names())
      + "). Override any key with --config.KEY=VALUE. Keys, with their 2015-recipe defaults:\n"
      + describe_config_keys()
  )


def load_recipe() -> ml_collections.ConfigDict:
  from resflax.configs import default  # pylint: disable=g-import-not-at-top

  return default.get_config()


def sharing_devices(parallel: str) -> int:
  """Return how many devices, over all processes, share one global batch in this mode."""
  import jax  # pylint: disable=g-import-not-at-top

  return 1 if parallel == "jit" else jax.device_count()


def use_compilation_cache(directory: str) -> None:
  """Point JAX's persistent compilation cache at `directory` ("" leaves it off).

  Steps that took at least a second to compile are stored, so the same net with the same
  shapes (another seed, a resumed or repeated sweep) loads its compiled step instead.
  """
  import jax  # pylint: disable=g-import-not-at-top

  if not directory:
    return
  path = pathlib.Path(directory).expanduser()
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as error:
    logging.warning("compilation cache %s unusable (%s); compiling without it. Set "
                    "--config.compilation_cache_dir='' to silence this.", path, error)
    return
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def run(config: ml_collections.ConfigDict, workdir: str | None) -> int:
  """Validate the config, train the sweep, write and print the report; return the exit status."""
  import jax  # pylint: disable=g-import-not-at-top

  from resflax import data  # pylint: disable=g-import-not-at-top
  from resflax import sweep  # pylint: disable=g-import-not-at-top
  from resflax.training import checkpoint  # pylint: disable=g-import-not-at-top

  try:
    validation.validate_config(config, sharing_devices(config.parallel))
  except validation.ConfigError as error:
    logging.error("%s", error)
    return EXIT_BAD_INPUT

  for boundary in config.lr_boundaries:
    if boundary >= config.num_steps:
      logging.warning("lr_boundaries entry %d is not below num_steps=%d, so that decay never "
                      "happens", boundary, config.num_steps)

  path = pathlib.Path(workdir or pathlib.Path("runs") / config.name)
  if path.exists() and not path.is_dir():
    logging.error("--workdir %s is a file, not a directory; choose another --workdir", path)
    return EXIT_BAD_INPUT
  is_writer = jax.process_index() == 0
  if is_writer:
    path.mkdir(parents=True, exist_ok=True)
  use_compilation_cache(config.compilation_cache_dir)
  logging.info("sweep %s in %s on %d %s device(s), %s mode", config.name, path.resolve(),
               jax.device_count(), jax.default_backend(), config.parallel)

  try:
    results = sweep.train_runs(config, path, is_writer)
  except (validation.ConfigError, data.DataUnavailableError, checkpoint.CheckpointError,
          jsonl.JsonlError) as error:
    logging.error("%s", error)
    return EXIT_BAD_INPUT
  except KeyboardInterrupt:
    logging.error("interrupted: finished runs are kept in %s; run the same command again to "
                  "resume the unfinished ones from their newest checkpoints",
                  path / sweep.RESULTS_FILE)
    return EXIT_INTERRUPTED
  if not is_writer:
    return 0

  table, verdict = sweep.write_report(config, load_recipe(), path, results)
  print(f"\nResults ({path / sweep.RESULTS_FILE}), errors in %:\n\n{table}\n")
  print(f"Figures: {path / sweep.CURVES_FIGURE}, {path / sweep.DEPTH_FIGURE}\n")
  print("Verdict:")
  for line in verdict:
    print(f"  {line}")
  sys.stdout.flush()
  return 0


def interrupt_on_sigterm() -> None:
  """Turn SIGTERM (as sent by batch schedulers and `timeout`) into KeyboardInterrupt."""

  def handle(signum, frame):
    del signum, frame
    raise KeyboardInterrupt

  signal.signal(signal.SIGTERM, handle)


def initialize_distributed(
    coordinator_address: str | None, num_processes: int | None, process_id: int | None
) -> None:
  """Join a multi-process run; with no address, jax detects the cluster (TPU pods, SLURM)."""
  import jax  # pylint: disable=g-import-not-at-top

  # CPU processes need a collectives backend to exchange gradients; accelerators ignore it. It
  # must be set before the first backend call, like jax.distributed.initialize itself.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  logging.info("process %d of %d joined, %d devices in all", jax.process_index(),
               jax.process_count(), jax.device_count())
