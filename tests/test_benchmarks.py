"""Tests of the benchmark harness: it runs on a tiny net and writes its JSON and table.

Speed itself is not tested, because machines are noisy. The measured numbers are in
BENCHMARKS.md.
"""

import json
import pathlib
import subprocess
import sys

import pytest

from benchmarks import run
from benchmarks import table
import training_helpers

TINY = ["--depths", "8", "--families", "residual", "--width", "4", "--batch_size", "8",
        "--windows", "2", "--window_seconds", "0", "--warmup", "0", "--matmul_size", "256",
        "--torch", "no"]


def run_harness(tmp_path: pathlib.Path, *args: str,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
  command = [sys.executable, str(training_helpers.REPO_ROOT / "benchmarks" / "run.py"),
             "--results_dir", str(tmp_path / "results"), "--markdown", str(tmp_path / "B.md"),
             *args]
  return subprocess.run(command, capture_output=True, text=True, check=False, env=env,
                        timeout=training_helpers.SUBPROCESS_TIMEOUT, cwd=tmp_path)


@pytest.mark.slow
def test_harness_writes_json_and_table(tmp_path):
  (tmp_path / "B.md").write_text("# Benchmarks\n\nNotes kept above the tables.\n")
  completed = run_harness(tmp_path, *TINY, "--variants", "default,cached", "--tag", "tiny")
  assert completed.returncode == 0, completed.stderr[-2000:]
  payload = json.loads((tmp_path / "results" / "tiny.json").read_text())
  assert payload["machine"]["cores"] >= 1
  assert payload["peak_gflops"] > 0
  results = payload["results"]
  assert [(r["spec"]["variant"], r["spec"]["depth"]) for r in results] == [("default", 8),
                                                                          ("cached", 8)]
  for result in results:
    assert "error" not in result, result
    assert result["examples_per_second"] > 0
    assert len(result["window_examples_per_second"]) == 2
    assert result["params"] == 5006
    assert result["peak_rss_mib"] > result["rss_before_mib"] > 0
  assert results[0]["flops_per_example"] > 0
  assert results[1]["cold_compile_seconds"] > 0
  markdown = (tmp_path / "B.md").read_text()
  assert markdown.startswith("# Benchmarks\n\nNotes kept above the tables.")
  assert markdown.count("| residual-8 | resflax | jit |") == 2
  assert "<!-- benchmark tiny start -->" in markdown


@pytest.mark.slow
def test_harness_times_every_mode_on_fake_devices(tmp_path):
  env = training_helpers.subprocess_env(num_devices=2)
  completed = run_harness(tmp_path, *TINY, "--tag", "fake", env=env)
  assert completed.returncode == 0, completed.stderr[-2000:]
  payload = json.loads((tmp_path / "results" / "fake.json").read_text())
  assert payload["machine"]["device_count"] == 2
  results = payload["results"]
  assert [r["spec"]["mode"] for r in results] == ["jit", "pmap", "mesh"]
  assert [r.get("num_devices") for r in results] == [1, 2, 2]
  for result in results:
    assert result["examples_per_second"] > 0, result


@pytest.mark.parametrize("args, message", [
    (["--depths", "21"], "6n+2"),
    (["--depths", "twenty"], "whole numbers"),
    (["--families", "dense"], "unknown family"),
    (["--variants", "fast"], "unknown variant"),
    (["--modes", "vmap"], "unknown mode"),
    (["--batch_size", "0"], "positive"),
    (["--results_dir", __file__], "is a file"),
])
def test_bad_arguments_exit_before_measuring(tmp_path, args, message):
  completed = run_harness(tmp_path, *args)
  assert completed.returncode == 2
  assert message in completed.stderr
  assert "Traceback" not in completed.stderr
  assert not (tmp_path / "results").exists()


def _payload(rate: float) -> dict:
  machine = {"cpu": "Test CPU", "cores": 2, "platform": "linux", "jax": "0", "jaxlib": "0",
             "backend": "cpu", "device_kind": "cpu", "device_count": 1, "xla_flags": ""}
  spec = {"kind": "resflax", "family": "plain", "depth": 20, "mode": "jit",
          "variant": "default", "batch_size": 128, "width": 16, "image_size": 32,
          "dtype": "float32"}
  torch_spec = dict(spec, kind="torch", mode="eager", variant="channels-last")
  return {"tag": "t", "command": "python benchmarks/run.py", "date": "2026-12-05",
          "machine": machine, "peak_gflops": 100.0, "peak_source": "given",
          "results": [
              {"spec": torch_spec, "examples_per_second": 200.0, "threads": 2,
               "window_examples_per_second": [190.0, 200.0, 210.0], "step_seconds": 0.64,
               "peak_rss_mib": 900.0},
              {"spec": spec, "examples_per_second": rate,
               "window_examples_per_second": [rate, rate], "step_seconds": 128 / rate,
               "compile_seconds": 2.0, "flops_per_example": 2e8, "peak_rss_mib": 1000.0},
              {"spec": dict(spec, depth=56), "error": "timed out after 10 s"},
          ]}


def test_table_ratio_fraction_and_failure():
  markdown = table.render(_payload(300.0))
  rows = [line for line in markdown.splitlines() if line.startswith("| plain-")]
  assert rows[0].endswith("| 1.00 |")
  assert "| channels-last, 2 threads |" in rows[0]
  # 300 examples/s at 0.2 GFLOP each is 60 GFLOP/s, 60% of the given 100.
  assert "| 60.0 | 60% |" in rows[1]
  assert rows[1].endswith("| 1.50 |")
  assert "failed: timed out after 10 s" in rows[2]


def test_torch_row_uses_net_flops():
  markdown = table.render(_payload(300.0))
  torch_row = [line for line in markdown.splitlines() if "| PyTorch |" in line][0]
  # 200 examples/s at the 0.2 GFLOP XLA counted for the same net: 40 GFLOP/s, 40% of 100.
  assert "| 40.0 | 40% |" in torch_row


def test_render_rewrites_saved_table(tmp_path):
  (tmp_path / "results").mkdir()
  (tmp_path / "results" / "t.json").write_text(json.dumps(_payload(300.0)))
  completed = run_harness(tmp_path, "--render", "t")
  assert completed.returncode == 0, completed.stderr
  assert "| 1.50 |" in (tmp_path / "B.md").read_text()
  missing = run_harness(tmp_path, "--render", "absent")
  assert missing.returncode == 2
  assert "run the benchmark with --tag first" in missing.stderr


def test_update_markdown_replaces_only_its_tag(tmp_path):
  path = tmp_path / "B.md"
  path.write_text("# Benchmarks\n\nHand-written analysis.\n")
  table.update_markdown(path, "a", table.render(_payload(300.0)))
  table.update_markdown(path, "b", "### b\nother\n")
  table.update_markdown(path, "a", table.render(_payload(100.0)))
  text = path.read_text()
  assert text.startswith("# Benchmarks\n\nHand-written analysis.\n")
  assert text.count("<!-- benchmark a start -->") == 1
  assert "| 0.50 |" in text
  assert "| 1.50 |" not in text
  assert text.index("benchmark a start") < text.index("benchmark b start")


def test_build_specs_adds_torch_and_modes():
  args = run.parse_args(["--depths", "56,20", "--variants", "default,scan"])
  specs = run.build_specs(args, num_devices=4, with_torch=True)
  assert [s["depth"] for s in specs][:1] == [20]
  first_net = [s for s in specs if s["depth"] == 20 and s["family"] == "plain"]
  assert [(s["kind"], s["mode"], s["variant"]) for s in first_net] == [
      ("torch", "eager", "channels-last"), ("resflax", "jit", "default"),
      ("resflax", "jit", "scan"), ("resflax", "pmap", "default"), ("resflax", "pmap", "scan"),
      ("resflax", "mesh", "default"), ("resflax", "mesh", "scan")]
  assert first_net[2]["scan_blocks"] is True
  assert [s["mode"] for s in run.build_specs(args, 1, False)] == ["jit"] * 8


def test_build_specs_sets_conv_gradient():
  args = run.parse_args(["--depths", "20", "--families", "residual",
                         "--variants", "default,patches,scan,scan_xla,scan_remat_xla"])
  specs = {s["variant"]: s for s in run.build_specs(args, num_devices=1, with_torch=False)}
  assert specs["default"]["conv_gradient"] is None
  assert specs["patches"]["conv_gradient"] == "patches"
  assert specs["scan"]["conv_gradient"] is None
  assert specs["scan"]["scan_blocks"] is True
  assert specs["scan_xla"]["conv_gradient"] == "xla"
  assert specs["scan_remat_xla"]["remat"] is True


def test_build_specs_sets_remat_group_size():
  args = run.parse_args(["--depths", "1202", "--families", "residual",
                         "--variants", "scan_remat,scan_remat_blocks"])
  specs = {s["variant"]: s for s in run.build_specs(args, num_devices=1, with_torch=False)}
  assert specs["scan_remat"]["remat_group_size"] is None
  assert specs["scan_remat_blocks"]["remat_group_size"] == 1
  assert specs["scan_remat_blocks"]["remat"] is True


def run_convolutions(tmp_path: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
  command = [sys.executable,
             str(training_helpers.REPO_ROOT / "benchmarks" / "convolutions.py"), *args]
  return subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path,
                        timeout=training_helpers.SUBPROCESS_TIMEOUT)


def test_convolutions_writes_table_and_json(tmp_path):
  completed = run_convolutions(tmp_path, "--batch_size", "2", "--width", "4", "--image_size",
                               "8", "--repeats", "2", "--warmup", "1", "--torch", "no",
                               "--json", str(tmp_path / "c.json"))
  assert completed.returncode == 0, completed.stderr[-2000:]
  rows = [line for line in completed.stdout.splitlines() if line.startswith("| 2x")]
  assert len(rows) == 9
  assert "| 2x8x8x4 | kernel_gradient |" in completed.stdout
  assert "| 2x2x2x16 | forward |" in completed.stdout
  record = json.loads((tmp_path / "c.json").read_text())
  assert record["torch_seconds"] is None
  assert [shape["channels"] for shape in record["shapes"]] == [4, 8, 16]
  for stage in record["jax_seconds"]:
    assert set(stage) == {"forward", "input_gradient", "kernel_gradient"}
    assert all(seconds > 0 for seconds in stage.values())


def test_convolutions_torch_matches_jax_rows(tmp_path):
  pytest.importorskip("torch")
  completed = run_convolutions(tmp_path, "--batch_size", "2", "--width", "4", "--image_size",
                               "8", "--repeats", "2", "--warmup", "1", "--torch", "yes")
  assert completed.returncode == 0, completed.stderr[-2000:]
  assert "PyTorch GFLOP/s" in completed.stdout
  assert completed.stdout.count("x |") == 9


@pytest.mark.parametrize("args, message", [
    (["--image_size", "2"], "third stage"),
    (["--batch_size", "0"], "batch_size"),
    (["--warmup", "0"], "warmup"),
])
def test_convolutions_bad_arguments(tmp_path, args, message):
  completed = run_convolutions(tmp_path, "--torch", "no", *args)
  assert completed.returncode == 2
  assert message in completed.stderr
  assert "Traceback" not in completed.stderr
