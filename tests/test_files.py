"""Atomic writes: a failed or killed write leaves the old file or the whole new one, never a fragment."""

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench import files, publish
from bench.records import RUNS_FILE
from conftest import ROOT

FIXTURE = Path(__file__).parent / "fixtures" / RUNS_FILE


def _no_temporaries(folder: Path) -> bool:
    return not list(Path(folder).glob(f"{files.TEMPORARY_PREFIX}*"))


def test_write_text_replaces_the_whole_file(tmp_path):
    target = tmp_path / "a.md"
    target.write_text("old")
    target.chmod(0o640)
    files.write_text(target, "new text")
    assert target.read_text() == "new text" and (target.stat().st_mode & 0o777) == 0o640
    assert _no_temporaries(tmp_path)


def test_a_short_write_then_a_full_disk_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "a.md"
    target.write_text("old text")
    real_write, calls = os.write, []

    def write_then_fill(fd, data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, bytes(data[:3]))  # a short write

    monkeypatch.setattr(os, "write", write_then_fill)
    with pytest.raises(OSError, match="No space left"):
        files.write_text(target, "new text, longer")
    assert target.read_text() == "old text" and _no_temporaries(tmp_path)


def test_atomic_path_keeps_the_full_suffix_for_writers_that_check_it(tmp_path):
    target = tmp_path / "head.weights.h5"
    with files.atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.name.endswith(".weights.h5") and temporary != target
        temporary.write_bytes(b"weights")
    assert target.read_bytes() == b"weights"
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"weights" and _no_temporaries(tmp_path)


def test_report_writes_its_readme_last_and_a_failure_keeps_the_old_one(tmp_path, monkeypatch):
    shutil.copy(FIXTURE, tmp_path / RUNS_FILE)
    project = tmp_path / "PROJECT.md"
    project.write_text(f"# P\n\n{publish.README_START}\nold\n{publish.README_END}\n")
    order, real_replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append(Path(b).name), real_replace(a, b)))
    publish.write_report(tmp_path, project_readme=project)
    assert order[-2:] == ["README.md", "PROJECT.md"] and order[0] == "summary.csv" and len(order) == 8

    # The disk fills while the second plot is written: README.md and the project README keep their old text.
    old_readme, old_project = (tmp_path / "README.md").read_bytes(), project.read_bytes()
    (tmp_path / RUNS_FILE).write_text(FIXTURE.read_text().replace('"test_accuracy": 0.', '"test_accuracy": 0.0'))
    from bench import plots

    real_save, saved = publish.save_figure, []

    def fill_on_second(figure, path):
        saved.append(path)
        if len(saved) == 2:
            plots.plt.close(figure)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(figure, path)

    monkeypatch.setattr(publish, "save_figure", fill_on_second)
    with pytest.raises(OSError):
        publish.write_report(tmp_path, project_readme=project)
    assert (tmp_path / "README.md").read_bytes() == old_readme and project.read_bytes() == old_project
    assert _no_temporaries(tmp_path)


@pytest.mark.skipif(sys.platform == "win32", reason="needs RLIMIT_FSIZE")
def test_full_disk_during_report_readme_keeps_the_users_readme(tmp_path):
    """The issue's case: a large project README, and the disk fills while its new text is written."""
    import resource

    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(FIXTURE, out / RUNS_FILE)
    readme = tmp_path / "README.md"
    original = f"# Project\n\n{publish.README_START}\nold table\n{publish.README_END}\n\n" + "Hand-written documentation.\n" * 6000  # 168 kB
    readme.write_text(original)

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    result = subprocess.run([sys.executable, "-m", "bench", "report", "--out", str(out), "--readme", str(readme)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.strip().endswith(errors[0])
    assert "could not write the report" in errors[0] and "File too large" in errors[0]
    assert f"report file {readme}:" in errors[0]  # the file that failed, not the --out folder
    assert readme.read_text() == original
    # Everything the report writes before the project README is whole and new.
    assert "## Winners" in (out / "README.md").read_text() and (out / "summary.csv").stat().st_size > 0
    assert _no_temporaries(out) and _no_temporaries(tmp_path)


def test_a_linked_file_is_written_through_its_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README.md").write_text("old")
    (tmp_path / "README.md").symlink_to(tmp_path / "docs" / "README.md")
    files.write_text(tmp_path / "README.md", "new")
    assert (tmp_path / "README.md").is_symlink() and (tmp_path / "docs" / "README.md").read_text() == "new"
