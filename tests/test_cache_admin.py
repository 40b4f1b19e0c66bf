"""``bench cache``: the entries its manifest lists, by kind, with sizes and ages; --clear (a dry
run unless --yes) removes exactly those, and refuses a folder without the cache's marker."""

import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from bench import cache_admin
from bench.cache_entries import open_entry, write_entry
from bench.cache_manifest import MARKER_NAME, record_path
from bench.cli import main
from bench.render.cache import render_cache

DAY = 86400
# What a cleared cache keeps: its marker and the writers' lock file.
KEPT = [MARKER_NAME, "manifest/.lock"]


def _write(entry, rows=4, value=1):
    write_entry(entry, (rows, 3), "float32", lambda array: array.__setitem__(slice(None), value))
    return entry


def _all_files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _cache(tmp_path):
    """A cache with an old dataset entry, a fresh one and a features entry, beside files it did not write."""
    cache = tmp_path / "cache"
    old = _write(cache / "datasets" / "old.x_train.npy", rows=5000)
    _write(cache / "datasets" / "new.x_train.npy")
    _write(cache / "features" / "abc.npy", rows=20_000)
    stale = time.time() - 10 * DAY
    os.utime(old, (stale, stale))
    # The user's own files, in the same folders: never the cache's to list or remove.
    (cache / "datasets" / "my-notes.txt").write_text("mine")
    (cache / "features" / "other.npy").write_bytes(b"not the cache's")
    (cache / "README").write_text("mine too")
    return cache


def _foreign(cache):
    return [name for name in _all_files(cache) if name in ("datasets/my-notes.txt", "features/other.npy", "README")]


def test_listing_shows_the_manifest_entries_by_kind_with_sizes_and_ages(tmp_path):
    listing = cache_admin.list_cache(_cache(tmp_path))
    by_name = {e.path.name: e for e in listing.entries}
    assert {(e.kind, e.path.name) for e in listing.entries} == {("datasets", "old.x_train.npy"), ("datasets", "new.x_train.npy"), ("features", "abc.npy")}
    assert by_name["abc.npy"].size_bytes >= 20_000 * 3 * 4
    assert 9.9 < by_name["old.x_train.npy"].age_days(time.time()) < 10.1
    assert listing.total_bytes == sum(e.size_bytes for e in listing.entries)
    assert [e.path.name for e in cache_admin.select(listing, older_than_days=5)] == ["old.x_train.npy"]


def test_sparse_entries_count_the_disk_they_use(tmp_path):
    # Never written to: a huge, mostly empty file.
    write_entry(tmp_path / "c" / "features" / "sparse.npy", (10**8,), "uint8", lambda array: None)
    (entry,) = cache_admin.list_cache(tmp_path / "c").entries
    assert entry.size_bytes < 10**6


def test_cache_command_shows_totals_and_entries(tmp_path, capsys):
    cache = _cache(tmp_path)
    assert main(["cache", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"cache {cache}: ") and "in 3 entries" in out
    for word in ("datasets", "features", "old.x_train.npy", "new.x_train.npy", "abc.npy", "10.0 d"):
        assert word in out
    assert "my-notes.txt" not in out and "other.npy" not in out


def test_clear_is_a_dry_run_that_lists_what_it_would_remove(tmp_path, capsys):
    cache = _cache(tmp_path)
    before = _all_files(cache)
    assert main(["cache", "--cache-dir", str(cache), "--clear"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "would remove the 3 entries" in out and "--yes" in out
    assert all(name in out for name in ("old.x_train.npy", "new.x_train.npy", "abc.npy"))
    assert _all_files(cache) == before


def test_clear_yes_removes_exactly_the_cache_s_own_entries(tmp_path, capsys):
    cache = _cache(tmp_path)
    foreign = _foreign(cache)
    assert main(["cache", "--cache-dir", str(cache), "--clear", "--yes"]) == 0
    out = capsys.readouterr().out
    # Listed before they are removed.
    assert out.index("abc.npy") < out.index("removing the 3 entries listed above") < out.index("removed 3 entries")
    assert _all_files(cache) == sorted([*KEPT, *foreign])
    assert cache_admin.list_cache(cache).entries == ()


def test_clear_older_than_removes_only_old_entries(tmp_path, capsys):
    cache = _cache(tmp_path)
    assert main(["cache", "--cache-dir", str(cache), "--clear", "--older-than", "5"]) == 0
    assert (cache / "datasets" / "old.x_train.npy").exists()  # a dry run
    assert main(["cache", "--cache-dir", str(cache), "--clear", "--older-than", "5", "--yes"]) == 0
    assert "removed 1 entry" in capsys.readouterr().out
    assert not (cache / "datasets" / "old.x_train.npy").exists() and not record_path(cache / "datasets" / "old.x_train.npy").exists()
    assert {e.path.name for e in cache_admin.list_cache(cache).entries} == {"new.x_train.npy", "abc.npy"}
    assert open_entry(cache / "features" / "abc.npy") is not None


def test_clear_on_a_folder_of_foreign_files_removes_nothing_and_says_why(tmp_path, capsys):
    home = tmp_path / "home"
    for name in ("datasets/data.csv", "features/notes.md", "thesis.tex", "photos/cat.jpg"):
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text(name)
    before = _all_files(home)
    for confirm in ([], ["--yes"]):
        assert main(["cache", "--cache-dir", str(home), "--clear", *confirm]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert f"{home} has no {MARKER_NAME} marker" in line and "nothing in it is listed or removed" in line and "--adopt" in line
        assert _all_files(home) == before
    # Without --clear it is listed as no entries, with the same reason.
    assert main(["cache", "--cache-dir", str(home)]) == 0
    out = capsys.readouterr().out
    assert "0 entries" in out and "no bench-cache.json marker" in out


def _keras_home(folder):
    """What ``bench prefetch --to`` leaves: Keras's cache layout."""
    files = {
        "keras.json": json.dumps({"backend": "tensorflow"}),
        "datasets/cifar-10-batches-py-target_archive": "archive",
        "datasets/cifar-10-batches-py/data_batch_1": "batch",
        "models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5": "weights",
        "models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5": "weights",
    }
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return sorted(files)


def test_clear_on_a_keras_home_keeps_its_weights_and_settings(tmp_path):
    home = tmp_path / "keras"
    keras_files = _keras_home(home)
    for confirm in ([], ["--yes"]):
        assert main(["cache", "--cache-dir", str(home), "--clear", *confirm]) == 2
        assert _all_files(home) == keras_files
    # Used as the cache as well (--cache-dir ~/.keras): only what the cache wrote goes.
    _write(home / "datasets" / "imgs-0123456789abcdef.x_train.npy")
    _write(home / "features" / "abc.npy")
    assert main(["cache", "--cache-dir", str(home), "--clear", "--yes"]) == 0
    assert _all_files(home) == sorted([*KEPT, *keras_files])


def test_yes_without_clear_is_refused(tmp_path, capsys):
    cache = _cache(tmp_path)
    assert main(["cache", "--cache-dir", str(cache), "--yes"]) == 2
    assert "--yes confirms --clear" in capsys.readouterr().err
    assert len(cache_admin.list_cache(cache).entries) == 3


def test_a_record_that_does_not_match_its_place_is_left_alone(tmp_path, capsys):
    cache = _cache(tmp_path)
    # A hand-edited record naming a file elsewhere: the path comes from where the record lies.
    (cache / "manifest" / "datasets" / "my-notes.txt.json").write_text(json.dumps({"kind": "datasets", "name": "../README", "sha256": "0"}))
    listing = cache_admin.list_cache(cache)
    assert len(listing.entries) == 3 and [p.name for p in listing.unreadable_records] == ["my-notes.txt.json"]
    assert main(["cache", "--cache-dir", str(cache), "--clear", "--yes"]) == 0
    assert "1 unreadable manifest record(s) left alone" in capsys.readouterr().err
    assert (cache / "datasets" / "my-notes.txt").exists() and (cache / "README").exists()


def test_an_entry_whose_writer_died_before_the_rename_is_listed_and_cleared(tmp_path, capsys):
    cache = _cache(tmp_path)
    (cache / "features" / "abc.npy").unlink()  # its record stays: what a crash between the two leaves
    (entry,) = [e for e in cache_admin.list_cache(cache).entries if e.path.name == "abc.npy"]
    assert entry.size_bytes == 0
    assert main(["cache", "--cache-dir", str(cache), "--clear", "--yes"]) == 0
    assert cache_admin.list_cache(cache).entries == ()


def test_an_older_cache_is_adopted_only_where_its_checksums_prove_it(tmp_path, capsys):
    old = tmp_path / "old"
    (old / "datasets").mkdir(parents=True)
    (old / "features").mkdir()
    ours = old / "features" / "abc.npy"
    np.save(ours, np.ones((3, 2), "float32"))
    (old / "features" / "abc.npy.sha256").write_text(hashlib.sha256(ours.read_bytes()).hexdigest() + "\n")
    changed = old / "datasets" / "d.x_train.npy"
    np.save(changed, np.zeros((2, 2), "uint8"))
    (old / "datasets" / "d.x_train.npy.sha256").write_text("0" * 64 + "\n")
    np.save(old / "datasets" / "theirs.npy", np.zeros(3))  # no checksum: not provably ours
    (old / "keras.json").write_text("{}")
    assert main(["cache", "--cache-dir", str(old), "--clear", "--yes"]) == 2
    assert main(["cache", "--cache-dir", str(old), "--adopt"]) == 0
    out = capsys.readouterr().out
    assert "adopted 1 entry" in out and "left alone 1" in out and "d.x_train.npy" in out
    assert [e.path for e in cache_admin.list_cache(old).entries] == [ours]
    assert main(["cache", "--cache-dir", str(old), "--clear", "--yes"]) == 0
    assert _all_files(old) == sorted([*KEPT, "datasets/d.x_train.npy", "datasets/d.x_train.npy.sha256", "datasets/theirs.npy", "keras.json"])


def test_concurrent_writers_each_list_their_entries(tmp_path):
    cache = tmp_path / "cache"
    script = (
        "import sys; from pathlib import Path; from bench.cache_entries import write_entry\n"
        "for i in range(8):\n"
        f"    write_entry(Path({str(cache)!r}) / 'features' / f'{{sys.argv[1]}}-{{i}}.npy', (64, 64), 'float32', lambda a: a.__setitem__(slice(None), i))\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", script, str(n)], cwd=os.getcwd()) for n in range(4)]
    assert [w.wait() for w in writers] == [0, 0, 0, 0]
    entries = cache_admin.list_cache(cache).entries
    assert len(entries) == 32 and all(open_entry(e.path, 64, "float32", (64,)) is not None for e in entries)
    assert sorted(p.name for p in (cache / "features").iterdir()) == sorted(e.path.name for e in entries)


def test_missing_cache_folder_is_an_empty_listing(tmp_path, capsys):
    assert main(["cache", "--cache-dir", str(tmp_path / "none")]) == 0
    assert "0 entries (the folder does not exist)" in capsys.readouterr().out
    assert render_cache(cache_admin.list_cache(tmp_path / "none"), [], time.time()).endswith("(the folder does not exist)")
    assert main(["cache", "--cache-dir", str(tmp_path / "none"), "--clear", "--yes"]) == 0
    assert "removed 0 entries" in capsys.readouterr().out and not (tmp_path / "none").exists()
