"""The parent's native stderr (where TensorFlow's C++ lines go) is moved to a log, and only kept once checks pass."""

import os

from bench import quiet


def test_native_stderr_goes_to_the_log_and_messages_to_the_terminal(capfd, tmp_path):
    log = tmp_path / "logs" / "parent.log"
    with quiet.scratch_file() as collected:
        with quiet.native_output_to(collected) as terminal:
            os.write(2, b"I0000 00:00:1.0 port.cc:153] oneDNN custom operations are on\n")
            print("for the user", file=terminal)
        os.write(2, b"after the block\n")  # fd 2 is the terminal again
        quiet.keep_log(collected, log, "python -m bench run --all")
    err = capfd.readouterr().err
    assert "for the user" in err and "after the block" in err and "oneDNN" not in err
    assert log.read_text() == "--- python -m bench run --all\nI0000 00:00:1.0 port.cc:153] oneDNN custom operations are on\n"


def test_fd_2_is_restored_when_the_block_raises(capfd):
    with quiet.scratch_file() as collected:
        try:
            with quiet.native_output_to(collected):
                raise ValueError("bad weights")
        except ValueError:
            pass
    os.write(2, b"visible\n")
    assert "visible" in capfd.readouterr().err


def test_nothing_collected_writes_no_log(tmp_path):
    with quiet.scratch_file() as collected:
        quiet.keep_log(collected, tmp_path / "logs" / "parent.log", "header")
    assert not (tmp_path / "logs").exists()


def test_an_unwritable_log_costs_the_log_not_the_run(tmp_path):
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the folder should be")
    with quiet.scratch_file() as collected:
        collected.write(b"line\n")
        quiet.keep_log(collected, blocker / "parent.log", "header")  # must not raise
    assert blocker.read_text() == "a file where the folder should be"

def test_stdout_too_when_asked(tmp_path):
    """As `bench perf` uses it: the cells' prints go to the log, the table printed after the block to stdout."""
    import subprocess
    import sys

    from conftest import ROOT

    script = (
        "import sys\nfrom bench import quiet\n"
        f"with open({str(tmp_path / 'perf.log')!r}, 'ab') as log, quiet.native_output_to(log, stdout=True) as terminal:\n"
        "    print('epoch 1/1: loss 2.3')\n    print('perf: transfer cached ...', file=terminal)\n"
        "print('the table')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "the table\n" and result.stderr == "perf: transfer cached ...\n"
    assert (tmp_path / "perf.log").read_text() == "epoch 1/1: loss 2.3\n"
