"""Appends under real short writes: a file-size limit, and a full tmpfs where one can be mounted."""

import contextlib
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.records import RUNS_FILE, append_record, read_records
from conftest import ROOT

FIXTURE = Path(__file__).parent / "fixtures" / RUNS_FILE

# Appends one fixture record under RLIMIT_FSIZE = the file's size + headroom; prints the errno.
_LIMITED_APPEND = """
import resource, signal, sys
from pathlib import Path
from bench.records import append_record, read_records
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so the write fails with EFBIG instead of killing us
out, headroom = Path(sys.argv[1]), int(sys.argv[2])
record = read_records(sys.argv[3]).records[-1]
size = (out / "runs.jsonl").stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + headroom, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    append_record(out, record)
except OSError as error:
    print(error.errno)
"""


def _seeded(folder: Path, count: int = 3) -> bytes:
    for record in read_records(FIXTURE).records[:count]:
        append_record(folder, record)
    return (folder / RUNS_FILE).read_bytes()


@pytest.mark.skipif(not hasattr(os, "ftruncate") or sys.platform == "win32", reason="needs RLIMIT_FSIZE")
@pytest.mark.parametrize("headroom", [0, 1, 700], ids=["no-room", "one-byte", "half-a-line"])
def test_file_size_limit_mid_line_leaves_no_fragment(tmp_path, headroom):
    before = _seeded(tmp_path)
    result = subprocess.run([sys.executable, "-c", _LIMITED_APPEND, str(tmp_path), str(headroom), str(FIXTURE)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(errno.EFBIG)
    assert (tmp_path / RUNS_FILE).read_bytes() == before  # every earlier line, nothing of the failed one
    # The next append lands as a whole line of its own.
    append_record(tmp_path, read_records(FIXTURE).records[4])
    loaded = read_records(tmp_path)
    assert len(loaded.records) == 4 and loaded.bad_lines == 0


@contextlib.contextmanager
def _tmpfs(folder: Path, size: str):
    folder.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_full_tmpfs_mid_line_leaves_no_fragment(tmp_path):
    records = read_records(FIXTURE).records
    line = len(records[4].to_json()) + 1
    with _tmpfs(tmp_path / "small", "64k") as disk:
        before = b""
        while not 0 < 4096 - len(before) % 4096 < line:  # leave less room in the last page than a line
            append_record(disk, records[0])
            before = (disk / RUNS_FILE).read_bytes()
        # Fill every free page: the next append only has the slack of runs.jsonl's last page,
        # so it is cut short part-way through the line (a real short write, then ENOSPC).
        with open(disk / "filler", "wb", buffering=0) as filler:
            with contextlib.suppress(OSError):
                while True:
                    filler.write(b"\0" * 4096)
            with contextlib.suppress(OSError):
                while True:
                    filler.write(b"\0")
        with pytest.raises(OSError) as info:
            append_record(disk, records[4])
        assert info.value.errno == errno.ENOSPC
        assert (disk / RUNS_FILE).read_bytes() == before
        (disk / "filler").unlink()
        append_record(disk, records[4])
        loaded = read_records(disk)
        assert loaded.records[-1] == records[4] and loaded.bad_lines == 0
