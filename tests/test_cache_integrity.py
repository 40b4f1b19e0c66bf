"""The caches check what they read: entries checked and verified by content on every open, healed
when damaged; no temporaries left by dead writers; no extraction that cannot fit on the disk."""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bench import cache_entries, files
from bench.cache_entries import DAMAGED_DIR, check_free_space, open_entry, remove_stale_temporaries, temporary_path, write_entry
from bench.cache_manifest import legacy_checksum_path, read_record, record_path
from bench.errors import UsageError


def _entry(tmp_path, values=None):
    values = np.arange(6 * 4 * 4 * 3, dtype="float32").reshape(6, 4, 4, 3) if values is None else values
    entry = tmp_path / "features" / "abc.npy"
    write_entry(entry, values.shape, values.dtype, lambda array: array.__setitem__(slice(None), values))
    return entry, values


def _notes(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_an_entry_round_trips_memory_mapped_and_is_listed_with_its_checksum(tmp_path):
    entry, values = _entry(tmp_path)
    record = read_record(entry)
    assert record["kind"] == "features" and record["name"] == "abc.npy" and record["bytes"] == entry.stat().st_size
    assert record["sha256"] == hashlib.sha256(entry.read_bytes()).hexdigest()
    for _ in range(2):
        opened = open_entry(entry, 6, "float32", (4, 4, 3))
        assert isinstance(opened, np.memmap) and np.array_equal(opened, values)


def _flip_keeping_size_and_time(entry, offset=-5):
    """One flipped byte in the values, the size and modification time as they were (bit rot)."""
    stat = entry.stat()
    data = bytearray(entry.read_bytes())
    data[offset] ^= 0xFF
    entry.write_bytes(bytes(data))
    os.utime(entry, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (entry.stat().st_size, entry.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)


@pytest.mark.parametrize("opens_before", [0, 1, 3])
def test_bit_rot_after_verification_is_caught_with_size_and_time_unchanged(tmp_path, capsys, opens_before):
    entry, values = _entry(tmp_path)
    for _ in range(opens_before):
        assert np.array_equal(open_entry(entry, 6, "float32", (4, 4, 3)), values)
    _flip_keeping_size_and_time(entry)
    notes = []
    assert open_entry(entry, 6, "float32", (4, 4, 3), notes) is None
    assert "checksum mismatch" in notes[0] and "checksum mismatch" in capsys.readouterr().err
    assert not entry.exists() and (entry.parent / DAMAGED_DIR / entry.name).exists()


def test_a_damaged_copy_restored_with_its_time_is_caught(tmp_path, capsys):
    # What ``cp -p`` (or ``rsync -t``) of a damaged backup over a verified entry leaves.
    entry, _ = _entry(tmp_path)
    assert open_entry(entry) is not None
    backup = tmp_path / "backup.npy"
    shutil.copy2(entry, backup)
    _flip_keeping_size_and_time(backup, offset=-1)
    shutil.copy2(backup, entry)
    assert open_entry(entry) is None
    assert "checksum mismatch" in capsys.readouterr().err


@pytest.mark.parametrize("damage,problem", [
    (lambda path: os.truncate(path, path.stat().st_size - 100), "truncated"),
    (lambda path: path.write_bytes(path.read_bytes() + b"\0" * 64), "too long"),
    (lambda path: path.write_bytes(b"not an npy file at all" * 10), "unreadable .npy header"),
])
def test_a_damaged_entry_is_moved_aside_with_one_line(tmp_path, capsys, damage, problem):
    entry, _ = _entry(tmp_path)
    damage(entry)
    notes = []
    assert open_entry(entry, 6, "float32", (4, 4, 3), notes) is None
    aside = entry.parent / DAMAGED_DIR / entry.name
    assert not entry.exists() and aside.exists()
    # The damaged copy is the manifest's (``--clear`` removes it), the entry is no longer.
    assert read_record(entry) is None and read_record(aside, tmp_path)["kind"] == "features/damaged" and problem in read_record(aside, tmp_path)["problem"]
    (line,) = _notes(capsys)
    assert problem in line and entry.name in line and "recomputing" in line and notes == [line.removeprefix("note: ")]


@pytest.mark.parametrize("verified_first", [False, True])
def test_same_size_corruption_is_caught_by_the_checksum(tmp_path, capsys, verified_first):
    entry, _ = _entry(tmp_path)
    if verified_first:
        assert open_entry(entry) is not None
    data = bytearray(entry.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the values: the header still matches the size
    time.sleep(0.01)
    entry.write_bytes(bytes(data))
    assert open_entry(entry) is None
    assert "checksum mismatch" in capsys.readouterr().err


def test_another_shape_than_expected_is_damage(tmp_path, capsys):
    entry, _ = _entry(tmp_path)
    assert open_entry(entry, rows=7) is None
    assert "holds float32 (6, 4, 4, 3)" in capsys.readouterr().err


def test_an_entry_without_checksum_is_removed_not_kept(tmp_path, capsys):
    entry, _ = _entry(tmp_path)
    record_path(entry).unlink()
    assert open_entry(entry) is None
    assert not entry.exists() and not (entry.parent / DAMAGED_DIR).exists()
    assert "no checksum" in capsys.readouterr().err


def test_an_older_cache_s_entry_is_verified_by_its_checksum_file_and_adopted(tmp_path, capsys):
    entry, values = _entry(tmp_path)
    # As an older bench left it: a .sha256 beside the entry, no manifest record.
    legacy_checksum_path(entry).write_text(read_record(entry)["sha256"] + "\n")
    record_path(entry).unlink()
    assert np.array_equal(open_entry(entry, 6, "float32", (4, 4, 3)), values)
    assert read_record(entry)["sha256"] == hashlib.sha256(entry.read_bytes()).hexdigest() and not legacy_checksum_path(entry).exists()
    # Adopted or not, its content is what is checked.
    legacy_checksum_path(entry).write_text("0" * 64 + "\n")
    record_path(entry).unlink()
    assert open_entry(entry) is None and "checksum mismatch" in capsys.readouterr().err


def test_a_failed_write_leaves_nothing(tmp_path):
    entry = tmp_path / "features" / "abc.npy"

    def fail(array):
        array[:2] = 1
        raise RuntimeError("extraction failed")

    with pytest.raises(RuntimeError):
        write_entry(entry, (4, 3), "float32", fail)
    assert sorted(p.name for p in entry.parent.iterdir()) == []


def test_stale_temporaries_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    folder = tmp_path / "features"
    folder.mkdir()
    ours = temporary_path(folder / "a.npy")
    theirs = folder / f"b.{dead}@{cache_entries._HOST}.tmp.npy"
    legacy = folder / f"c.{dead}.tmp.npy"  # the old naming, without a host
    other_host_recent = folder / "d.1@elsewhere.tmp.npy"
    other_host_old = folder / "e.1@elsewhere.tmp.npy"
    # Checksums being written (named as files.write_text names them): a dead writer's, and ours.
    checksum_ours = files.temporary_path(folder / "g.npy.sha256")
    checksum_of_dead = folder / checksum_ours.name.replace(f"-{os.getpid()}-", f"-{dead}-", 1)
    legacy_checksum_of_dead = folder / f"h.npy.sha256.{dead}.tmp"  # the old sidecar naming
    # A manifest record a dead writer was writing.
    record_of_dead = record_path(folder / "i.npy").parent / checksum_of_dead.name.replace("g.npy.sha256", "i.npy.json")
    record_of_dead.parent.mkdir(parents=True)
    for path in (ours, theirs, legacy, other_host_recent, other_host_old, checksum_of_dead, checksum_ours, legacy_checksum_of_dead, record_of_dead):
        path.write_bytes(b"x")
    os.utime(other_host_old, (1, 1))
    removed = remove_stale_temporaries(folder)
    assert sorted(p.name for p in removed) == sorted([theirs.name, legacy.name, other_host_old.name, checksum_of_dead.name, legacy_checksum_of_dead.name, record_of_dead.name])
    assert ours.exists() and other_host_recent.exists() and checksum_ours.exists()


def test_a_killed_writer_leaves_a_temporary_the_next_run_removes(tmp_path):
    folder = tmp_path / "features"
    script = (
        "import sys, time; from pathlib import Path; from bench.cache_entries import write_entry\n"
        f"write_entry(Path({str(folder / 'abc.npy')!r}), (1000, 100), 'float32', lambda a: (print('writing', flush=True), time.sleep(60)))\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert [p.name for p in folder.glob("*.tmp.npy")] != []
    remove_stale_temporaries(folder)
    assert list(folder.glob("*.tmp.npy")) == [] and not (folder / "abc.npy").exists()


def test_no_room_on_the_disk_fails_early_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_entries.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 10**9})())
    check_free_space(tmp_path / "not" / "yet", 5 * 10**8, "the activation cache")
    with pytest.raises(UsageError) as error:
        check_free_space(tmp_path / "not" / "yet", 2 * 10**9, "the activation cache")
    message = str(error.value)
    assert "\n" not in message and "needs 2.00 GB" in message and "1.00 GB is free" in message and "--cache-dir" in message


# --------------------------------------------------------------------------- the caches in a cell


def _transfer_cell():
    from bench.grid import Cell

    return Cell("tiny_net", "transfer", 32, "none", 0, data="synthetic", weights="none", epochs=1, batch_size=32)


def test_a_damaged_activation_cache_heals_and_the_record_says_so(tmp_path, tiny_backbones):
    from bench.cell import run_cell

    out, cache = tmp_path / "out", tmp_path / "cache"
    first = run_cell(_transfer_cell(), out, cache)
    entries = sorted((cache / "features").glob("*.npy"))
    assert first.status == "ok" and first.notes == "" and len(entries) == 8
    for damage in ("truncate", "same-size"):
        for entry in entries:
            if damage == "truncate":
                os.truncate(entry, entry.stat().st_size // 2)
            else:
                _flip_keeping_size_and_time(entry, offset=-3)  # after the first run verified them
        again = run_cell(_transfer_cell(), out, cache)
        # The four inputs' pooled features are what this cell opens: each is reported, recomputed
        # (rewriting the finetune cut beside it), and the result is what it was.
        notes = again.notes.split("; ")
        assert again.status == "ok" and len(notes) == 4, again.notes
        assert all(("truncated" if damage == "truncate" else "checksum mismatch") in note for note in notes)
        assert again.test_accuracy == first.test_accuracy
        assert sorted((cache / "features").glob("*.npy")) == entries
        assert all(open_entry(entry) is not None for entry in entries)
    assert list((cache / "features").glob("*.tmp.npy")) == []


def test_an_activation_cache_that_cannot_fit_fails_before_extracting(tmp_path, monkeypatch, tiny_backbones):
    from bench.cell import run_cell

    # Room for the decoded data, not for the activations.
    monkeypatch.setattr(cache_entries.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 10**5})())
    with pytest.raises(UsageError, match=r"the activation cache of this cell \(4 inputs\) needs 0\.\d+ GB .* free space, or pass --cache-dir"):
        run_cell(_transfer_cell(), tmp_path / "out", tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.npy"))


def _image_folder(folder):
    from PIL import Image

    for split, count in (("train", 12), ("test", 4)):
        for label in range(3):
            (folder / split / f"class{label}").mkdir(parents=True)
            for i in range(count):
                pixels = np.random.default_rng(label * 100 + i).integers(0, 255, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / split / f"class{label}" / f"{i}.png")
    return folder


def test_bit_rot_in_a_decoded_dataset_is_rebuilt_not_used(tmp_path, capsys):
    from bench.data import load_image_folder

    data, cache = _image_folder(tmp_path / "images"), tmp_path / "cache"
    first = np.array(load_image_folder(data, cache).x_train)
    (entry,) = (cache / "datasets").glob("*.x_train.npy")
    assert np.array_equal(load_image_folder(data, cache).x_train, first)  # verified, and used
    _flip_keeping_size_and_time(entry, offset=-1)
    notes = []
    again = load_image_folder(data, cache, notes)
    assert np.array_equal(again.x_train, first)  # decoded again from the images, not the damaged bytes
    assert len(notes) == 1 and "x_train.npy" in notes[0] and "checksum mismatch" in notes[0]
    assert np.array_equal(open_entry(entry), first)


def test_a_run_heals_truncated_dataset_and_activation_entries_saying_so(tmp_path, tiny_backbones, cells_in_process):
    from bench.cli import main
    from conftest import run_cli

    data = _image_folder(tmp_path / "images")
    args = ["run", "--backbone", "tiny_net", "--stage", "transfer", "--image-size", "32", "--epochs", "1", "--weights", "none",
            "--data", data, "--cache-dir", tmp_path / "cache", "--out", tmp_path / "out"]
    # The first run only fills the caches: in this process. The healing run is a user's: its own
    # process, its cell in another, whose notes go to the cell's log and record, not the terminal.
    assert main(list(map(str, args))) == 0
    for entry in [*(tmp_path / "cache" / "datasets").glob("*.x_train.npy"), *(tmp_path / "cache" / "features").glob("*.npy")]:
        os.truncate(entry, entry.stat().st_size - 1)
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    # The run process heals the dataset and says so on the terminal, in one line.
    (line,) = [line for line in second.stderr.splitlines() if "damaged" in line]
    assert "x_train.npy" in line and "truncated" in line
    # The cell heals the activations and its record says so.
    from bench.records import read_records

    record = read_records(tmp_path / "out").records[-1]
    assert record.status == "ok" and record.notes.count("is damaged (truncated") == 4
