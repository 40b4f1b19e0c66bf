"""Option values, planning and start-up: every numeric option checked the same way, repeated list
options kept, one image-size bound, shards of different grids named, closed streams survived,
and messages that name the path actually used (issue #25: 3, 6, 8, 9, 10, 11)."""

import argparse
import errno
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from bench.cli import build_parser, main
from bench.plan import CostRequest, RunRequest, plan_cells, plan_costs
from bench.records import RUNS_FILE
from conftest import ROOT

FIXTURE = Path(__file__).parent / "fixtures" / RUNS_FILE
# Option types that are not numbers: names, paths, and structured values with their own tests.
NOT_NUMERIC = {"data_source", "override", "shard", "Path"}


def _subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices.items()


def _numeric_options():
    return [(name, action) for name, command in _subcommands() for action in command._actions
            if action.type is not None and getattr(action.type, "__name__", "") not in NOT_NUMERIC]


def _exit_code_and_error(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.strip()


# --- 3: every numeric option refuses nan, inf and out-of-range values in one line ---------------


@pytest.mark.parametrize("command,action", _numeric_options(), ids=lambda x: x if isinstance(x, str) else x.option_strings[0])
@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_every_numeric_option_refuses_non_finite_values(command, action, text):
    with pytest.raises((argparse.ArgumentTypeError, ValueError)):
        action.type(text)


@pytest.mark.parametrize("argv,pattern", [
    (["--fail-threshold", "nan"], "--fail-threshold: expected a finite number of percent of 0 or more, got 'nan'"),
    (["--fail-threshold", "inf"], "--fail-threshold: expected a finite number of percent of 0 or more, got 'inf'"),
    (["--fail-threshold", "-5"], "--fail-threshold: expected a finite number of percent of 0 or more, got '-5'"),
    (["--accuracy-threshold", "nan"], "--accuracy-threshold: expected a finite number of accuracy points of 0 or more, got 'nan'"),
    (["--accuracy-threshold", "-1"], "--accuracy-threshold: expected a finite number of accuracy points of 0 or more, got '-1'"),
    (["--accuracy-threshold", "lots"], "--accuracy-threshold: expected a number of accuracy points, got 'lots'"),
])
def test_compare_thresholds_are_validated(argv, pattern, tmp_path, capsys):
    """nan or inf would switch regression detection off; a negative threshold flags identical runs."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(FIXTURE, out / RUNS_FILE)
    code, err = _exit_code_and_error(capsys, "compare", out, out, "--fail-on-regression", *argv)
    assert code == 2 and err.count("\n") == 0 and pattern in err, err
    assert (out / RUNS_FILE).read_bytes() == FIXTURE.read_bytes()


def test_valid_thresholds_still_compare(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(FIXTURE, out / RUNS_FILE)
    assert main(["compare", str(out), str(out), "--fail-on-regression", "--fail-threshold", "0", "--accuracy-threshold", "0.5"]) == 0


@pytest.mark.parametrize("option", ["--cpus-per-cell", "--gpus-per-cell"])
@pytest.mark.parametrize("text", ["nan", "-1"])
def test_ray_resources_are_validated(option, text, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    # An --out that cannot be made: code that lets the value through stops there instead of running.
    code, err = _exit_code_and_error(capsys, "run", "--backbone", "small_cnn", "--data", "synthetic", option, text, "--out", tmp_path / "file" / "out")
    assert code == 2 and err.count("\n") == 0 and f"{option}: expected a finite number of 0 or more" in err, err


# --- 6: a repeated list option accumulates, or is refused; never silently dropped --------------


def test_every_list_option_accumulates_or_is_refused_when_repeated():
    from bench.options import GivenOnce

    for name, command in _subcommands():
        for action in command._actions:
            if action.option_strings and action.nargs in ("+", "*"):
                assert isinstance(action, (argparse._ExtendAction, GivenOnce)), f"{name} {action.option_strings[0]}"


def _plan(*argv):
    return plan_cells(RunRequest.from_args(build_parser().parse_args(["run", *argv])), native_size=32)


def test_a_second_set_adds_to_the_first():
    cells, _ = _plan("--backbone", "small_cnn", "--data", "synthetic", "--set", "learning_rate=0.01", "--set", "head_units=64")
    assert dict(cells[0].overrides) == {"learning_rate": 0.01, "head_units": 64}
    assert cells[0].recipe().learning_rate == 0.01 and cells[0].recipe().head_units == 64


def test_a_second_set_of_the_same_field_with_another_value_is_refused(capsys):
    code, err = _exit_code_and_error(capsys, "run", "--backbone", "small_cnn", "--data", "synthetic", "--set", "epochs=2", "--set", "epochs=3")
    assert code == 2 and "--set epochs given twice (2 and 3); keep one" in err, err


def test_repeated_backbones_sizes_and_policies_all_run():
    cells, _ = _plan("--backbone", "mobilenet_v2", "--backbone", "resnet50", "--stage", "transfer", "--image-size", "32", "--image-size", "48",
                     "--augment", "none", "--augment", "flip", "--data", "synthetic")
    assert {(c.backbone, c.image_size, c.augment) for c in cells} == {
        (b, s, a) for b in ("mobilenet_v2", "resnet50") for s in (32, 48) for a in ("none", "flip")}


def test_repeated_stages_all_run():
    cells, _ = _plan("--backbone", "mobilenet_v2", "--stage", "transfer", "--stage", "finetune", "--data", "synthetic")
    assert [c.stage for c in cells] == ["transfer", "finetune"]


def test_repeated_seeds_are_refused_rather_than_guessed(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code, err = _exit_code_and_error(capsys, "run", "--backbone", "small_cnn", "--data", "synthetic", "--seeds", "3", "--seeds", "5", "--out", tmp_path / "file" / "out")
    assert code == 2 and err.count("\n") == 0 and "--seeds given twice" in err, err


def test_cost_batch_sizes_accumulate_and_the_default_applies_only_when_none_is_given():
    def configs(*argv):
        return [(c.backbone, c.batch_size) for c in plan_costs(CostRequest.from_args(build_parser().parse_args(["cost", *argv])))]

    assert configs("--backbone", "small_cnn", "--batch-size", "8", "--batch-size", "16") == [("small_cnn", 8), ("small_cnn", 16)]
    assert configs("--backbone", "small_cnn", "--backbone", "mobilenet_v2") == [("small_cnn", 64), ("mobilenet_v2", 64)]


def test_perf_memory_keeps_every_repeated_backbone(tmp_path, capsys):
    # The first backbone is checked first: had it been dropped, mobilenet_v2's size error would come instead.
    code, err = _exit_code_and_error(capsys, "perf", "--memory", "--backbone", "small_cnn", "--backbone", "mobilenet_v2", "--image-size", "16", "--out", tmp_path / "o")
    assert code == 2 and "small_cnn runs only baseline" in err, err


# --- 8: one image-size bound for run, perf, perf --memory and cost ----------------------------


@pytest.mark.parametrize("argv", [
    ["cost", "--backbone", "mobilenet_v2", "--image-size", "2048"],
    ["cost", "--backbone", "mobilenet_v2", "--image-size", "64", "--image-size", "5000"],
    ["perf", "--memory", "--backbone", "mobilenet_v2", "--image-size", "2048"],
])
def test_cost_and_perf_memory_enforce_the_image_size_bound(argv, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    # An --out that cannot be made: code without the bound stops there instead of measuring 2,048 px.
    code, err = _exit_code_and_error(capsys, *argv, "--out", blocker / "out")
    assert code == 2 and err.count("\n") == 0 and "is over the 1,024 px limit" in err and "--allow-large-images" in err, err


@pytest.mark.parametrize("command", [["cost", "--backbone", "mobilenet_v2"], ["perf", "--memory", "--backbone", "mobilenet_v2"]])
def test_allow_large_images_lifts_the_bound(command, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    # The size passes; the next check (an --out that cannot be made) is what stops it, before any work.
    code, err = _exit_code_and_error(capsys, *command, "--image-size", "2048", "--allow-large-images", "--out", blocker / "out")
    assert code == 2 and "1,024 px limit" not in err and "writable folder" in err, err


def test_cost_refuses_an_image_folder_over_the_bound_for_a_scratch_backbone(tmp_path, capsys):
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / "big" / split / name).mkdir(parents=True)
            Image.fromarray(np.zeros((1100, 1100, 3), np.uint8)).save(tmp_path / "big" / split / name / "0.png")
    (tmp_path / "file").write_text("")
    code, err = _exit_code_and_error(capsys, "cost", "--backbone", "small_cnn", "--data", tmp_path / "big", "--out", tmp_path / "file" / "out")
    assert code == 2 and "the images' own size in --data, 1100 px, is over the 1,024 px limit" in err, err


# --- 9: shards remember their grid; merging shards of different grids names the missing cells ---


def test_shards_of_different_grids_warn_and_list_the_missing_cells(tmp_path):
    from bench.plan import grid_fingerprint, shard_cells
    from bench.shard_plans import shard_warnings, write_shard_plan

    two, _ = _plan("--backbone", "small_cnn", "--data", "synthetic", "--seeds", "2")
    four, _ = _plan("--backbone", "small_cnn", "--data", "synthetic", "--seeds", "4")
    first, second = shard_cells(two, 0, 2), shard_cells(four, 1, 2)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    write_shard_plan(tmp_path / "a", 0, 2, grid_fingerprint(two), [c.key for c in two], [c.key for c in first])
    write_shard_plan(tmp_path / "b", 1, 2, grid_fingerprint(four), [c.key for c in four], [c.key for c in second])
    lines = shard_warnings([tmp_path / "a", tmp_path / "b"])
    missing = sorted({c.key for c in two + four} - {c.key for c in first + second})
    assert [c.seed for c in four if c.key in missing] == [2]  # seed 2 is in neither shard
    assert lines[0].startswith("warning: these shards were planned from 2 different grids") and f"{len(missing)} cell(s) fall in no merged shard" in lines[0]
    assert lines[1:] == [f"  missing: {key}" for key in missing]


def test_shards_of_one_grid_merge_without_a_warning(tmp_path):
    from bench.plan import grid_fingerprint, shard_cells
    from bench.shard_plans import shard_warnings, write_shard_plan

    cells, _ = _plan("--backbone", "small_cnn", "--data", "synthetic", "--seeds", "3")
    for index, folder in enumerate(("a", "b")):
        (tmp_path / folder).mkdir()
        write_shard_plan(tmp_path / folder, index, 2, grid_fingerprint(cells), [c.key for c in cells], [c.key for c in shard_cells(cells, index, 2)])
    assert shard_warnings([tmp_path / "a", tmp_path / "b"]) == []
    assert shard_warnings([tmp_path / "nowhere"]) == []


def test_run_shards_keep_their_plan_and_report_warns_on_a_mixed_merge(tmp_path, monkeypatch, capsys):
    from bench.commands import run as run_command

    monkeypatch.setattr("bench.sweep.run_sweep", lambda cells, *a, **k: SimpleNamespace(write_error=None, failed=0, records=[]))
    monkeypatch.setattr(run_command, "write_report", lambda out: [])
    base = ["run", "--backbone", "small_cnn", "--data", "synthetic", "--profile", "quick", "--cache-dir", str(tmp_path / "cache")]
    assert main([*base, "--seeds", "2", "--shard", "0/2", "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--seeds", "4", "--shard", "1/2", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "shard-0-of-2.json").is_file() and (tmp_path / "b" / "shard-1-of-2.json").is_file()
    capsys.readouterr()
    out = tmp_path / "merged"
    out.mkdir()
    shutil.copy(FIXTURE, out / RUNS_FILE)
    monkeypatch.undo()
    assert main(["report", "--out", str(out), str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "planned from 2 different grids" in err and "missing: small_cnn/baseline/" in err and "/seed2/" in err, err


# --- 10: start-up survives closed standard streams ----------------------------------------------


def _bench_with_closed(fds: str, *argv):
    """``python -m bench ARGV`` with the named descriptors closed, as ``2>&-`` leaves them."""
    import os

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    script = f'exec "$@" {fds}'
    return subprocess.run(["bash", "-c", script, "bash", sys.executable, "-m", "bench", *map(str, argv)], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, timeout=300)


def test_run_with_stderr_closed_exits_with_the_errors_own_code(tmp_path):
    """A bad image folder is found inside the block that moves fd 2: with fd 2 closed it used to end as a silent exit 1."""
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / "data" / split / name).mkdir(parents=True)
    (tmp_path / "data" / "train" / "a" / "bad.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(FIXTURE, out / RUNS_FILE)
    done = _bench_with_closed("2>&-", "run", "--backbone", "small_cnn", "--profile", "quick", "--data", tmp_path / "data", "--out", out, "--cache-dir", tmp_path / "cache")
    assert done.returncode == 2
    assert sorted(p.name for p in out.iterdir()) == [RUNS_FILE] and (out / RUNS_FILE).read_bytes() == FIXTURE.read_bytes()


@pytest.mark.parametrize("fds", ["2>&-", "<&- >&- 2>&-"])
def test_list_and_argument_errors_with_streams_closed(fds):
    assert _bench_with_closed(fds, "list").returncode == 0
    assert _bench_with_closed(fds, "run", "--backbone", "small_cnn", "--seed", "-1").returncode == 2


# --- 11: messages name the path actually used ---------------------------------------------------


def test_offline_weights_hint_names_keras_home(tmp_path, monkeypatch, capsys):
    import keras

    home = tmp_path / "keras-home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.example/keras-applications/mobilenet_v2_no_top.h5: None")

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    code, err = _exit_code_and_error(capsys, "run", "--backbone", "mobilenet_v2", "--weights", "imagenet", "--data", "synthetic", "--out", tmp_path / "out")
    assert code == 2 and f"place mobilenet_v2_no_top.h5 from https://storage.example/keras-applications/mobilenet_v2_no_top.h5 in {home / 'models'}/," in err, err
    assert "~/.keras" not in err


def test_offline_cifar10_hint_names_keras_home(tmp_path, monkeypatch, capsys):
    import keras

    home = tmp_path / "keras-home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))

    def offline():
        raise OSError("Name or service not known")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    code, err = _exit_code_and_error(capsys, "run", "--backbone", "small_cnn", "--profile", "quick", "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache")
    assert code == 2 and f"as {home / 'datasets' / 'cifar-10-batches-py-target_archive'} (Keras's cache name" in err, err


def test_an_unwritable_keras_home_is_named_as_keras_falls_back_to_tmp(tmp_path, monkeypatch):
    from bench.keras_home import keras_cache_dir

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "does-not-exist"))
    assert keras_cache_dir() == Path("/tmp/.keras")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert keras_cache_dir() == tmp_path


def test_a_full_disk_under_readme_names_the_readme_not_the_out_folder(tmp_path, monkeypatch, capsys):
    import os

    from bench import files, publish

    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(FIXTURE, out / RUNS_FILE)
    readme = tmp_path / "docs" / "README.md"
    readme.parent.mkdir()
    original = f"# Project\n\n{publish.README_START}\nold\n{publish.README_END}\n"
    readme.write_text(original)
    replace = os.replace

    def full_disk_for_the_readme(source, destination):
        if Path(destination) == readme:
            raise OSError(errno.ENOSPC, "No space left on device")
        replace(source, destination)

    monkeypatch.setattr(files.os, "replace", full_disk_for_the_readme)
    code, err = _exit_code_and_error(capsys, "report", "--out", out, "--readme", readme)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1, err
    assert f"could not write the report file {readme}: No space left on device" in errors[0] and f"--readme {readme}" in errors[0], err
    assert readme.read_text() == original
