"""One identity per cell: records that differ in any setting that can change a number never
share a report row, a ``compare`` match or a ``--resume`` skip; seeds of one setting always do."""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import grid
from bench.cli import build_parser, main
from bench.compare import compare
from bench.plan import RunRequest, plan_cells
from bench.grid import EXEMPT_FIELDS, IDENTITY_FIELDS, Cell
from bench.recipes import Recipe
from bench.records import RUNS_FILE, append_record, read_records
from bench.loading import load
from bench.stats import records_frame, summarize

FIXTURE = Path(__file__).parent / "fixtures" / RUNS_FILE
# Records written by earlier versions (schema 1), committed with the project.
COMMITTED = [Path(__file__).resolve().parent.parent / "results", Path(__file__).resolve().parent.parent / "results" / "axes"]


def _folder(root: Path, shade: int, side: int = 8, per_class: int = 3) -> Path:
    for split in ("train", "test"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(np.full((side, side, 3), shade + i, np.uint8)).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two image folders with the same name and different content, and two weights files."""
    root = tmp_path_factory.mktemp("sources")
    (root / "w1.weights.h5").write_bytes(b"one" * 100)
    (root / "w2.weights.h5").write_bytes(b"two" * 100)
    return {"a": _folder(root / "a" / "imgs", 10), "b": _folder(root / "b" / "imgs", 90), "w1": str(root / "w1.weights.h5"), "w2": str(root / "w2.weights.h5")}


BASE = dict(backbone="mobilenet_v2", stage="transfer", image_size=32, augment="flip", seed=0, data="synthetic", profile="full", weights="none")

# For each identity field, two requests that differ in it (and in what it implies).
VARIATIONS = {
    "backbone": ({}, {"backbone": "efficientnet_b0"}),
    "stage": ({}, {"stage": "finetune"}),
    "image_size": ({}, {"image_size": 48}),
    "augment": ({}, {"augment": "none"}),
    "seed": ({}, {"seed": 1}),
    "profile": ({}, {"profile": "perf"}),
    "epochs": ({}, {"epochs": 3}),
    "batch_size": ({}, {"batch_size": 64}),
    "unfreeze_layers": ({"stage": "finetune"}, {"stage": "finetune", "unfreeze_layers": 5}),
    "precision": ({}, {"precision": "mixed"}),
    "jit_compile": ({}, {"jit_compile": True}),
    "path": ({}, {"use_cache": False}),
    "val_fraction": ({}, {"val_fraction": 0.2}),
    "train_images": ({}, {"train_images": 5000}),
    "overrides": ({}, {"overrides": (("head_units", 1024),)}),
    "dataset_id": ({"data": "A"}, {"data": "B"}),
    "weights_id": ({"weights": "W1"}, {"weights": "W2"}),
    "recipes": ({}, {"recipes": (Recipe("mobilenet_v2", "transfer", (("learning_rate", 0.002),), "mobilenet_v2-transfer", 3),)}),
    "fit_on": ({}, {"fit_on": "train+val"}),
}


def _pair(field, sources):
    def make(changes):
        fields = {**BASE, **changes}
        fields["data"] = {"A": str(sources["a"]), "B": str(sources["b"])}.get(fields["data"], fields["data"])
        fields["weights"] = {"W1": sources["w1"], "W2": sources["w2"]}.get(fields["weights"], fields["weights"])
        return Cell(**fields)

    return tuple(make(changes) for changes in VARIATIONS[field])


def _record(cell: Cell, accuracy=0.5, **changes):
    template = read_records(FIXTURE).records[0]
    return dataclasses.replace(template, **cell.record_fields(), test_accuracy=accuracy, **changes)


def test_every_cell_field_is_in_the_identity_or_exempt_with_a_reason():
    for field in dataclasses.fields(Cell):
        assert field.name in IDENTITY_FIELDS or field.name in EXEMPT_FIELDS, f"Cell.{field.name} is neither in the identity nor exempt"
    assert set(EXEMPT_FIELDS) <= {f.name for f in dataclasses.fields(Cell)}
    assert set(VARIATIONS) == set(IDENTITY_FIELDS), "every identity field needs a variation in this test"


@pytest.mark.parametrize("field", [f for f in IDENTITY_FIELDS if f != "seed"])
def test_cells_differing_in_one_setting_never_share_a_row_a_match_or_a_resume_skip(field, sources, tmp_path):
    a, b = _pair(field, sources)
    assert a.identity()[field] != b.identity()[field]
    # --resume: a cell is skipped only when a record with its own key is ok.
    assert a.key != b.key
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    append_record(old, _record(a))
    append_record(new, _record(b))
    summary = summarize(records_frame([_record(a), _record(b)]))
    assert len(summary) == 2 and list(summary["seeds"]) == [1, 1]
    comparison = compare(old, new)
    assert comparison.deltas == [] and comparison.only_old and comparison.only_new
    assert any("no cell of OLD matches" in reason for reason in comparison.failures)


def test_seeds_of_one_setting_share_a_row_and_a_match(sources, tmp_path):
    a, b = _pair("seed", sources)
    assert {k: v for k, v in a.identity().items() if k != "seed"} == {k: v for k, v in b.identity().items() if k != "seed"}
    summary = summarize(records_frame([_record(a, 0.5), _record(b, 0.7)]))
    assert len(summary) == 1 and summary.loc[0, "seeds"] == 2 and summary.loc[0, "test_accuracy"] == pytest.approx(0.6)
    append_record(tmp_path, _record(a))
    append_record(tmp_path, _record(b))
    assert len(compare(tmp_path, tmp_path).deltas) == 1


def test_a_folder_is_known_by_its_content_not_its_name(sources, tmp_path):
    import shutil

    copy = tmp_path / "renamed-copy"
    shutil.copytree(sources["a"], copy)
    ids = [grid.dataset_fingerprint(str(p)) for p in (sources["a"], copy, sources["b"])]
    assert ids[0] == ids[1] != ids[2]
    # A folder called cifar10 is not Keras's CIFAR-10.
    named = _folder(tmp_path / "cifar10", 5)
    assert grid.dataset_label(str(named)) == "folder:cifar10" and grid.dataset_fingerprint(str(named)).startswith("sha256:")
    assert grid.dataset_label(".") != ""


def test_report_tells_apart_two_folders_with_the_same_name(sources):
    from bench.render.labels import distinguish_labels

    a, b = _pair("dataset_id", sources)
    summary = distinguish_labels(summarize(records_frame([_record(a), _record(b)])))
    assert summary["dataset"].nunique() == 2 and all(label.startswith("imgs (sha256:") for label in summary["dataset"])


def test_finetune_starts_only_from_the_head_of_its_own_transfer(sources, tmp_path):
    finetune = Cell(**{**BASE, "stage": "finetune"})
    transfer = Cell(**BASE)
    assert finetune.head_artifact(tmp_path) == transfer.head_artifact(tmp_path)
    # Other weights, data, epochs, batch size or training path: another head.
    for changes in ({"weights": sources["w1"]}, {"data": str(sources["a"])}, {"epochs": 1}, {"batch_size": 32}, {"use_cache": False}):
        other_transfer = dataclasses.replace(transfer, **changes)
        assert other_transfer.head_artifact(tmp_path) != finetune.head_artifact(tmp_path), changes
    # A finetune's own depth does not change which head it starts from.
    assert dataclasses.replace(finetune, unfreeze_layers=3).head_artifact(tmp_path) == transfer.head_artifact(tmp_path)


def test_activation_cache_key_is_the_named_subset(sources):
    base = Cell(**BASE)
    assert set(base.activation_identity()) == set(grid.ACTIVATION_FIELDS) | {"seed"}  # random init: per seed
    assert base.activation_identity() != dataclasses.replace(base, precision="mixed").activation_identity()
    with_file = dataclasses.replace(base, weights=sources["w1"])
    assert "seed" not in with_file.activation_identity()
    # Settings that do not change activations share them.
    assert with_file.activation_identity() == dataclasses.replace(with_file, epochs=3, stage="finetune", seed=4).activation_identity()


def _plan(*argv):
    return plan_cells(RunRequest.from_args(build_parser().parse_args(["run", *argv])), native_size=32)


def test_effective_epochs_are_the_identity_and_the_cap_is_noted():
    cells, notes = _plan("--backbone", "small_cnn", "--data", "synthetic", "--profile", "quick", "--epochs", "2")
    assert cells[0].identity()["epochs"] == 1 and any("capped at 1" in n for n in notes)
    default, _ = _plan("--backbone", "small_cnn", "--data", "synthetic", "--profile", "quick", "--epochs", "1")
    assert cells[0].key == default[0].key


@pytest.mark.parametrize("argv,message", [
    (["--image-size", "64"], "--image-size applies to no cell"),
    (["--weights", "none"], "--weights applies to no cell"),
    (["--unfreeze-layers", "3"], "applies to no cell"),
    (["--no-cache"], "--no-cache applies to no cell"),
    (["--epochs", "3", "--set", "epochs=4"], "--epochs and --set epochs= both set epochs"),
])
def test_settings_that_change_no_cell_or_contradict_are_refused(argv, message, capsys, tmp_path):
    code = main(["run", "--backbone", "small_cnn", "--data", "synthetic", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and err.count("\n") == 0
    assert not (tmp_path / "o" / RUNS_FILE).exists()


@pytest.mark.parametrize("setting,message", [
    ("trainable=all", "defines the stage itself"),
    ("starts_from=none", "defines the stage itself"),
    ("head_units=wide", "takes a int"),
    ("head_dropout=1.5", "must be in [0, 1)"),
    ("colour=red", "unknown recipe field"),
    ("epochs", "expected FIELD=VALUE"),
])
def test_bad_recipe_overrides_are_refused_in_one_line(setting, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--backbone", "small_cnn", "--data", "synthetic", "--set", setting])
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err


def test_recipe_overrides_apply_to_every_stage_and_enter_the_identity():
    cells, notes = _plan("--backbone", "mobilenet_v2", "--stage", "transfer", "finetune", "--data", "synthetic", "--set", "head_units=64", "epochs=3", "augment=none", "tta_flip=false")
    assert [c.stage for c in cells] == ["transfer", "finetune"]
    for cell in cells:
        recipe = cell.recipe()
        assert (recipe.head_units, recipe.epochs, recipe.tta_flip, cell.augment) == (64, 3, False, "none")
        assert cell.identity()["overrides"] == [["head_units", 64], ["tta_flip", False]] and cell.identity()["epochs"] == 3
    # The finetune starts from the head of the transfer trained with the same overrides.
    assert cells[1].head_source().key == cells[0].key


def test_records_from_before_identities_still_group_their_seeds():
    old = read_records(FIXTURE).records[0]
    raw = {k: v for k, v in json.loads(old.to_json()).items() if k != "identity"}
    lines = [json.dumps({**raw, "seed": s, "key": raw["key"].replace("seed0", f"seed{s}"), "test_accuracy": 0.1 * s}) for s in (1, 2)]
    loaded = read_records_from_lines(lines)
    summary = summarize(records_frame(loaded))
    assert len(summary) == 1 and summary.loc[0, "seeds"] == 2


def read_records_from_lines(lines):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / RUNS_FILE).write_text("\n".join(lines) + "\n")
        return read_records(folder).records


@pytest.mark.parametrize("situation,reason", [
    ("new_failed", "2 cell(s) failed in NEW where OLD was ok"),
    ("missing", "1 cell(s) of OLD missing from NEW"),
    ("no_match", "no cell of OLD matches"),
])
def test_compare_fails_a_broken_new_run(situation, reason, tmp_path, capsys):
    cells = [Cell(**{**BASE, "backbone": name}) for name in ("mobilenet_v2", "efficientnet_b0")]
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    for cell in cells:
        append_record(old, _record(cell))
    if situation == "new_failed":
        for cell in cells:
            append_record(new, grid.failed_record(cell, "exception", "RuntimeError: boom"))
    elif situation == "missing":
        append_record(new, _record(cells[0]))
    else:
        append_record(new, _record(dataclasses.replace(cells[0], epochs=7)))
    assert main(["compare", str(old), str(new), "--fail-on-regression"]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("- FAIL:") and reason in last
    assert main(["compare", str(old), str(old), "--fail-on-regression"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("- PASS")


def test_report_shows_the_batch_size_an_out_of_memory_retry_used():
    from bench.render.labels import settings
    from bench.render.runs import accuracy_table

    cell = Cell(**BASE)
    retried = _record(cell, batch_size=64)  # the identity keeps the planned 128
    summary = summarize(records_frame([retried]))
    assert retried.identity["batch_size"] == 128
    assert settings(next(summary.itertuples())) == "batch 64 after an out-of-memory retry"
    assert "batch 64 after an out-of-memory retry" in accuracy_table(summary)


def _cell_of(record) -> Cell:
    """The cell today's planner makes for a record's settings (its data and weights known by
    content; a tuned one with the published recipes, results/recipes, as `bench run --recipes` reads them)."""
    from bench.recipes import find_recipes
    from bench.stages import STAGES

    identity = record.identity
    recipes = find_recipes(COMMITTED[0] / "recipes", record.backbone, STAGES) if identity["recipes"] else ()
    return Cell(record.backbone, record.stage, record.image_size, record.augment, record.seed, data="/elsewhere/" + record.dataset, profile=record.profile,
                weights=record.weights, dataset_id=identity["dataset_id"], weights_id=identity["weights_id"], recipes=recipes, precision=identity["precision"])


def test_a_committed_record_keeps_its_identity_and_digest_and_resume_finds_it():
    line = (COMMITTED[0] / RUNS_FILE).read_text().splitlines()[0]
    written = json.loads(line)
    record = read_records_from_lines([line])[0]
    # Mapped on read: the identity it was written with, less the loader every sweep cell had,
    # plus the recipe and the fit every cell of its time had (no tuned recipe, train alone).
    assert written["identity"]["loader"] == "batched"
    assert record.identity == {**{k: v for k, v in written["identity"].items() if k != "loader"}, "recipes": None, "fit_on": "train"}
    # The digest it was written with; the folder's name (cifar10-jpeg) is no longer part of the key.
    assert written["key"] == "mobilenet_v2/transfer/128px/flip/seed0/cifar10-jpeg/full/ec17d779b5"
    assert record.key == "mobilenet_v2/transfer/128px/flip/seed0/folder/full/ec17d779b5"
    assert _cell_of(record).key == record.key and _cell_of(record).identity() == record.identity


@pytest.mark.parametrize("folder", COMMITTED, ids=["results", "axes"])
def test_resume_on_the_committed_records_finds_every_one(folder, tmp_path):
    from bench import sweep

    (tmp_path / RUNS_FILE).write_bytes((folder / RUNS_FILE).read_bytes())
    records = read_records(tmp_path).records
    written = [json.loads(line)["key"] for line in (folder / RUNS_FILE).read_text().splitlines()]
    digests = [key.rsplit("/", 1)[1] for key in written]
    # One key per digest written: mapping merges no two cells and keeps each digest (a cell run
    # again, as EfficientNet-Lite0's transfer was, is two lines of one digest and one key).
    assert len({r.key for r in records}) == len(set(digests))
    assert [r.key.rsplit("/", 1)[1] for r in records] == digests
    cells = list({r.key: _cell_of(r) for r in records}.values())
    # Each record's own cell, not another one that happens to have a record (a tuned cell
    # planned without its recipes is the default's).
    assert [cell.key for cell in cells] == [r.key for r in {r.key: r for r in records}.values()]
    result = sweep.run_sweep(cells, tmp_path, tmp_path / "cache", resume=True, log=open(os.devnull, "w"))
    assert result.skipped == len(cells) and result.records == []


def test_records_of_one_identity_under_two_folder_names_count_once(tmp_path):
    """Schema 1 keyed the same images under another folder name as another cell: mapped on read, they are one."""
    line = json.loads((COMMITTED[0] / RUNS_FILE).read_text().splitlines()[0])
    copy = {**line, "key": line["key"].replace("/cifar10-jpeg/", "/cifar10-jpeg-copy/"), "dataset": "cifar10-jpeg-copy", "test_accuracy": 0.5}
    (tmp_path / RUNS_FILE).write_text(json.dumps(line) + "\n" + json.dumps(copy) + "\n")
    records, bad = load([tmp_path])
    summary = summarize(records_frame(records))
    assert bad == 0 and len(records) == 1 and list(summary["seeds"]) == [1]
    assert summary.loc[0, "test_accuracy"] == 0.5  # the later record supersedes the earlier


def test_a_renamed_copy_of_a_folder_trains_once_and_the_report_counts_it_once(tmp_path, capsys, tiny_backbones, cells_in_process):
    """Issue 25, defect 2: one cell on a folder, then on a renamed copy with --resume (the
    folder's identity is under test: tiny_scratch stands in for small_cnn, in this process)."""
    import shutil

    import pandas as pd

    original = _folder(tmp_path / "photos", 10, side=32, per_class=5)
    renamed = tmp_path / "photos-renamed"
    shutil.copytree(original, renamed)
    out = tmp_path / "out"
    argv = ["run", "--backbone", "tiny_scratch", "--profile", "quick", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--resume"]
    assert _plan(*argv[1:], "--data", str(original))[0][0].key == _plan(*argv[1:], "--data", str(renamed))[0][0].key
    assert main([*argv, "--data", str(original)]) == 0
    assert main([*argv, "--data", str(renamed)]) == 0
    assert "1 of 1 cells already have an ok record; running 0" in capsys.readouterr().err
    assert len(read_records(out).records) == 1
    assert pd.read_csv(out / "summary.csv")["seeds"].tolist() == [1]
