"""Tuning: search spaces as data, a study per (backbone, stage) that ends with exactly its budget
of finished trials (through kills and shared workers), the pruner fed from the trial's own
process, a trial that never reads the test split, and recipes that make tuned cells rows of
their own."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backbones import get_backbone, list_backbones
from bench import files
from bench.cli import build_parser, main
from bench.errors import UsageError
from bench.grid import Cell, RunOptions
from bench.plan import RunRequest, plan_cells
from bench.recipes import Recipe, read_recipe, recipe_path
from bench.records import TRIALS, TRIALS_FILE, Record
from bench.record_store import read
from bench.search_space import SPACES, defaults_in, search_space
from bench.stages import STAGES
from bench.stats import records_frame, summarize
from bench.study import JOURNAL_FILE, StudyPlan, open_studies, plan_studies, run_study, trial_lock
from bench.trial_link import TrialLink, journal_storage, pruning_hook
from conftest import ROOT, run_cli

BASE = Cell(backbone="mobilenet_v2", stage="transfer", image_size=128, augment="flip", seed=0, data="synthetic", weights="none")


def _plan(trials=4, max_epochs=20, base=BASE) -> StudyPlan:
    return StudyPlan(base, search_space(get_backbone(base.backbone), base.stage, max_epochs), trials, max_epochs, seed=0)


class _Runner:
    """Stands in for an executor: one record per trial cell, its validation accuracy a function
    of the drawn learning rate; ``outcome(number)`` changes a trial's record (a prune, a failure)."""

    def __init__(self, outcome=lambda number: {}):
        self.calls, self.outcome = [], outcome

    def run(self, cell: Cell, options: RunOptions, on_progress=None) -> Record:
        number = options.trial.number
        self.calls.append((number, cell))
        accuracy = 0.9 - abs(np.log10(cell.recipe().learning_rate) + 2.5) / 10
        fields = dict(status="ok", val_accuracy=accuracy, epochs=cell.recipe().epochs, train_seconds=1.0, wall_seconds=6.0, recipe=cell.recipe_record())
        return Record(**cell.record_fields(), **{**fields, **self.outcome(number)})


def _study(out: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=journal_storage(out / JOURNAL_FILE))


def _states(out: Path, name: str) -> dict:
    return {trial.number: trial.state.name for trial in _study(out, name).get_trials()}


def test_every_default_lies_in_its_stage_space_and_a_backbone_widens_its_own():
    for name in list_backbones():
        spec = get_backbone(name)
        for stage in [s for s in spec.stages if s in SPACES]:
            default = Cell(name, stage, spec.default_image_size, STAGES[stage].augment, 0).recipe()
            space = search_space(spec, stage, max_epochs=40)
            assert defaults_in(space, default) == {r.field: getattr(default, r.field) for r in space}, (name, stage)
    finetune = {r.field: r for r in search_space(get_backbone("mobilenet_v2"), "finetune", max_epochs=20)}
    assert (finetune["unfreeze_layers"].low, finetune["unfreeze_layers"].high) == (4, 31)
    assert {r.field: r for r in search_space(get_backbone("efficientnet_b0"), "finetune", 20)}["unfreeze_layers"].high == 16
    # The epoch cap bounds the range, on its steps; a default above it moves to the cap.
    epochs = {r.field: r for r in search_space(get_backbone("mobilenet_v2"), "transfer", max_epochs=12)}["epochs"]
    assert (epochs.low, epochs.high) == (5, 10) and epochs.nearest(20) == 10


def test_a_study_ends_with_its_budget_starts_from_the_default_and_writes_its_best_recipe(tmp_path):
    plan, runner = _plan(trials=4), _Runner()
    open_studies([plan], tmp_path)
    result = run_study(plan, tmp_path, runner)
    numbers = [number for number, _ in runner.calls]
    assert numbers == [0, 1, 2, 3] and result.finished == 4 and result.failed is None
    # Trial 0 is the stage's default recipe; every trial is the base cell carrying its draw.
    assert runner.calls[0][1].recipe() == dataclasses.replace(BASE, recipes=()).recipe()
    assert all(cell.own_recipe().source == f"study {plan.name}, trial {number}" for number, cell in runner.calls)
    records = read(tmp_path, TRIALS).records
    assert [(r.study, r.trial, r.tuning["default_recipe"]) for r in records] == [(plan.name, n, n == 0) for n in range(4)]
    assert all(r.tuning["trials"] == 4 and r.tuning["max_epochs"] == 20 for r in records)
    best = max(records, key=lambda r: r.val_accuracy)
    recipe = read_recipe(result.recipe)
    assert result.recipe == recipe_path(tmp_path / "recipes", "mobilenet_v2", "transfer")
    assert recipe.trial == best.trial and dict(recipe.values) == best.recipe["values"]
    assert json.loads(result.recipe.read_text())["best_val_accuracy"] == best.val_accuracy
    # Rerun: the budget is met, nothing runs again.
    assert run_study(plan, tmp_path, runner).finished == 4 and len(runner.calls) == 4


def test_a_trial_left_running_by_a_killed_worker_is_failed_and_retried_under_a_new_number(tmp_path):
    plan, runner = _plan(trials=3), _Runner()
    open_studies([plan], tmp_path)
    # A worker asked for trial 0 (the default recipe) and was killed with it: RUNNING, its lock free.
    killed = _study(tmp_path, plan.name).ask(plan.distributions())
    assert killed.number == 0 and not files.is_locked(trial_lock(tmp_path, plan.name, 0))
    result = run_study(plan, tmp_path, runner)
    assert [number for number, _ in runner.calls] == [1, 2, 3] and result.finished == 3
    assert _states(tmp_path, plan.name) == {0: "FAIL", 1: "COMPLETE", 2: "COMPLETE", 3: "COMPLETE"}
    assert not list((tmp_path / "tuning-locks").glob("*.trial-*.lock"))  # no lock file left behind
    # Its values ran again, once, as the retry; the killed number never ran and is never counted.
    retry = next(r for r in read(tmp_path, TRIALS).records if r.trial == 1)
    assert retry.tuning == {"trials": 3, "max_epochs": 20, "default_recipe": True, "retry_of": 0}
    assert dict(runner.calls[0][1].own_recipe().values) == killed.params


def test_a_trial_running_in_a_live_worker_counts_toward_the_budget_and_is_left_alone(tmp_path):
    plan, runner = _plan(trials=3), _Runner()
    open_studies([plan], tmp_path)
    other = _study(tmp_path, plan.name).ask(plan.distributions())
    with files.exclusive_lock(trial_lock(tmp_path, plan.name, other.number)):  # the other worker, still at work
        result = run_study(plan, tmp_path, runner)
    # Two here plus the one running elsewhere make three: no fourth is started, no recipe yet.
    assert [number for number, _ in runner.calls] == [1, 2] and result.finished == 2 and result.recipe is None
    assert _states(tmp_path, plan.name)[other.number] == "RUNNING"


def test_pruned_and_diverged_trials_count_as_finished_and_a_failed_one_stops_the_study(tmp_path):
    ends = {1: {"pruned": True, "epochs": 2}, 2: {"status": "failed", "failure": "diverged", "val_accuracy": None}, 3: {"status": "failed", "failure": "exception", "error": "boom"}}
    plan, runner = _plan(trials=5), _Runner(lambda number: ends.get(number, {}))
    open_studies([plan], tmp_path)
    result = run_study(plan, tmp_path, runner)
    assert result.failed.trial == 3 and result.finished == 3 and result.pruned == 2 and result.recipe is None
    assert _states(tmp_path, plan.name) == {0: "COMPLETE", 1: "PRUNED", 2: "PRUNED", 3: "FAIL"}
    # Fixed and rerun, the study resumes: new numbers, exactly five finished.
    runner.outcome = lambda number: {}
    result = run_study(plan, tmp_path, runner)
    assert [number for number, _ in runner.calls] == [0, 1, 2, 3, 4, 5] and result.finished == 5 and result.recipe is not None


def test_all_gives_every_tunable_backbone_and_stage_one_budget_and_passes_over_the_rest():
    cells, _ = plan_cells(RunRequest(all=True, data="synthetic"), native_size=32)
    plans, notes = plan_studies(cells, trials=7, max_epochs=12, seed=3)
    assert {(p.base.backbone, p.base.stage) for p in plans} == {(c.backbone, c.stage) for c in cells if c.stage in SPACES}
    assert {(p.trials, p.max_epochs, p.seed) for p in plans} == {(7, 12, 3)}
    assert all(max(r.high for r in p.space if r.field == "epochs") <= 12 for p in plans)
    untuned = sorted({c.stage for c in cells} - set(SPACES))
    assert [note.split()[1] for note in notes] == untuned and len(plans) < len(cells) if untuned else not notes


def test_a_study_started_with_other_settings_is_refused_before_anything_runs(tmp_path):
    open_studies([_plan(max_epochs=20)], tmp_path)
    with pytest.raises(UsageError, match="was started with other settings .*max_epochs"):
        open_studies([_plan(max_epochs=10)], tmp_path)
    open_studies([_plan(trials=9)], tmp_path)  # a larger budget extends the same study


def test_the_trial_process_reports_each_epoch_and_the_median_pruner_stops_a_poor_one(tmp_path):
    import optuna

    plan = _plan()
    open_studies([plan], tmp_path)
    study = _study(tmp_path, plan.name)
    for final in (0.8, 0.85, 0.9):  # three finished trials, at 50 % and 100 % of their schedules
        trial = study.ask(plan.distributions())
        trial.report(final - 0.1, 50)
        trial.report(final, 100)
        study.tell(trial, final)
    trial = study.ask(plan.distributions())
    link = TrialLink(str(tmp_path / JOURNAL_FILE), plan.name, trial.number)
    assert pruning_hook(link, 10)(1, 2, {"val_accuracy": 0.79}) is False  # above the median (0.75) at 50 %
    poor = study.ask(plan.distributions())
    should_stop = pruning_hook(dataclasses.replace(link, number=poor.number), 10)
    assert should_stop(2, 4, {"val_accuracy": 0.2}) is True
    assert should_stop(4, 4, {"val_accuracy": 0.2}) is False  # the last epoch: the trial has finished
    assert _study(tmp_path, plan.name).trials[poor.number].intermediate_values == {50: 0.2, 100: 0.2}
    assert optuna.__version__.split(".")[0] == "5"  # pinned: the samplers' defaults change between majors


def test_a_trial_collapsed_to_chance_stops_before_the_pruner_has_its_startup_trials(tmp_path):
    plan = _plan()
    open_studies([plan], tmp_path)
    study = _study(tmp_path, plan.name)
    first = study.ask(plan.distributions())  # the study's first trial: the median pruner cannot act yet
    should_stop = pruning_hook(TrialLink(str(tmp_path / JOURNAL_FILE), plan.name, first.number), 10)
    assert should_stop(1, 8, {"val_accuracy": 0.35}) is False  # poor but learning
    assert should_stop(2, 8, {"val_accuracy": 0.10}) is True  # 10 classes, 10 %: collapsed
    assert should_stop(8, 8, {"val_accuracy": 0.10}) is False  # the last epoch: the trial has finished
    # Chance depends on the classes: with 2, 55 % is collapsed and 65 % is not.
    second = study.ask(plan.distributions())
    two_classes = pruning_hook(TrialLink(str(tmp_path / JOURNAL_FILE), plan.name, second.number), 2)
    assert two_classes(1, 8, {"val_accuracy": 0.55}) is True and two_classes(2, 8, {"val_accuracy": 0.65}) is False


def _train_only_folder(root: Path) -> Path:
    """An image folder with train/ and no test/ at all: reading the test split fails loudly."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(("a", "b")):
        (root / "train" / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray((rng.integers(0, 60, (32, 32, 3)) + 150 * index).astype(np.uint8)).save(root / "train" / name / f"{i}.png")
    return root


def test_a_trial_never_loads_or_evaluates_the_test_split(tmp_path, tiny_backbones):
    from bench.cell import run_cell

    data = _train_only_folder(tmp_path / "imgs")
    with pytest.raises(UsageError, match="no test/ subfolder"):
        run_cell(Cell("tiny_net", "transfer", 32, "flip", 0, data=str(data), epochs=1), tmp_path / "run", tmp_path / "cache")
    base = Cell("tiny_net", "transfer", 32, "flip", 0, data=str(data), batch_size=8)
    plan = _plan(trials=1, max_epochs=2, base=base)
    open_studies([plan], tmp_path / "out")
    trial = _study(tmp_path / "out", plan.name).ask(plan.distributions())
    link = TrialLink(str(tmp_path / "out" / JOURNAL_FILE), plan.name, trial.number)
    record = run_cell(plan.trial_cell(trial.number, trial.params), tmp_path / "out", tmp_path / "cache", options=RunOptions(trial=link))
    assert record.status == "ok", record.error
    assert record.test_accuracy is None and record.test_images is None and 0 <= record.val_accuracy <= 1
    assert record.recipe["source"] == f"study {plan.name}, trial 0" and record.recipe["values"] == trial.params
    # Each epoch reached the study from the trial's own run.
    assert len(_study(tmp_path / "out", plan.name).trials[0].intermediate_values) == record.epochs
    assert not list((tmp_path / "cache" / "datasets").glob("*x_test*"))


def _run_cells(*argv):
    return plan_cells(RunRequest.from_args(build_parser().parse_args(["run", *argv])), native_size=32)


def _write(folder: Path, recipe: Recipe) -> Path:
    from bench.recipes import write_recipe

    return write_recipe(folder, recipe, best_val_accuracy=0.5)


def _record(cell: Cell, test_accuracy: float = 0.5) -> Record:
    """An ok record of ``cell`` with its recipe, placeholder timings and ``test_accuracy``."""
    template = Record(key="", backbone="", stage="", image_size=0, augment="", seed=0, dataset="", profile="", status="ok", test_accuracy=test_accuracy, val_accuracy=0.5,
                      epochs=1, train_seconds=1.0, wall_seconds=1.0, infer_images_per_second=1.0, infer_batch_size=1, latency_p50_ms=1.0, latency_p95_ms=1.0,
                      peak_rss_mb=1.0, total_params=1, trainable_params=1, train_images_per_second=1.0, overhead_seconds=0.0, cache_seconds=0.0)
    return dataclasses.replace(template, **cell.record_fields(), recipe=cell.recipe_record())


def test_a_tuned_recipe_and_the_default_are_two_rows_and_the_default_keeps_its_key(tmp_path):
    _write(tmp_path / "recipes", Recipe("small_cnn", "baseline", (("epochs", 5), ("learning_rate", 0.004)), "small_cnn-baseline", 7))
    argv = ["--backbone", "small_cnn", "--data", "synthetic"]
    (default,), _ = _run_cells(*argv)
    (tuned,), notes = _run_cells(*argv, "--recipes", str(tmp_path / "recipes"))
    assert default.key != tuned.key and default.identity()["recipes"] is None and not notes
    assert tuned.recipe().learning_rate == 0.004 and tuned.recipe().epochs == 5
    # A --set beats the recipe; a recipe that changes nothing is the default cell.
    (overruled,), _ = _run_cells(*argv, "--recipes", str(tmp_path / "recipes"), "--set", "learning_rate=0.002", "--epochs", "5")
    assert overruled.recipe().learning_rate == 0.002 and overruled.identity()["recipes"] is None
    records = [_record(cell) for cell in (default, tuned)]
    summary = summarize(records_frame(records))
    from bench.render.labels import settings

    assert len(summary) == 2
    # small_cnn's recipe trains in bfloat16, which its rows say.
    assert sorted(settings(row) for row in summary.itertuples()) == ["mixed precision", "mixed precision, tuned recipe (study small_cnn-baseline, trial 7)"]


def test_the_headline_drops_a_default_row_with_fewer_seeds_than_its_tuned_row(tmp_path):
    from bench.render.labels import distinguish_labels, settings
    from bench.render.runs import render_headline
    from bench.stats import superseded_by_tuned

    _write(tmp_path / "recipes", Recipe("small_cnn", "baseline", (("epochs", 5), ("learning_rate", 0.004)), "small_cnn-baseline", 7))
    argv = ["--backbone", "small_cnn", "--data", "synthetic"]
    (default,), _ = _run_cells(*argv)
    tuned, _ = _run_cells(*argv, "--recipes", str(tmp_path / "recipes"), "--seeds", "3")
    (batch_64,), _ = _run_cells(*argv, "--batch-size", "64")  # another configuration, not tuned
    # The one-seed default is the most accurate row: the headline's winners must not name it.
    records = [_record(default, 0.91), *(_record(cell, 0.6) for cell in tuned), _record(batch_64, 0.7)]
    frame = records_frame(records)
    summary = distinguish_labels(summarize(frame))
    summary["settings"] = [settings(row) for row in summary.itertuples()]
    flags = dict(zip(summary["seeds"].astype(str) + summary["settings"], superseded_by_tuned(summary)))
    assert flags == {"1mixed precision": True, "3mixed precision, tuned recipe (study small_cnn-baseline, trial 7)": False, "1batch 64, mixed precision": False}
    text = render_headline(frame, summary)
    assert "91.0 %" not in text and "60.0 % ± 0.0 (n=3)" in text and "70.0 % (n=1)" in text
    assert "1 default-recipe row(s) with fewer seeds than their tuned counterpart" in text
    # With as many seeds as the tuned row, the default row stays beside it.
    more = [*records, *(_record(cell, 0.91) for cell in _run_cells(*argv, "--seeds", "3")[0][1:])]
    assert not superseded_by_tuned(summarize(records_frame(more))).any()


def test_a_study_that_chose_the_default_says_so():
    from types import SimpleNamespace

    from bench.render.labels import settings

    def row(recipe):
        return SimpleNamespace(stage="transfer", batch_size=None, batch_size_used=None, precision="float32", jit_compile=False,
                               val_fraction=0.1, overrides="[]", recipe=json.dumps(recipe))

    chosen = {"source": "study a-transfer, trial 0", "values": {"epochs": 20}, "defaults": {"epochs": 20}}
    assert settings(row(chosen), brief=True) == "tuned recipe = the default"
    assert settings(row({**chosen, "values": {"epochs": 5}}), brief=True) == "tuned recipe"
    assert settings(row({"source": "default"})) == ""


def test_a_tuned_finetune_starts_from_the_default_transfer_head_as_its_study_did(tmp_path):
    """A finetune study's trials carry their own recipe alone, so they start from the default
    transfer head; the final cells must too, whatever the transfer study chose (a wider head
    would not even load into the finetune's classifier)."""
    folder = tmp_path / "recipes"
    _write(folder, Recipe("mobilenet_v2", "transfer", (("head_units", 1024), ("learning_rate", 0.003)), "mobilenet_v2-transfer", 5))
    _write(folder, Recipe("mobilenet_v2", "finetune", (("unfreeze_layers", 23), ("epochs", 4)), "mobilenet_v2-finetune", 1))
    argv = ["--backbone", "mobilenet_v2", "--stage", "transfer", "finetune", "--data", "synthetic", "--weights", "none"]
    (default_transfer, _), _ = _run_cells(*argv)
    (transfer, finetune), _ = _run_cells(*argv, "--recipes", str(folder))
    assert transfer.recipe().head_units == 1024 and transfer.key != default_transfer.key
    head = finetune.head_source()
    assert head.key == default_transfer.key and head.recipe().head_units == finetune.recipe().head_units == 512
    # Its identity and record name its own recipe alone: the trial with the same values is the same cell.
    trial = dataclasses.replace(finetune, recipes=tuple(r for r in finetune.recipes if r.stage == "finetune"))
    assert finetune.key == trial.key and finetune.identity()["recipes"] is not None
    assert "head" not in finetune.recipe_record() and finetune.recipe_record()["trial"] == 1
    # The transfer cell still stores the activations at the tuned finetune's cut.
    assert transfer.counterpart("finetune").recipe().unfreeze_layers == 23


def test_a_final_fit_on_train_and_validation_is_its_own_row_and_says_so():
    (cell,), _ = _run_cells("--backbone", "small_cnn", "--data", "synthetic", "--fit-on", "train+val")
    (default,), _ = _run_cells("--backbone", "small_cnn", "--data", "synthetic")
    assert cell.identity()["fit_on"] == "train+val" and cell.key != default.key
    from bench.data import make_synthetic, prepare

    data = prepare(make_synthetic(), seed=0)
    both = data.with_validation_in_training()
    assert len(both.train_index) == len(data.train_index) + len(data.val_index) and set(both.val_index) <= set(both.train_index)


@pytest.mark.parametrize("argv,message", [
    (["tune", "--backbone", "nope", "--data", "synthetic"], "unknown backbone 'nope'"),
    (["tune", "--backbone", "small_cnn", "--trials", "0"], "--trials: expected a positive integer"),
    (["tune", "--backbone", "small_cnn", "--max-epochs", "-1"], "--max-epochs: expected a positive integer"),
    (["tune", "--backbone", "mobilenet_v2", "--stage", "linear", "--data", "synthetic"], "stage linear has no search space"),
    (["run", "--backbone", "small_cnn", "--data", "synthetic", "--recipes", "NOT_A_DIR"], "is not a folder"),
    (["run", "--backbone", "small_cnn", "--data", "synthetic", "--recipes", "BAD_JSON"], "is not JSON"),
    (["run", "--backbone", "small_cnn", "--data", "synthetic", "--recipes", "BAD_VALUE"], "learning_rate=-1.0: must be above 0"),
    (["run", "--backbone", "small_cnn", "--data", "synthetic", "--recipes", "EMPTY"], "has no recipe for any cell of this run"),
])
def test_bad_tuning_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    folders = {name: tmp_path / name for name in ("BAD_JSON", "BAD_VALUE", "EMPTY")}
    for folder in folders.values():
        folder.mkdir()
    (folders["BAD_JSON"] / "small_cnn-baseline.json").write_text("{not json")
    _write(folders["BAD_VALUE"], Recipe("small_cnn", "baseline", (("learning_rate", -1.0),), "s", 0))
    argv = [str(folders.get(a, tmp_path / a if a == "NOT_A_DIR" else a)) for a in argv] + ["--out", str(tmp_path / "out")]
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and err.count("\n") == 0, err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_tune_then_run_with_its_recipes_beside_the_default(tmp_path):
    """The whole path as a user runs it: a study per stage of tiny_net (trials in their own
    processes), its recipes, then a default, a tuned and a final-fit run into one folder."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {"BENCH_BACKBONE_MODULES": "tiny_backbones"}
    common = ["--data", "synthetic", "--cache-dir", str(cache)]
    tuned = run_cli("tune", "--backbone", "tiny_net", "--trials", "2", "--max-epochs", "2", "--out", out, *common, env=env)
    assert tuned.returncode == 0, tuned.stderr
    trials = read(out / TRIALS_FILE, TRIALS).records
    assert sorted((r.stage, r.trial) for r in trials) == [("finetune", 0), ("finetune", 1), ("transfer", 0), ("transfer", 1)]
    assert all(r.test_accuracy is None for r in trials)
    readme = (out / "README.md").read_text()
    assert "## Tuning" in readme and "2 of 2" in readme and (out / "tuning_val_accuracy.png").stat().st_size > 0
    runs = out / "runs"
    for extra in ([], ["--recipes", str(out / "recipes")], ["--fit-on", "train+val"]):
        ran = run_cli("run", "--backbone", "tiny_net", "--stage", "transfer", "--out", runs, *common, *extra, env=env)
        assert ran.returncode == 0, ran.stderr
    summary = (runs / "summary.csv").read_text()
    assert len(summary.strip().splitlines()) == 4, summary  # header and three rows
    table = (runs / "README.md").read_text()
    assert "tuned recipe (study tiny_net-transfer, trial" in table and "final fit on train + validation" in table


def test_the_report_lists_each_trial_with_its_values_and_how_it_ended(tmp_path):
    from bench.render.tuning import trials_table
    from bench.stats import trials_frame

    ends = {1: {"pruned": True, "epochs": 2, "history": [{"val_accuracy": 0.5}, {"val_accuracy": 0.6}]}, 2: {"status": "failed", "failure": "diverged", "val_accuracy": None}}
    plan, runner = _plan(trials=3), _Runner(lambda number: ends.get(number, {}))
    open_studies([plan], tmp_path)
    run_study(plan, tmp_path, runner)
    trials = trials_frame(read(tmp_path / TRIALS_FILE, TRIALS).records)
    rows = trials_table(trials).splitlines()[2:]
    assert len(rows) == 3 and [name.strip() for name in trials_table(trials).splitlines()[0].strip("|").split("|")][1:-2] == sorted(field.field for field in plan.space)
    drawn_epochs = trials[trials["trial"] == 1]["recipe"].iloc[0]["values"]["epochs"]
    assert rows[0].startswith("| 0 (default)") and "| 0.001 " in rows[0] and "complete (20 epochs)" in rows[0]
    assert f"pruned after epoch 2 of {drawn_epochs} " in rows[1] and rows[2].rstrip(" |").endswith("diverged")


def test_a_trial_that_fails_still_records_the_values_it_tried(tmp_path):
    from bench.grid import failed_record

    _write(tmp_path / "recipes", Recipe("small_cnn", "baseline", (("epochs", 5), ("learning_rate", 0.004)), "small_cnn-baseline", 3))
    (tuned,), _ = _run_cells("--backbone", "small_cnn", "--data", "synthetic", "--recipes", str(tmp_path / "recipes"))
    record = failed_record(tuned, "timeout", "timeout: no result after 1500 s")
    assert record.recipe["values"] == {"epochs": 5, "learning_rate": 0.004} and record.recipe["trial"] == 3
