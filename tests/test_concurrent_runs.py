"""Measuring commands warn when another one runs on the machine, and hold a marker while they run."""

import os
import subprocess
import sys

import pytest

from bench import cli, concurrent_runs


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv(concurrent_runs.FOLDER_ENV_VAR, str(tmp_path / "markers"))
    return tmp_path / "markers"


@pytest.fixture
def other_process():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def test_a_live_measurement_is_named_and_a_dead_ones_marker_removed(folder, other_process, capsys):
    folder.mkdir()
    (folder / str(other_process)).write_text("python -m bench run --all")
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    (folder / ended.stdout.strip()).write_text("python -m bench cost --all")
    with concurrent_runs.measuring("python -m bench cost --backbone small_cnn"):
        assert (folder / str(os.getpid())).read_text() == f"{concurrent_runs.start_ticks(os.getpid())}\npython -m bench cost --backbone small_cnn"
    err = capsys.readouterr().err
    assert f"another bench measurement is running on this machine (pid {other_process}: python -m bench run --all)" in err
    assert err.count("warning:") == 1  # the ended one is not running
    assert sorted(p.name for p in folder.iterdir()) == [str(other_process)]  # ours gone, the dead one's too


def test_alone_no_warning_and_an_unwritable_folder_does_not_stop_the_command(folder, tmp_path, capsys, monkeypatch):
    with concurrent_runs.measuring("python -m bench run --all"):
        pass
    assert capsys.readouterr().err == ""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(concurrent_runs.FOLDER_ENV_VAR, str(blocker / "markers"))
    ran = []
    with concurrent_runs.measuring("python -m bench run --all"):
        ran.append(True)
    assert ran == [True]


def test_the_cli_warns_for_measuring_commands_only_and_leaves_no_marker(folder, other_process, capsys):
    folder.mkdir()
    (folder / str(other_process)).write_text("python -m bench tune --all")
    assert cli.main(["cost", "--backbone", "no_such_backbone"]) == 2
    err = capsys.readouterr().err
    assert "warning: another bench measurement" in err and "error:" in err
    assert cli.main(["list"]) == 0
    assert "warning:" not in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == [str(other_process)]


def test_a_marker_left_in_a_folder_it_cannot_write_does_not_stop_the_command(folder, monkeypatch, capsys):
    folder.mkdir()
    (folder / "999999999").write_text("python -m bench run --all")  # no such process
    monkeypatch.setattr(concurrent_runs, "_alive", lambda pid: False)

    def refuse(self, missing_ok=False):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(folder), "unlink", refuse)
    ran = []
    with concurrent_runs.measuring("python -m bench cost --all"):
        ran.append(True)
    assert ran == [True] and "warning:" not in capsys.readouterr().err


def test_the_cli_holds_a_marker_while_the_command_runs(folder, monkeypatch):
    from bench.commands import list as list_command

    seen = []

    def handle(args, command):
        seen.append(sorted(p.name for p in folder.iterdir()))
        return 0

    monkeypatch.setattr(concurrent_runs, "MEASURING_COMMANDS", (*concurrent_runs.MEASURING_COMMANDS, "list"))
    monkeypatch.setattr(list_command, "handle", handle)
    assert cli.main(["list"]) == 0
    assert seen == [[str(os.getpid())]] and list(folder.iterdir()) == []


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="process start times are read from /proc")
def test_a_marker_whose_number_a_later_process_took_is_an_ended_ones(folder, other_process, capsys):
    """kill -9 leaves a marker; once the number goes to a new process, its start time tells them apart."""
    started = concurrent_runs.start_ticks(other_process)
    assert started.isdigit()
    folder.mkdir()
    (folder / str(other_process)).write_text(f"{int(started) - 1}\npython -m bench run --all")  # the number's earlier owner
    assert concurrent_runs.running_others(folder) == [] and not (folder / str(other_process)).exists()
    (folder / str(other_process)).write_text(concurrent_runs.marker_text(other_process, "python -m bench run --all"))
    assert concurrent_runs.running_others(folder) == [(other_process, "python -m bench run --all")]
    # A marker with no command line still has its start; one of the earlier version (the command alone) is read by liveness.
    (folder / str(other_process)).write_text(f"{int(started) - 1}\n")
    assert concurrent_runs.running_others(folder) == []
    (folder / str(other_process)).write_text("python -m bench tune --all")
    assert concurrent_runs.running_others(folder) == [(other_process, "python -m bench tune --all")]


def test_another_users_measurement_is_seen_too(tmp_path, other_process, monkeypatch, capsys):
    import tempfile

    monkeypatch.delenv(concurrent_runs.FOLDER_ENV_VAR)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    theirs = tmp_path / f"{concurrent_runs.FOLDER_PREFIX}{os.getuid() + 1}"
    theirs.mkdir()
    (theirs / str(other_process)).write_text(concurrent_runs.marker_text(other_process, "python -m bench run --all"))
    (tmp_path / f"{concurrent_runs.FOLDER_PREFIX}{os.getuid() + 2}").write_text("")  # not a folder: nothing to read
    suite = tmp_path / f"{concurrent_runs.FOLDER_PREFIX}tests-x"  # not a user's folder: not read
    suite.mkdir()
    (suite / str(other_process)).write_text(concurrent_runs.marker_text(other_process, "python -m bench tune --all"))
    with concurrent_runs.measuring("python -m bench cost --all"):
        assert (tmp_path / f"{concurrent_runs.FOLDER_PREFIX}{os.getuid()}" / str(os.getpid())).exists()
    err = capsys.readouterr().err
    assert f"(pid {other_process}: python -m bench run --all)" in err and err.count("warning:") == 1
