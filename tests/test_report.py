"""Tests of the sweep report: the verdict, the summary table and the recipe deviations."""

import pathlib

from resflax import report
from resflax import sweep
from resflax.configs import default
from resflax.configs import quick

Stat = report.Stat


def result(family, depth, train_error, seed=0, diverged=False, size=5000):
  return {"family": family, "depth": depth, "seed": seed, "train_error": train_error,
          "test_error": None if train_error is None else train_error + 0.01, "val_error": None, "diverged": diverged,
          "diverged_step": 7 if diverged else None, "config": {"train_eval_size": size}}


def test_plain_degradation_named():
  line = report.family_verdict("plain", {20: Stat(0.148, 0, 1), 56: Stat(0.32, 0, 1)},
                               subset_size=5000)
  assert line == "plain: degrades beyond depth 20, train error 14.8% -> 32.0% at 56 (+17.2 points)"


def test_residual_improvement_named():
  line = report.family_verdict("residual", {20: Stat(0.121, 0, 1), 56: Stat(0.099, 0, 1)},
                               subset_size=5000)
  assert line.startswith("residual: no degradation, train error 12.1% at 20 -> 9.9% at 56")
  assert "trains 2.2 points better" in line


def test_degradation_beyond_best_depth():
  errors = {8: Stat(0.30, 0, 1), 20: Stat(0.20, 0, 1), 56: Stat(0.35, 0, 1)}
  line = report.family_verdict("plain", errors, subset_size=5000)
  assert line.startswith("plain: degrades beyond depth 20")


def test_noise_hides_small_change():
  errors = {8: Stat(0.70, 0, 1), 14: Stat(0.76, 0, 1)}
  line = report.family_verdict("plain", errors, subset_size=200)
  assert line.startswith("plain: no clear change with depth")
  assert "sampling noise" in line


def test_same_change_counts_with_large_subset():
  errors = {8: Stat(0.70, 0, 1), 14: Stat(0.76, 0, 1)}
  line = report.family_verdict("plain", errors, subset_size=50_000)
  assert line.startswith("plain: degrades beyond depth 8")


def test_sampling_noise_binomial():
  assert report.sampling_noise(0.5, 0.5, 100) == 2 * (0.5 / 100) ** 0.5
  assert report.sampling_noise(0.5, 0.5, None) == 0.0


def test_verdict_noise_uses_examples_of_final_error():
  # Errors measured on 60,000 examples: a 0.7-point gain is above the noise of that many,
  # though below the noise of the 5,000-example subset the config names for the curves.
  results = [result("residual", 20, 0.061), result("residual", 56, 0.054)]
  assert "no clear change" in report.verdict(results)[0]
  for line in results:
    line["train_examples"] = 60_000
  assert report.verdict(results)[0].startswith("residual: no degradation")


def test_single_depth_has_nothing_to_compare():
  line = report.family_verdict("plain", {20: Stat(0.2, 0, 1)})
  assert "fewer than two depths" in line


def test_verdict_spread_over_seeds():
  results = [result("plain", 20, 0.10, seed=0), result("plain", 20, 0.12, seed=1),
             result("plain", 56, 0.30, seed=0), result("plain", 56, 0.34, seed=1)]
  lines = report.verdict(results)
  assert "± 1.4, 2 seeds" in lines[0]
  assert "32.0%" in lines[0]


def test_verdict_compares_families_at_depth():
  results = [result("plain", 20, 0.2), result("plain", 56, 0.38),
             result("residual", 20, 0.15), result("residual", 56, 0.20)]
  lines = report.verdict(results)
  assert "at depth 56: residual trains 18.0 points better than plain (20.0% vs 38.0%)" in lines


def test_verdict_reports_divergence_apart():
  results = [result("plain", 20, 0.2), result("plain", 56, None, diverged=True),
             result("residual", 20, 0.15)]
  lines = report.verdict(results)
  assert "plain-56 (seed 0) diverged at step 7 and is left out of the numbers above" in lines
  assert lines[0] == "plain: fewer than two depths finished, nothing to compare"


def test_verdict_lists_deviations():
  lines = report.verdict([result("plain", 20, 0.2)], deviations=["width 8 (paper 16)"])
  assert lines[-1] == "differences from the 2015 CIFAR-10 recipe: width 8 (paper 16)"


def test_summary_table_and_csv(tmp_path: pathlib.Path):
  results = [result("plain", 20, 0.2), result("residual", 20, 0.15), result("plain", 56, 0.38)]
  rows = report.summary_rows(results)
  table = report.markdown_table(rows)
  assert "| 20 | 20.00 | 21.00 | 15.00 | 16.00 |" in table
  assert "| 56 | 38.00 | 39.00 | - | - |" in table
  report.write_summary_csv(rows, tmp_path / "summary.csv")
  lines = (tmp_path / "summary.csv").read_text().splitlines()
  assert lines[0] == ("depth,plain_train_error,plain_test_error,residual_train_error,"
                      "residual_test_error")
  assert lines[1] == "20,20.00,21.00,15.00,16.00"


def test_quick_deviations_from_recipe():
  deviations = sweep.recipe_deviations(quick.get_config(), default.get_config())
  assert "dataset fashion_mnist (paper cifar10)" in deviations
  assert "validation_size 0 (paper 5000)" in deviations
  assert "width 8 (paper 16)" in deviations
  assert not [d for d in deviations if d.startswith("momentum")]


def test_recipe_has_no_deviations():
  assert sweep.recipe_deviations(default.get_config(), default.get_config()) == []


def test_run_configs_order():
  config = quick.get_config()
  config.seeds = (0, 1)
  names = [sweep.run_name(r.family, r.depth, r.seed) for r in sweep.run_configs(config)]
  assert names == ["plain-20-seed0", "residual-20-seed0", "plain-56-seed0", "residual-56-seed0",
                   "plain-20-seed1", "residual-20-seed1", "plain-56-seed1", "residual-56-seed1"]


def test_fingerprint_ignores_presentation():
  config = quick.get_config()
  changed = quick.get_config()
  changed.log_every = 7
  changed.progress = False
  assert sweep.fingerprint(config) == sweep.fingerprint(changed)
  changed.learning_rate = 0.05
  assert sweep.fingerprint(config) != sweep.fingerprint(changed)
