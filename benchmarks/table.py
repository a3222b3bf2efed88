"""The Markdown table of one set of benchmark results, and its place in BENCHMARKS.md."""

import pathlib
import re
from typing import Any


def _start_marker(tag: str) -> str:
  return f"<!-- benchmark {tag} start -->"


def _end_marker(tag: str) -> str:
  return f"<!-- benchmark {tag} end -->"


def _number(value: float | None, digits: int = 1) -> str:
  return "n/a" if value is None else f"{value:,.{digits}f}"


def _torch_rates(results: list[dict[str, Any]]) -> dict[tuple[str, int], float]:
  return {(r["spec"]["family"], r["spec"]["depth"]): r["examples_per_second"]
          for r in results if r["spec"]["kind"] == "torch" and "error" not in r}


def _net_flops(results: list[dict[str, Any]]) -> dict[tuple[str, int], float]:
  return {(r["spec"]["family"], r["spec"]["depth"]): r["flops_per_example"]
          for r in results if r.get("flops_per_example")}


def _row(result: dict[str, Any], peak_gflops: float,
         torch_rates: dict[tuple[str, int], float],
         net_flops: dict[tuple[str, int], float]) -> str:
  spec = result["spec"]
  net = f"{spec['family']}-{spec['depth']}"
  framework = "PyTorch" if spec["kind"] == "torch" else "resflax"
  if "error" in result:
    return f"| {net} | {framework} | {spec['mode']} | {spec['variant']} | failed: " \
           f"{result['error']} |  |  |  |  |  |  |"
  if spec.get("compile_only"):
    temp = result.get("temp_bytes")
    return (f"| {net} | {framework} | {spec['mode']} | {spec['variant']} | "
            f"{result['compile_seconds']:,.1f} | compiled only | | | | "
            f"{_number(result.get('peak_rss_mib'), 0)}"
            + (f" (XLA temp {temp / 2**20:,.0f})" if temp else "") + " | |")
  variant = spec["variant"]
  if result.get("threads"):
    # PyTorch's speed depends on its thread count, which other jobs on the machine contend for.
    variant += f", {result['threads']} threads"
  rates = result["window_examples_per_second"]
  rate = result["examples_per_second"]
  spread = f"{rate:,.1f} ({min(rates):,.1f}-{max(rates):,.1f})"
  compile_text = _number(result.get("compile_seconds"))
  if result.get("cold_compile_seconds") is not None:
    compile_text += f" (cold {result['cold_compile_seconds']:.1f})"
  # The PyTorch net is the same net, so it does the work XLA counted for resflax's step.
  flops = result.get("flops_per_example") or net_flops.get((spec["family"], spec["depth"]))
  gflops = flops * rate / 1e9 if flops else None
  fraction = f"{100 * gflops / peak_gflops:.0f}%" if gflops else "n/a"
  memory = _number(result.get("peak_rss_mib"), 0)
  if result.get("device_peak_bytes"):
    memory += f" (device {result['device_peak_bytes'] / 2**20:,.0f})"
  ratio = "1.00" if framework == "PyTorch" else "n/a"
  reference = torch_rates.get((spec["family"], spec["depth"]))
  if framework == "resflax" and reference:
    ratio = f"{rate / reference:.2f}"
  return (f"| {net} | {framework} | {spec['mode']} | {variant} | {compile_text} | "
          f"{spread} | {1000 * result['step_seconds']:,.0f} | {_number(gflops)} | {fraction} | "
          f"{memory} | {ratio} |")


def render(payload: dict[str, Any]) -> str:
  """Return the Markdown section of one benchmark run: machine, command and results table."""
  machine = payload["machine"]
  results = payload["results"]
  spec = results[0]["spec"] if results else {}
  lines = [
      f"### {payload['tag']}",
      "",
      f"Measured {payload['date']} with `{payload['command'].strip()}`.",
      f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['platform']}; JAX "
      f"{machine['jax']} (jaxlib {machine['jaxlib']}), backend {machine['backend']}, "
      f"{machine['device_count']} x {machine['device_kind']}"
      + (f", XLA_FLAGS `{machine['xla_flags']}`" if machine["xla_flags"] else "") + ".",
      f"Batch {spec.get('batch_size', 'n/a')}, width {spec.get('width', 'n/a')}, "
      f"{spec.get('image_size', 'n/a')}x{spec.get('image_size', 'n/a')} images, resflax dtype "
      f"{spec.get('dtype', 'float32') if spec.get('kind') == 'resflax' else 'float32'}. "
      f"Peak {payload['peak_gflops']:.0f} GFLOP/s ({payload['peak_source']}).",
      "",
      "| net | framework | mode | variant | compile s | examples/s, median (min-max) | "
      "ms/step | GFLOP/s | of peak | peak RSS MiB | vs PyTorch |",
      "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
  ]
  torch_rates = _torch_rates(results)
  net_flops = _net_flops(results)
  lines += [_row(result, payload["peak_gflops"], torch_rates, net_flops) for result in results]
  return "\n".join(lines) + "\n"


def update_markdown(path: pathlib.Path, tag: str, markdown: str) -> None:
  """Put `markdown` between the markers of `tag` in `path`, replacing what was there, or
  append it (with markers) when the file has none for the tag."""
  block = f"{_start_marker(tag)}\n{markdown}{_end_marker(tag)}\n"
  text = path.read_text() if path.exists() else "# Benchmarks\n"
  pattern = re.compile(re.escape(_start_marker(tag)) + r".*?" + re.escape(_end_marker(tag))
                       + r"\n?", re.DOTALL)
  if pattern.search(text):
    text = pattern.sub(lambda _: block, text, count=1)
  else:
    text = text.rstrip("\n") + "\n\n" + block
  path.write_text(text)
