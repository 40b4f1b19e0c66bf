"""``bench perf --memory``: its checks (one line, exit 2) and its output (ratio lines and table)."""

import re

import pytest

from bench.cli import main
from conftest import run_cli


@pytest.mark.parametrize("argv,message", [
    (["--train-images", "5000"], "needs two sizes or more"),
    (["--backbone", "small_cnn"], "runs only baseline"),
    (["--train-images", "100", "100000"], "needs 111,110 training images before the validation split, but synthetic has 600"),
    (["--backbone", "mobilenet_v2", "resnet50", "--weights", __file__], "--weights FILE fits a single backbone"),
    (["--image-size", "8"], "below mobilenet_v2's minimum"),
])
def test_perf_memory_bad_input_is_one_line(argv, message, tmp_path, capsys):
    assert main(["perf", "--memory", "--data", "synthetic", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out" / "perf-memory.md").exists()


@pytest.mark.parametrize("argv,message", [
    (["--train-images", "100", "200"], "--train-images sizes the --memory benchmark"),
    (["--timing-runs", "3"], "--timing-runs repeats the --memory benchmark's timed cells"),
    (["--backbone", "mobilenet_v2", "resnet50"], "pass one --backbone, or several with --memory"),
])
def test_memory_options_without_memory_are_one_line(argv, message, tmp_path, capsys):
    assert main(["perf", "--data", "synthetic", "--out", str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_the_loaders_alternate_at_the_largest_size():
    from bench.perf import memory_plan

    # The size runs are not timed (the largest one's transfer cell has just extracted the cache),
    # so each loader gets its own warm runs.
    assert memory_plan([300, 100], 1) == [(100, "batched"), (300, "batched"), (300, "in-memory"), (300, "batched")]
    assert memory_plan([100, 300], 3) == [
        (100, "batched"), (300, "batched"), (300, "in-memory"), (300, "batched"), (300, "in-memory"), (300, "batched"), (300, "in-memory"), (300, "batched"),
    ]


def test_the_time_ratio_is_of_medians_so_one_slow_run_does_not_decide_it():
    from bench.grid import Cell
    from bench.perf import MemoryGrowth
    from bench.records import Record

    def run(loader, seconds, images=300):
        cell = Cell("mobilenet_v2", "finetune", 32, "none", 0, data="synthetic", profile="full", train_images=images)
        path = "cached" if loader == "batched" else f"cached-{loader}"
        return Record(**cell.record_fields(), status="ok", train_seconds=seconds, peak_anon_mb=100.0, path=path)

    small, largest = run("batched", 10.0, images=100), run("batched", 30.0)
    growth = MemoryGrowth("mobilenet_v2", "finetune", (small, largest), (run("batched", 99.0), run("batched", 31.0), run("batched", 32.0)),
                          (run("in-memory", 20.0), run("in-memory", 30.0), run("in-memory", 5.0)))
    # The size run (30 s, cold cache) is not among the timed runs.
    assert growth.time_ratio == pytest.approx(32.0 / 20.0)


def test_perf_memory_drives_its_cells_and_writes_the_table(tmp_path, tiny_backbones, cells_in_process):
    """The real driver, cells and table, with each cell run in this process instead of a child
    of its own (twelve TensorFlow processes); the slow test below runs them isolated, as a user's run does."""
    code = main(["perf", "--memory", "--backbone", "tiny_net", "--data", "synthetic", "--image-size", "32", "--train-images", "100", "300", "--epochs", "1",
                 "--timing-runs", "1", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    text = (tmp_path / "out" / "perf-memory.md").read_text()
    for stage in ("transfer", "finetune"):
        assert re.search(rf"`tiny_net` {stage}: peak memory growth 300/100 training images: \d+\.\d\dx", text), text
        assert re.search(rf"`tiny_net` {stage}: cached training time vs in-memory path: \d+\.\d\dx", text), text
    rows = [line for line in text.splitlines() if line.startswith("| `tiny_net`")]
    # Per stage: both sizes, then one timed run of each loader at the largest.
    assert len(rows) == 8 and [re.split(r" *\| *", row)[4:7] for row in rows[:4]] == [
        ["per batch", "", "100"], ["per batch", "", "300"], ["per batch", "1", "300"], ["in-memory (old)", "1", "300"]], text
    assert not (tmp_path / "cache" / "features").exists()


@pytest.mark.slow
def test_perf_memory_prints_the_ratios_and_writes_the_table(tmp_path, tiny_backbones):
    """As a user runs it: every cell in a child process of its own (twelve here). Slow."""
    # Twelve TensorFlow processes: 600 s ran out on the loaded 2-core machine beside the 20,000-image test (two workers).
    result = run_cli("perf", "--memory", "--backbone", "tiny_net", "--data", "synthetic", "--image-size", "32", "--train-images", "100", "300", "--epochs", "1",
                     "--timing-runs", "2", "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache", timeout=1800)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "out" / "perf-memory.md").read_text()
    assert result.stdout.strip() == text.strip()
    for stage in ("transfer", "finetune"):
        assert re.search(rf"`tiny_net` {stage}: peak memory growth 300/100 training images: \d+\.\d\dx", text), text
        assert re.search(rf"`tiny_net` {stage}: cached training time vs in-memory path: \d+\.\d\dx", text), text
        # The seconds behind each ratio: two runs of each loader, with their medians.
        assert re.search(rf"`tiny_net` {stage} at 300 training images, train s: per batch [\d.]+, [\d.]+ \(median [\d.]+\); "
                         rf"in-memory [\d.]+, [\d.]+ \(median [\d.]+\)", text), text
    assert re.search(r"the `bench` process itself \(decoding and checking the data\): [\d,]+ MB", text)
    rows = [line for line in text.splitlines() if line.startswith("| `tiny_net`")]
    # Per stage: both sizes, then two timed runs of each loader at the largest.
    assert len(rows) == 12 and sum("in-memory (old)" in row for row in rows) == 4
    assert [re.split(r" *\| *", row)[4:7] for row in rows[:6]] == [
        ["per batch", "", "100"], ["per batch", "", "300"], ["per batch", "1", "300"], ["per batch", "2", "300"],
        ["in-memory (old)", "1", "300"], ["in-memory (old)", "2", "300"],
    ]
    assert all(re.search(r"\| \d[\d,]* +\| \d[\d,]* +\|", row) for row in rows)  # peak anon and RSS measured
    # A fresh activation cache per run, removed afterwards: nothing of it lands in --cache-dir.
    assert not (tmp_path / "cache" / "features").exists()


@pytest.mark.slow
def test_a_20000_image_folder_at_160_px_trains_within_2500_mb(tmp_path):
    """Issue 15's target for a user's own large folder: a MobileNetV2 transfer cell on 20,000
    training images of 160 px (about 1.5 GB decoded) peaks within 2,500 MB of anonymous memory.
    Slow (several minutes on 2 cores): `pytest -m slow tests/test_perf_memory.py`."""
    import numpy as np
    from PIL import Image

    from bench.records import read_records

    data = tmp_path / "folder160"
    rng = np.random.default_rng(0)
    side = np.arange(160)
    for split, per_class in (("train", 2000), ("test", 50)):
        for label in range(10):
            folder = data / split / f"class{label}"
            folder.mkdir(parents=True)
            # Smooth class-coloured gradients with noise: JPEG keeps them small on disk.
            base = (side[:, None, None] * (label + 1) + side[None, :, None] * (10 - label) + np.array([0, 60, 120])) % 256
            for i in range(per_class):
                pixels = np.clip(base + rng.normal(0, 20, (160, 160, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=85)
    result = run_cli("run", "--backbone", "mobilenet_v2", "--stage", "transfer", "--epochs", "1", "--weights", "none", "--augment", "none",
                     "--data", data, "--cache-dir", tmp_path / "cache", "--out", tmp_path / "out", timeout=3000)
    assert result.returncode == 0, result.stderr
    (record,) = read_records(tmp_path / "out").records
    assert record.train_images == 18000 and record.image_size == 128 and record.path == "cached"
    assert record.peak_anon_mb <= 2500, record.peak_anon_mb
