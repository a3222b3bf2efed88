"""Benchmark resflax's CIFAR train step against a PyTorch reference on this machine.

  python benchmarks/run.py                       # depths 20, 56, 110, both families
  python benchmarks/run.py --depths 20,56 --variants default,scan,cached --tag cpu-scan

Each measurement runs in its own process (`benchmarks/measure.py`). Results go to
`benchmarks/results/<tag>.json` after every measurement, so an interrupted run keeps what it
finished, and a Markdown table for the tag replaces its previous table in BENCHMARKS.md.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
  sys.path.insert(0, str(REPO_ROOT))

from benchmarks import measure  # pylint: disable=wrong-import-position
from benchmarks import table  # pylint: disable=wrong-import-position

# Variants of resflax's step: spec overrides. "cached" compiles once into a fresh persistent
# compilation cache in another process, then measures a process that reads it.
VARIANTS = {
    "default": {},
    "unmaterialized": {"materialize_blocks": False},
    "unrolled": {"scan_blocks": False},
    "patches": {"conv_gradient": "patches"},
    "scan": {"scan_blocks": True},
    "scan_xla": {"scan_blocks": True, "conv_gradient": "xla"},
    "remat": {"remat": True},
    "scan_remat": {"scan_blocks": True, "remat": True},
    "scan_remat_blocks": {"scan_blocks": True, "remat": True, "remat_group_size": 1},
    "scan_remat_xla": {"scan_blocks": True, "remat": True, "conv_gradient": "xla"},
    "cached": {"cached": True},
}
MODES = ("jit", "pmap", "mesh")


@dataclasses.dataclass
class Failure:
  spec: dict[str, Any]
  message: str


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--depths", default="20,56,110",
                      help="CIFAR depths 6n+2, comma-separated (default: %(default)s). 1202 is "
                      "meant for GPU/TPU: on CPU its unrolled step takes over 12 min to compile")
  parser.add_argument("--families", default="plain,residual",
                      help="comma-separated, of plain and residual (default: %(default)s)")

  parser.add_argument("--modes", default="auto",
                      help="comma-separated, of jit, pmap and mesh; auto: jit, plus pmap and "
                      "mesh when JAX sees more than one device (default: %(default)s)")
  parser.add_argument("--variants", default="default",
                      help=f"comma-separated, of {', '.join(VARIANTS)} (default: %(default)s)")
  parser.add_argument("--batch_size", type=int, default=128,
                      help="global batch, in examples (default: %(default)s)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="compute dtype of resflax's nets (default: %(default)s)")
  parser.add_argument("--width", type=int, default=16,
                      help="filters of the first stage (default: %(default)s)")
  parser.add_argument("--image_size", type=int, default=32,
                      help="height and width of the images, in pixels (default: %(default)s)")
  parser.add_argument("--torch", choices=("auto", "yes", "no"), default="auto",
                      help="also time the PyTorch reference; auto: when torch imports "
                      "(default: %(default)s)")

  parser.add_argument("--compile_only", action="store_true",
                      help="only compile resflax's jitted step (jit mode) and report compile "
                      "time and XLA's memory analysis; no steps run, no PyTorch")
  parser.add_argument("--render", metavar="TAG", default=None,
                      help="measure nothing: rewrite the table of TAG in --markdown from its "
                      "JSON in --results_dir")
  parser.add_argument("--warmup", type=int, default=2,
                      help="untimed steps after the first (compiling) one (default: %(default)s)")
  parser.add_argument("--windows", type=int, default=5,
                      help="timed windows; the median is reported (default: %(default)s)")
  parser.add_argument("--window_seconds", type=float, default=3.0,
                      help="shortest timed window, in seconds (default: %(default)s)")
  parser.add_argument("--max_timed_seconds", type=float, default=240.0,
                      help="fewer windows (at least 2) when they would take longer, in seconds "
                      "(default: %(default)s)")

  parser.add_argument("--peak_gflops", type=float, default=None,
                      help="the machine's float32 peak in GFLOP/s; default: measured with a "
                      "square float32 matmul through JAX (see --matmul_size)")
  parser.add_argument("--matmul_size", type=int, default=4096,
                      help="side of the square matmul that measures the peak (default: "
                      "%(default)s)")
  parser.add_argument("--timeout", type=float, default=3600.0,
                      help="limit for one measurement, in seconds (default: %(default)s)")

  parser.add_argument("--tag", default=None,
                      help="name of this set of results (default: <backend>-<dtype>-b<batch>, "
                      "plus -compile with --compile_only)")
  parser.add_argument("--results_dir", default=str(REPO_ROOT / "benchmarks" / "results"),
                      help="folder of the JSON results (default: benchmarks/results)")
  parser.add_argument("--markdown", default=str(REPO_ROOT / "BENCHMARKS.md"),
                      help="Markdown file whose table for the tag is replaced; '' writes none "
                      "(default: BENCHMARKS.md)")
  return parser.parse_args(argv)


def _split(text: str) -> list[str]:
  return [item.strip() for item in text.split(",") if item.strip()]


def check_args(args: argparse.Namespace) -> str | None:
  """Return a message for the first invalid argument, None when all are valid."""
  try:
    depths = [int(d) for d in _split(args.depths)]
  except ValueError:
    return f"--depths={args.depths!r}: expected comma-separated whole numbers such as 20,56"
  for depth in depths:
    if depth < 8 or (depth - 2) % 6:
      return f"--depths: {depth} is not a CIFAR depth 6n+2 with n >= 1 (8, 14, 20, ...)"
  for family in _split(args.families):
    if family not in ("plain", "residual"):
      return f"--families: unknown family {family!r}; expected plain and/or residual"
  for variant in _split(args.variants):
    if variant not in VARIANTS:
      return f"--variants: unknown variant {variant!r}; expected some of {', '.join(VARIANTS)}"
  if args.modes != "auto":
    for mode in _split(args.modes):
      if mode not in MODES:
        return f"--modes: unknown mode {mode!r}; expected some of {', '.join(MODES)}"
  for name in ("batch_size", "width", "image_size", "windows", "matmul_size"):
    if getattr(args, name) < 1:
      return f"--{name}={getattr(args, name)}: must be a positive integer"
  if pathlib.Path(args.results_dir).exists() and not pathlib.Path(args.results_dir).is_dir():
    return f"--results_dir={args.results_dir} is a file; give a folder"
  if args.torch == "yes" and not _torch_available():
    return "--torch=yes, but torch does not import; install it with 'pip install torch==2.13.0'"
  return None


def _torch_available() -> bool:
  try:
    import torch  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def run_measurement(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
  """Run `benchmarks/measure.py` on `spec` in a fresh process and return its result.

  Raises RuntimeError with the process's last error line when it fails or times out.
  """
  command = [sys.executable, "-m", "benchmarks.measure", json.dumps(spec)]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
  try:
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                               timeout=timeout, check=False)
  except subprocess.TimeoutExpired as error:
    raise RuntimeError(f"timed out after {timeout:.0f} s") from error
  for line in reversed(completed.stdout.splitlines()):
    if line.startswith(measure.RESULT_PREFIX):
      return json.loads(line[len(measure.RESULT_PREFIX):])
  lines = [line for line in completed.stderr.splitlines() if line.strip()]
  raise RuntimeError(f"exit status {completed.returncode}: "
                     f"{lines[-1] if lines else 'no error output'}")


def build_specs(args: argparse.Namespace, num_devices: int, with_torch: bool,
                backend: str = "cpu") -> list[dict]:
  """Return the measurements to run, shallow nets first. PyTorch runs on CUDA when JAX runs
  on a GPU, and on the CPU otherwise."""
  torch_device = "cuda" if backend == "gpu" else "cpu"
  modes = _split(args.modes) if args.modes != "auto" else (
      list(MODES) if num_devices > 1 and not args.compile_only else ["jit"])
  with_torch = with_torch and not args.compile_only
  common = {"width": args.width, "batch_size": args.batch_size, "image_size": args.image_size,
            "warmup": args.warmup, "windows": args.windows,
            "window_seconds": args.window_seconds, "max_timed_seconds": args.max_timed_seconds}
  specs = []
  for depth in sorted(int(d) for d in _split(args.depths)):
    for family in _split(args.families):
      net = {"family": family, "depth": depth, **common}
      if with_torch:
        specs.append({"kind": "torch", "mode": "eager", "variant": "channels-last",
                      "device": torch_device, **net})
      for mode in modes:
        for variant in _split(args.variants):
          spec = {"kind": "resflax", "mode": mode, "variant": variant, "dtype": args.dtype,
                  "scan_blocks": None, "remat": False, "remat_group_size": None,
                  "materialize_blocks": None,
                  "conv_gradient": None, "cache_dir": None, "flops": True, **net}
          spec.update({k: v for k, v in VARIANTS[variant].items() if k != "cached"})
          if args.compile_only:
            spec["compile_only"] = True
          specs.append(spec)
  return specs


def measure_spec(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
  """Measure one spec; a "cached" variant first fills a fresh compilation cache."""
  if spec.get("variant") != "cached":
    return run_measurement(spec, timeout)
  cache_dir = tempfile.mkdtemp(prefix="resflax-jax-cache-")
  try:
    filling = dict(spec, cache_dir=cache_dir, windows=2, warmup=0, window_seconds=0.0,
                   max_timed_seconds=0.0, flops=False)
    cold = run_measurement(filling, timeout)
    result = run_measurement(dict(spec, cache_dir=cache_dir), timeout)
    result["cold_compile_seconds"] = cold["compile_seconds"]
    return result
  finally:
    shutil.rmtree(cache_dir, ignore_errors=True)


def _describe(spec: dict[str, Any]) -> str:
  name = f"{spec['family']}-{spec['depth']}"
  if spec["kind"] == "torch":
    return f"{name} PyTorch"
  return f"{name} {spec['mode']} {spec['variant']}"


def _write_json(path: pathlib.Path, payload: dict[str, Any]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.with_suffix(".json.tmp")
  temporary.write_text(json.dumps(payload, indent=1) + "\n")
  temporary.replace(path)


def measure_all(specs: list[dict[str, Any]], timeout: float, payload: dict[str, Any],
                path: pathlib.Path) -> list[Failure]:
  """Measure every spec in turn, adding each result (or error) to `payload` and saving it to
  `path` at once; return the failures."""
  failures = []
  for number, spec in enumerate(specs, 1):
    started = time.perf_counter()
    try:
      result = measure_spec(spec, timeout)
    except RuntimeError as error:
      failures.append(Failure(spec, str(error)))
      payload["results"].append({"spec": spec, "error": str(error)})
      print(f"[{number}/{len(specs)}] {_describe(spec)} failed: {error}", flush=True)
    else:
      payload["results"].append({"spec": spec, **result})
      speed = ("compiled only" if spec.get("compile_only") else
               f"{result['examples_per_second']:.1f} examples/s")
      compile_text = ("n/a" if result.get("compile_seconds") is None
                      else f"{result['compile_seconds']:.1f} s")
      print(f"[{number}/{len(specs)}] {_describe(spec)}: {speed}, compile {compile_text}, "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB "
            f"({time.perf_counter() - started:.0f} s)", flush=True)
    _write_json(path, payload)
  return failures


def render_saved(args: argparse.Namespace) -> int:
  """Rewrite the Markdown table of `args.render` from its saved JSON results."""
  path = pathlib.Path(args.results_dir) / f"{args.render}.json"
  try:
    payload = json.loads(path.read_text())
  except (OSError, ValueError) as error:
    print(f"error: cannot read the results of {args.render!r} from {path} ({error}); run the "
          "benchmark with --tag first", file=sys.stderr)
    return 2
  markdown = table.render(payload)
  print(markdown)
  if args.markdown:
    table.update_markdown(pathlib.Path(args.markdown), args.render, markdown)
    print(f"Table {args.render} written to {args.markdown}.")
  return 0


def main(argv: list[str]) -> int:
  args = parse_args(argv)
  problem = check_args(args)
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return 2
  if args.render:
    return render_saved(args)

  with_torch = args.torch == "yes" or (args.torch == "auto" and _torch_available())
  try:
    probe = run_measurement({"kind": "matmul", "size": args.matmul_size, "repeats": 5},
                            args.timeout)
  except RuntimeError as error:
    print(f"error: the peak measurement (a float32 matmul through JAX) failed: {error}. Check "
          "that 'python -c \"import jax; jax.devices()\"' works.", file=sys.stderr)
    return 1
  machine = probe["machine"]
  peak = args.peak_gflops or probe["gflops"]
  tag = args.tag or (f"{machine['backend']}-{args.dtype}-b{args.batch_size}"
                     + ("-compile" if args.compile_only else ""))
  payload = {"tag": tag, "command": shlex.join(["python", "benchmarks/run.py", *argv]),
             "date": time.strftime("%Y-%m-%d"), "machine": machine, "peak_gflops": peak,
             "peak_source": "--peak_gflops" if args.peak_gflops else
             f"{probe['size']}x{probe['size']} float32 matmul through JAX: "
             f"{probe['gflops']:.0f} GFLOP/s",
             "results": []}
  if args.torch == "auto" and not with_torch:
    print("PyTorch reference skipped: torch does not import (pip install torch==2.13.0).")

  path = pathlib.Path(args.results_dir) / f"{tag}.json"
  if with_torch and machine["backend"] == "tpu":
    print("PyTorch reference skipped: it has no TPU path here.")
    with_torch = False
  specs = build_specs(args, machine["device_count"], with_torch, machine["backend"])
  print(f"Benchmark {tag}: {len(specs)} measurements on {machine['cpu']} "
        f"({machine['cores']} cores, {machine['backend']}), results in {path}.", flush=True)
  failures = measure_all(specs, args.timeout, payload, path)
  markdown = table.render(payload)
  print("\n" + markdown)
  if args.markdown:
    table.update_markdown(pathlib.Path(args.markdown), tag, markdown)
    print(f"Table {tag} written to {args.markdown}; results in {path}.")
  if failures:
    print(f"{len(failures)} of {len(specs)} measurements failed; see above.", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
