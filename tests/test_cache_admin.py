"""``bench cache``: entries by kind with sizes and ages; --clear, --older-than."""

import os
import time

from bench import cache_admin
from bench.render.cache import render_cache
from bench.cli import main

DAY = 86400


def _cache(tmp_path):
    """A cache with an old dataset, a fresh one, and a features entry that is a folder."""
    cache = tmp_path / "cache"
    (cache / "datasets").mkdir(parents=True)
    (cache / "features" / "mobilenet_v2-abc").mkdir(parents=True)
    old, new = cache / "datasets" / "old.npz", cache / "datasets" / "new.npz"
    old.write_bytes(b"x" * 50_000)
    new.write_bytes(b"y" * 10_000)
    (cache / "features" / "mobilenet_v2-abc" / "original.npy").write_bytes(b"z" * 200_000)
    stale = time.time() - 10 * DAY
    os.utime(old, (stale, stale))
    return cache


def test_listing_groups_entries_by_kind_with_sizes_and_ages(tmp_path):
    listing = cache_admin.list_cache(_cache(tmp_path))
    by_name = {e.path.name: e for e in listing.entries}
    assert {(e.kind, e.path.name) for e in listing.entries} == {("datasets", "old.npz"), ("datasets", "new.npz"), ("features", "mobilenet_v2-abc")}
    assert by_name["mobilenet_v2-abc"].size_bytes >= 200_000  # a folder counts the files below it
    assert 9.9 < by_name["old.npz"].age_days(time.time()) < 10.1
    assert listing.total_bytes == sum(e.size_bytes for e in listing.entries)
    assert [e.path.name for e in cache_admin.select(listing, older_than_days=5)] == ["old.npz"]


def test_sparse_files_count_the_disk_they_use(tmp_path):
    (tmp_path / "c" / "features").mkdir(parents=True)
    with open(tmp_path / "c" / "features" / "sparse.tmp.npy", "wb") as handle:
        handle.truncate(10**9)  # what an extraction killed early leaves: a huge, mostly empty file
    (entry,) = cache_admin.list_cache(tmp_path / "c").entries
    assert entry.size_bytes < 10**6


def test_cache_command_shows_totals_and_entries(tmp_path, capsys):
    cache = _cache(tmp_path)
    assert main(["cache", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"cache {cache}: ") and "in 3 entries" in out
    for word in ("datasets", "features", "old.npz", "new.npz", "mobilenet_v2-abc", "10.0 d"):
        assert word in out


def test_clear_older_than_removes_only_old_entries(tmp_path, capsys):
    cache = _cache(tmp_path)
    assert main(["cache", "--cache-dir", str(cache), "--clear", "--older-than", "5"]) == 0
    assert "removed 1 entry" in capsys.readouterr().out
    assert sorted(p.name for p in cache.rglob("*")) == ["datasets", "features", "mobilenet_v2-abc", "new.npz", "original.npy"]
    assert main(["cache", "--cache-dir", str(cache), "--older-than", "5"]) == 0  # without --clear: a listing only
    assert (cache / "datasets" / "new.npz").exists()


def test_clear_removes_everything_but_the_kind_folders(tmp_path, capsys):
    cache = _cache(tmp_path)
    assert main(["cache", "--cache-dir", str(cache), "--clear"]) == 0
    assert "removed 3 entries" in capsys.readouterr().out
    assert sorted(p.name for p in cache.rglob("*")) == ["datasets", "features"]
    assert cache_admin.list_cache(cache).total_bytes == 0


def test_missing_cache_folder_is_an_empty_listing(tmp_path, capsys):
    assert main(["cache", "--cache-dir", str(tmp_path / "none")]) == 0
    assert "0 entries (the folder does not exist)" in capsys.readouterr().out
    assert render_cache(cache_admin.list_cache(tmp_path / "none"), [], time.time()).endswith("(the folder does not exist)")
