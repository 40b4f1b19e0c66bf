"""The `linear` stage: Kornblith's linear probe on the cached pooled features. The solver's
search (validation only, coarse then fine, the final fit), its memory, the cell that reuses
transfer's cache entries, its records in the report, its cost, and what `run` plans for it."""

import contextlib
import dataclasses
import io
import math
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from bench import data as data_module
from bench import linear_probe, publish
from bench.cell import run_cell
from bench.errors import UsageError
from bench.grid import Cell
from bench.records import append_record
from bench.stages import STAGES

KORNBLITH = STAGES["linear"].l2_penalties


def _clusters(count: int, features: int = 16, seed: int = 0, spread: float = 2.0):
    """Gaussian class clusters, not linearly separable: (features float32, labels)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(10, features))
    labels = rng.integers(10, size=count)
    return (centres[labels] + spread * rng.normal(size=(count, features))).astype(np.float32), labels


def _fit(x, y, x_val, y_val):
    with contextlib.redirect_stdout(io.StringIO()):  # a line per fit, for the cell's log
        return linear_probe.fit_linear_probe([x], y, x_val, y_val, KORNBLITH, 10)


def test_the_grid_is_kornblith_s_strongest_first_and_the_coarse_pass_takes_whole_decades():
    grid = linear_probe.penalty_grid(*KORNBLITH)
    assert len(grid) == 45 and math.isclose(grid[0], 1e5) and math.isclose(grid[-1], 1e-6)
    assert np.allclose(np.log10(grid[:: linear_probe.COARSE_STRIDE]), np.arange(5, -7, -1))


def test_the_search_picks_the_best_validation_accuracy_coarse_then_fine_and_fits_it_last():
    x, y = _clusters(3000)
    x_val, y_val = _clusters(500, seed=1)
    # Far from standardised, so the folded coefficients must undo the standardisation.
    x, x_val = 50 + 7 * x, 50 + 7 * x_val
    probe = _fit(x, y, x_val, y_val)
    search = [f for f in probe.fits if f.phase != "final"]
    coarse = [f for f in search if f.phase == "coarse"]
    assert [f.phase for f in probe.fits] == ["coarse"] * len(coarse) + ["fine"] * (len(search) - len(coarse)) + ["final"]
    # Strongest first, a decade apart, and stopped after the first fall below the peak.
    assert np.allclose(np.diff(np.log10([f.l2_penalty for f in coarse])), -1)
    peak = max(f.val_accuracy for f in coarse)
    assert coarse[-1].val_accuracy < peak and len(coarse) < 12 and sum(f.val_accuracy == peak for f in coarse) >= 1
    # Fine: the 0.25-decade values between the best coarse value and one of its neighbours.
    fine = sorted(np.log10([f.l2_penalty for f in search if f.phase == "fine"]))
    assert len(fine) == 3 and np.allclose(np.diff(fine), 0.25)
    best = max(search, key=lambda f: (f.val_accuracy, f.l2_penalty))
    assert probe.l2_penalty == best.l2_penalty == probe.fits[-1].l2_penalty
    assert probe.fits[-1].converged and 0 < probe.solver_seconds <= probe.seconds
    # The coefficients apply to the raw features: they score what the final fit scored.
    predicted = (x_val @ probe.weights + probe.bias).argmax(axis=1)
    assert np.mean(predicted == y_val) == probe.fits[-1].val_accuracy > 0.5


def test_the_solver_takes_no_float64_copy_of_the_features():
    x, y = _clusters(40_000, features=64)
    x_val, y_val = _clusters(1000, features=64, seed=1)
    _fit(x[:2000], y[:2000], x_val, y_val)  # imports and first calls, outside the measurement
    tracemalloc.start()
    try:
        _fit(x, y, x_val, y_val)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One standardised float32 copy and small change; a float64 copy alone would be twice x.
    assert peak_bytes < 2 * x.nbytes, peak_bytes / x.nbytes


def test_a_class_without_training_rows_is_refused_in_one_line():
    x, y = _clusters(300)
    with pytest.raises(UsageError, match="all 10 classes"):
        _fit(x[y != 3], y[y != 3], x, y)


# --------------------------------------------------------------------------- the cell


def _cell(stage: str, **fields) -> Cell:
    return Cell(backbone="tiny_probe", stage=stage, image_size=32, augment=STAGES[stage].augment, seed=0, data="synthetic", weights="none",
                epochs=1 if stage == "transfer" else None, **fields)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A transfer cell, then the linear cell of the same backbone and size, into one cache."""
    from conftest import registered

    out, cache = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("cache")
    with registered("tiny_backbones"):
        transfer = run_cell(_cell("transfer"), out, cache)
        before = sorted((cache / "features").glob("*.npy"))
        with contextlib.redirect_stdout(io.StringIO()):
            linear = run_cell(_cell("linear"), out, cache)
    return out, cache, transfer, linear, before


@pytest.fixture(autouse=True)
def _tiny(tiny_backbones):
    pass


def test_the_linear_cell_reads_transfer_s_cache_entries_and_extracts_nothing(runs):
    _, cache, transfer, linear, before = runs
    assert transfer.status == linear.status == "ok", linear.error
    assert sorted((cache / "features").glob("*.npy")) == before
    assert linear.path == "cached" and not linear.notes


def test_the_linear_record_holds_the_chosen_penalty_the_search_and_the_solver_s_time(runs):
    _, _, _, linear, _ = runs
    grid = linear_probe.penalty_grid(*KORNBLITH)
    assert np.isclose(grid, linear.linear_l2_penalty).any()
    assert linear.linear_penalty_search[-1]["phase"] == "final" and linear.linear_penalty_search[-1]["l2_penalty"] == linear.linear_l2_penalty
    assert 0 < linear.solver_seconds == pytest.approx(sum(f["solver_seconds"] for f in linear.linear_penalty_search))
    assert linear.solver_seconds <= linear.train_seconds
    # The head is one Dense layer over tiny_probe's 8 pooled features, with the solver's coefficients.
    assert linear.trainable_params == (8 + 1) * 10 and linear.epochs == 0 and linear.history == [] and linear.learning_rate is None
    assert not linear.tta_flip and 0 <= linear.test_accuracy <= 1
    # Keras's float32 head scores validation as the solver did (a borderline image may flip).
    assert abs(linear.val_accuracy - linear.linear_penalty_search[-1]["val_accuracy"]) <= 1 / linear.val_images


def test_the_test_split_plays_no_part_in_choosing_the_penalty(runs, monkeypatch):
    out, cache, _, linear, _ = runs
    real_load = data_module.load_raw

    def permuted_test_labels(*args, **kwargs):
        raw = real_load(*args, **kwargs)
        return dataclasses.replace(raw, y_test=np.random.default_rng(5).permutation(raw.y_test))

    monkeypatch.setattr("bench.cell.load_raw", permuted_test_labels)
    with contextlib.redirect_stdout(io.StringIO()):
        again = run_cell(_cell("linear"), out, cache)
    assert again.linear_l2_penalty == linear.linear_l2_penalty and again.val_accuracy == linear.val_accuracy
    assert [(f["l2_penalty"], f["val_accuracy"]) for f in again.linear_penalty_search] == [(f["l2_penalty"], f["val_accuracy"]) for f in linear.linear_penalty_search]
    assert again.test_accuracy != linear.test_accuracy


def test_a_final_fit_on_train_and_validation_keeps_the_search_and_refits_the_choice_on_both(runs):
    out, cache, _, linear, _ = runs
    with contextlib.redirect_stdout(io.StringIO()):
        final = run_cell(_cell("linear", fit_on="train+val"), out, cache)
    # The choice is made as before, by train-only fits scored on the held-out validation images.
    assert [(f["phase"], f["l2_penalty"], f["val_accuracy"]) for f in final.linear_penalty_search[:-1]] == [
        (f["phase"], f["l2_penalty"], f["val_accuracy"]) for f in linear.linear_penalty_search[:-1]]
    assert final.linear_l2_penalty == linear.linear_l2_penalty
    # Then it is fitted on both: no held-out validation accuracy is left to report.
    assert final.linear_penalty_search[-1]["val_accuracy"] is None and final.val_accuracy is None
    assert final.train_images == linear.train_images + linear.val_images and final.key != linear.key


def test_the_report_shows_the_penalty_the_solver_s_time_and_the_search(runs, tmp_path):
    _, _, transfer, linear, _ = runs
    without, with_linear = tmp_path / "without", tmp_path / "with"
    for folder, records in ((without, [transfer]), (with_linear, [transfer, linear])):
        folder.mkdir()
        for record in records:
            append_record(folder, record)
        publish.write_report(folder)
    summary = pd.read_csv(with_linear / "summary.csv")
    row = summary[summary["stage"] == "linear"].iloc[0]
    assert row["linear_l2_penalty"] == pytest.approx(linear.linear_l2_penalty, rel=1e-5) and row["solver_seconds"] > 0
    assert list(summary["stage"]) == ["linear", "transfer"]
    readme = (with_linear / "README.md").read_text()
    accuracy, cost = _table(readme, "## Accuracy"), _table(readme, "## Cost")
    assert accuracy["linear"]["L2 penalty"] == f"{linear.linear_l2_penalty:.3g}" and accuracy["linear"]["epochs"] == ""
    assert accuracy["transfer"]["L2 penalty"] == "" and accuracy["transfer"]["epochs"] == "1"
    assert cost["linear"]["solver s"] == f"{linear.solver_seconds:,.0f}"
    assert (with_linear / "linear_penalty_search.png").read_bytes()[:4] == b"\x89PNG"
    # linear's policy (none) beside transfer's (flip) is no sweep of augmentations.
    assert "## Augmentation and input size" not in readme
    # A report without a linear record has none of it.
    assert "linear_l2_penalty" not in pd.read_csv(without / "summary.csv").columns
    assert "L2 penalty" not in (without / "README.md").read_text() and not (without / "linear_penalty_search.png").exists()
    assert (without / "training_curves.png").exists()
    # A folder of linear cells alone has no training curves to draw (L-BFGS has no epochs).
    alone = tmp_path / "alone"
    alone.mkdir()
    append_record(alone, linear)
    names = {path.name for path in publish.write_report(alone)}
    assert "linear_penalty_search.png" in names and "training_curves.png" not in names


def _table(text: str, heading: str) -> dict:
    """The first table after ``heading``: {stage: {column: cell}}."""
    lines = [line for line in text[text.index(heading) :].split("\n\n| ")[1].splitlines()]
    header = [cell.strip() for cell in ("| " + lines[0]).strip("|").split("|")]
    rows = [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:] if line.startswith("|")]
    return {row["stage"]: row for row in rows}


# --------------------------------------------------------------------------- planning and cost (no TensorFlow)


def _plan(*argv):
    from bench.cli import build_parser
    from bench.plan import RunRequest, plan_cells

    return plan_cells(RunRequest.from_args(build_parser().parse_args(["run", "--data", "synthetic", *argv])), native_size=32)


def test_every_pretrained_backbone_runs_linear_by_default_before_transfer():
    from backbones import get_backbone, list_backbones

    cells, _ = _plan("--all")
    pretrained = [name for name in list_backbones() if "linear" in get_backbone(name).stages]
    assert "mobilenet_v2" in pretrained and sorted(c.backbone for c in cells if c.stage == "linear") == sorted(pretrained)
    stages = [c.stage for c in cells if c.backbone == "mobilenet_v2"]
    assert stages == ["linear", "transfer", "finetune"]
    linear = next(c for c in cells if c.stage == "linear")
    assert linear.augment == "none" and linear.cached() and linear.recipe().tta_flip is False


@pytest.mark.parametrize("argv,message", [
    (["--no-cache"], "--no-cache applies to no cell"),
    (["--epochs", "3"], "--epochs / --set epochs applies to no cell"),
    (["--augment", "flip-crop"], "--augment flip-crop cannot apply to the linear stage"),
])  # fmt: skip
def test_settings_that_mean_nothing_to_the_solver_are_refused(argv, message):
    with pytest.raises(UsageError, match=message.replace("-", r"\-")):
        _plan("--backbone", "mobilenet_v2", "--stage", "linear", *argv)


def test_the_epoch_loop_s_settings_beside_a_linear_cell_apply_to_the_others_only():
    cells, lines = _plan("--backbone", "mobilenet_v2", "--stage", "linear", "transfer", "--epochs", "3", "--set", "head_units=64", "tta_flip=true")
    linear, transfer = cells
    assert (linear.recipe().epochs, linear.recipe().head_units, linear.overrides) == (0, 0, (("tta_flip", True),))
    assert (transfer.recipe().epochs, transfer.recipe().head_units, transfer.overrides) == (3, 64, (("head_units", 64), ("tta_flip", True)))
    assert "note: --epochs / --set epochs applies to 1 of 2 cells: the stages trained in epochs (baseline, transfer, finetune); linear fits by L-BFGS" in lines
    assert any(line.startswith("note: --set head_units applies to 1 of 2 cells") for line in lines)


def test_bench_list_names_the_solver_and_its_range():
    from backbones import get_backbone, list_backbones
    from bench.augment import POLICIES
    from bench.render.listing import render_listing

    text = render_listing([get_backbone(n) for n in list_backbones()], STAGES, POLICIES)
    assert "| linear   | L-BFGS, L2 penalty from 45 log-spaced values in [1e-6, 1e5]" in text


def test_the_solver_s_cost_is_rows_times_iterations_per_second():
    rate = linear_probe.solver_images_per_second(32, 10, repeats=1, rows=2000, iterations=5)
    assert 0 < rate < math.inf
