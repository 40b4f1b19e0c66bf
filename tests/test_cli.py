import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.records import RUNS_FILE, read_records
from conftest import run_cli


@pytest.fixture
def out_with_records(tmp_path):
    """An output folder holding earlier records, which no error may touch."""
    out = tmp_path / "out"
    out.mkdir()
    (out / RUNS_FILE).write_bytes((__import__("pathlib").Path(__file__).parent / "fixtures" / RUNS_FILE).read_bytes())
    return out


def _image_tree(root, classes=("a", "b"), per_class=4):
    for split in ("train", "test"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / split / name / f"{i}.png")
    return root


def _error(capsys, *argv):
    code = main(list(map(str, argv)))
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("command", [[], ["list"], ["run"], ["report"], ["compare"], ["perf"], ["cost"], ["prefetch"], ["cache"]])
def test_help_on_every_command(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_list_shows_backbones_stages_and_policies(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("small_cnn", "mobilenet_v2", "efficientnet_b0", "resnet50", "baseline", "transfer", "finetune", "flip-crop", "randaugment"):
        assert word in out


def test_unknown_backbone_lists_valid_names(out_with_records, capsys):
    before = (out_with_records / RUNS_FILE).read_bytes()
    code, err = _error(capsys, "run", "--backbone", "mobilenet", "--data", "synthetic", "--out", out_with_records)
    assert code == 2 and err.count("\n") == 0
    assert "unknown backbone 'mobilenet'" in err and "mobilenet_v2" in err and "small_cnn" in err
    assert (out_with_records / RUNS_FILE).read_bytes() == before


@pytest.mark.parametrize("argv,message", [
    (["--stage", "pretrain"], "invalid choice: 'pretrain'"),
    (["--augment", "cutout"], "invalid choice: 'cutout'"),
    (["--image-size", "0"], "expected a positive integer"),
])
def test_argument_errors_exit_2_with_choices(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--backbone", "small_cnn", "--data", "synthetic", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_unsupported_stage_names_the_supported_ones(out_with_records, capsys):
    code, err = _error(capsys, "run", "--backbone", "small_cnn", "--stage", "transfer", "--data", "synthetic", "--out", out_with_records)
    assert code == 2 and "does not support stage(s) transfer; it runs: baseline" in err


def test_image_size_below_minimum(capsys, tmp_path):
    code, err = _error(capsys, "run", "--backbone", "mobilenet_v2", "--image-size", "16", "--data", "synthetic", "--out", tmp_path / "o")
    assert code == 2 and "below mobilenet_v2's minimum of 32 px" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("breakage,message", [
    ("no_test", "has no test/ subfolder"),
    ("mismatch", "different classes"),
    ("corrupt", "cannot read image .*bad.png"),
])
def test_bad_data_folder(breakage, message, tmp_path, out_with_records, capsys):
    root = _image_tree(tmp_path / "data")
    if breakage == "no_test":
        __import__("shutil").rmtree(root / "test")
    elif breakage == "mismatch":
        (root / "test" / "b").rename(root / "test" / "c")
    else:
        (root / "train" / "a" / "bad.png").write_bytes(b"\x89PNG broken")
    before = (out_with_records / RUNS_FILE).read_bytes()
    code, err = _error(capsys, "run", "--backbone", "small_cnn", "--data", root, "--out", out_with_records, "--cache-dir", tmp_path / "cache")
    assert code == 2
    assert __import__("re").search(message, err), err
    assert (out_with_records / RUNS_FILE).read_bytes() == before


def test_weights_file_for_another_architecture(tmp_path, out_with_records, capsys):
    import keras

    keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(tmp_path / "mnv2.weights.h5")
    code, err = _error(capsys, "run", "--backbone", "resnet50", "--weights", tmp_path / "mnv2.weights.h5", "--data", "synthetic", "--out", out_with_records)
    assert code == 2 and "does not fit resnet50" in err and err.count("\n") == 0


def test_weights_dir_falls_back_and_says_so(tmp_path, capsys):
    from bench.cli import build_parser, plan_cells

    args = build_parser().parse_args(["run", "--all", "--weights", str(tmp_path), "--data", "synthetic", "--profile", "quick"])
    cells, notes = plan_cells(args, native_size=32)
    assert {c.weights for c in cells} == {"none"}
    assert any("mobilenet_v2" in n and "running from none" in n for n in notes)
    # Every backbone with each of its stages, transfer before its finetune.
    assert [(c.backbone, c.stage) for c in cells] == [
        ("efficientnet_b0", "transfer"), ("efficientnet_b0", "finetune"), ("mobilenet_v2", "transfer"), ("mobilenet_v2", "finetune"),
        ("resnet50", "transfer"), ("resnet50", "finetune"), ("small_cnn", "baseline")]


def test_imagenet_download_failure_says_where_to_put_the_file(monkeypatch, out_with_records, capsys):
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.example/keras-applications/mobilenet_v2_no_top.h5: None -- Name or service not known")

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    code, err = _error(capsys, "run", "--backbone", "mobilenet_v2", "--weights", "imagenet", "--data", "synthetic", "--out", out_with_records)
    assert code == 2 and "place mobilenet_v2_no_top.h5 from https://" in err and "~/.keras/models/" in err


def test_out_folder_not_writable(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, err = _error(capsys, "run", "--backbone", "small_cnn", "--data", "synthetic", "--out", blocker / "sub")
    assert code == 2 and "cannot create --out folder" in err


def test_report_input_missing(tmp_path, capsys):
    code, err = _error(capsys, "report", "--out", tmp_path, tmp_path / "nope")
    assert code == 2 and "does not exist" in err


def test_report_readme_without_markers_is_refused_before_writing(tmp_path, out_with_records, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# Project\n")
    before = sorted(p.name for p in out_with_records.iterdir())
    code, err = _error(capsys, "report", "--out", out_with_records, "--readme", readme)
    assert code == 2 and "markers" in err and "bench report: start" in err
    assert readme.read_text() == "# Project\n"
    assert sorted(p.name for p in out_with_records.iterdir()) == before
    code, err = _error(capsys, "report", "--out", out_with_records, "--readme", tmp_path / "missing.md")
    assert code == 2 and "does not exist" in err


def test_end_to_end_run_on_synthetic(tmp_path):
    out = tmp_path / "out"
    result = run_cli("run", "--backbone", "small_cnn", "mobilenet_v2", "--data", "synthetic", "--profile", "quick", "--image-size", "32", "--out", out, "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[3/3]" in result.stderr and "left" in result.stderr
    records = read_records(out).records
    assert sorted((r.backbone, r.stage, r.status) for r in records) == [
        ("mobilenet_v2", "finetune", "ok"), ("mobilenet_v2", "transfer", "ok"), ("small_cnn", "baseline", "ok")]
    assert all(r.command.startswith("python -m bench run --backbone small_cnn mobilenet_v2 --data synthetic") for r in records)
    for name in ("README.md", "summary.csv", "accuracy_by_stage.png", "accuracy_vs_throughput.png", "training_curves.png"):
        assert (out / name).stat().st_size > 0
    assert "Command(s): `python -m bench run --backbone small_cnn" in (out / "README.md").read_text()
    assert list((out / "artifacts").glob("*transfer*.head.weights.h5"))
    # --resume then has nothing to do.
    again = run_cli("run", "--backbone", "small_cnn", "--data", "synthetic", "--profile", "quick", "--out", out, "--resume", "--cache-dir", tmp_path / "cache")
    assert again.returncode == 0 and "1 of 1 cells already have an ok record" in again.stderr
    assert len(read_records(out).records) == 3


def test_perf_prints_ratios_and_writes_perf_md(tmp_path):
    result = run_cli("perf", "--data", "synthetic", "--backbone", "mobilenet_v2", "--image-size", "32", "--epochs", "1", "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    import re

    for stage in ("transfer", "finetune"):
        assert re.search(rf"{stage} cached vs uncached: \d+\.\dx", result.stdout)
    text = (tmp_path / "perf.md").read_text()
    assert "harness overhead" in text and "| transfer" in text and "| finetune" in text


def test_shards_partition_the_grid_and_keep_finetune_with_transfer():
    from bench.cli import build_parser, plan_cells, shard_cells

    args = build_parser().parse_args(["run", "--all", "--data", "synthetic", "--seeds", "3", "--image-size", "32", "48"])
    cells, _ = plan_cells(args, native_size=32)
    assert {c.seed for c in cells} == {0, 1, 2} and len(cells) == 3 * 2 * 7 - 3  # baseline keeps its one native size
    listed, _ = plan_cells(build_parser().parse_args(["run", "--backbone", "small_cnn", "--data", "synthetic", "--seeds", "7", "0"]), native_size=32)
    assert [c.seed for c in listed] == [0, 7]
    shards = [shard_cells(cells, i, 4) for i in range(4)]
    assert sorted(c.key for s in shards for c in s) == sorted(c.key for c in cells)
    assert all(shards)
    for shard in shards:
        transfers = {(c.backbone, c.image_size, c.seed) for c in shard if c.stage == "transfer"}
        assert all((c.backbone, c.image_size, c.seed) in transfers for c in shard if c.stage == "finetune")


def test_bad_shard_rejected(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--all", "--shard", "4/4"])
    assert info.value.code == 2 and "0 <= INDEX < COUNT" in capsys.readouterr().err


def test_compare_flags_only_real_regressions(tmp_path, capsys):
    import dataclasses

    from bench.records import append_record

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    for record in read_records(__import__("pathlib").Path(__file__).parent / "fixtures" / RUNS_FILE).records:
        append_record(old, record)
        slower = record.backbone == "small_cnn"
        append_record(new, dataclasses.replace(record, infer_images_per_second=record.infer_images_per_second * (0.5 if slower else 0.99), tf_version="9.9"))
    assert main(["compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "different machines or software" in out and "tf_version: 2.21.0 -> 9.9" in out
    assert out.count("**REGRESSION**") == 1 and "1 regression(s)" in out
    assert main(["compare", str(old), str(new), "--fail-on-regression"]) == 1
    assert main(["compare", str(old), str(old), "--fail-on-regression"]) == 0
    assert main(["compare", str(old), str(new), "--fail-on-regression", "--fail-threshold", "60"]) == 0


def test_resume_reruns_a_cell_whose_settings_changed_and_the_report_keeps_both(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["run", "--backbone", "small_cnn", "--data", "synthetic", "--profile", "quick", "--out", out, "--cache-dir", cache]
    assert run_cli(*argv).returncode == 0
    changed = run_cli(*argv, "--batch-size", "64", "--resume")
    assert changed.returncode == 0, changed.stderr[-1500:]
    assert "already have an ok record" not in changed.stderr
    same = run_cli(*argv, "--batch-size", "64", "--resume")
    assert "1 of 1 cells already have an ok record; running 0" in same.stderr
    records = read_records(out).records
    assert [r.identity["batch_size"] for r in records] == [128, 64]
    text = (out / "README.md").read_text()
    assert text.count("| small_cnn") == 2 * 2  # two rows in the accuracy table and two in the cost table
    assert "batch 64" in text
