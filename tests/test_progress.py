"""Live progress: the cell's hook (throttled, never raising), the parent's view and its ETAs, and a real sweep's output."""

import io

import pytest

from bench import progress
from bench.grid import Cell
from bench.live import SweepView
from bench.progress import Progress
from bench.records import Record


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _cell(backbone="mobilenet_v2", stage="transfer"):
    return Cell(backbone=backbone, stage=stage, image_size=32, augment="flip", seed=0, data="synthetic", profile="quick")


def _training(done, total, milestone=False, **metrics):
    return Progress("training", done, total, {"epoch": 1, "epochs": 2, **metrics}, milestone)


def _ok(cell):
    return Record(**cell.record_fields(), status="ok")


@pytest.fixture
def sink(monkeypatch):
    """The events ``progress.report`` lets through, on a clock the test moves."""
    clock, sent = Clock(), []
    monkeypatch.setattr(progress.time, "monotonic", clock)
    progress.set_sink(sent.append)
    yield clock, sent
    progress.set_sink(None)


def test_report_without_a_sink_sends_nothing():
    sent = []
    progress.set_sink(sent.append)
    progress.set_sink(None)
    progress.report("training", 1, 10, loss=object())  # would fail float() if it were sent
    progress.report("evaluating")
    assert sent == []


def test_throttle_passes_phase_changes_ends_and_milestones_and_two_events_a_second(sink):
    clock, sent = sink
    progress.report("loading data")
    progress.report("extracting", 256, 1000)
    clock.now += 0.1
    progress.report("extracting", 512, 1000)  # too soon: dropped
    clock.now += 0.5
    progress.report("extracting", 768, 1000)
    clock.now += 0.1
    progress.report("extracting", 1000, 1000)  # the phase's end always goes out
    progress.report("training", 3, 10, loss=1.5)
    clock.now += 0.1
    progress.report("training", 5, 10, milestone=True, epoch=1, epochs=2, loss=1.25, val_accuracy=None)
    assert [(e.phase, e.done) for e in sent] == [("loading data", None), ("extracting", 256), ("extracting", 768), ("extracting", 1000), ("training", 3), ("training", 5)]
    assert sent[-1].milestone and sent[-1].metrics == {"epoch": 1.0, "epochs": 2.0, "loss": 1.25}


def test_a_lost_parent_stops_reporting_without_failing_the_cell(sink):
    tries = []

    def closed_pipe(event):
        tries.append(event.phase)
        raise BrokenPipeError("parent gone")

    progress.set_sink(closed_pipe)
    progress.report("training", 1, 10)  # must not raise
    progress.report("evaluating")  # a phase change, which the throttle always lets through
    assert tries == ["training"]  # nothing more is sent after the pipe broke


def _plain_view(total=2):
    clock, stream = Clock(), io.StringIO()
    return SweepView(total, stream, terminal=False, clock=clock, plain_interval_seconds=30), clock, stream


def test_plain_view_prints_phases_epochs_and_etas():
    view, clock, stream = _plain_view()
    cell = _cell()
    with view:
        view.started(cell)
        view.update(cell, Progress("loading data"))
        clock.now += 2
        view.update(cell, Progress("extracting", 100, 1000))
        clock.now += 1
        view.update(cell, Progress("extracting", 200, 1000))  # same phase, within 30 s: no line
        assert view.phase_seconds_left(cell.key) == pytest.approx(8.0)  # 100 images/s, 800 to go
        clock.now += 40
        view.update(cell, Progress("extracting", 600, 1000))  # 30 s since the last line: a line
        clock.now += 1
        view.update(cell, _training(1, 100, loss=2.3))
        clock.now += 10
        view.update(cell, _training(50, 100, milestone=True, loss=1.9, accuracy=0.4, val_accuracy=0.5))
    lines = stream.getvalue().splitlines()
    assert lines[0] == f"[1/2] {cell.key} ..."
    assert "loading data" in lines[1]
    assert "extracting 100/1,000 images" in lines[2]
    assert "extracting 600/1,000 images" in lines[3] and "extracting ~" in lines[3]
    assert "epoch 1/2, step 1/100: loss 2.300" in lines[4]
    # 49 steps in 10 s: 50 steps to go take about 10 s more.
    assert "epoch 1/2: loss 1.900, accuracy 40.0%, val_accuracy 50.0%" in lines[5] and "cell ~10s left" in lines[5]
    assert len(lines) == 6


def test_new_array_to_extract_restarts_the_rate():
    view, clock, _ = _plain_view()
    cell = _cell()
    view.started(cell)
    view.update(cell, Progress("extracting", 500, 1000))
    clock.now += 5
    view.update(cell, Progress("extracting", 1000, 1000))
    view.update(cell, Progress("extracting", 100, 400))  # the next array (e.g. mirrored images)
    assert view.phase_seconds_left(cell.key) is None  # no rate yet for this array
    clock.now += 1
    view.update(cell, Progress("extracting", 200, 400))
    assert view.phase_seconds_left(cell.key) == pytest.approx(2.0)


def test_sweep_eta_waits_for_a_finished_cell_then_uses_its_time():
    view, clock, _ = _plain_view(total=3)
    first, second = _cell(), _cell(stage="finetune")
    view.started(first)
    assert view.sweep_seconds_left() is None and "ETA once a cell has finished" in view.sweep_line()
    clock.now += 60
    view.finished(first, _ok(first))
    assert view.sweep_seconds_left() == pytest.approx(120)  # two more cells of 60 s
    view.started(second)
    clock.now += 20
    view.update(second, Progress("building model"))
    assert view.sweep_seconds_left() == pytest.approx(40 + 60)  # the running cell's rest of the mean, then one more
    view.update(second, _training(10, 110))
    clock.now += 10
    view.update(second, _training(60, 110))  # 5 steps/s: 10 s left
    assert view.sweep_seconds_left() == pytest.approx(10 + 60)
    assert "1/3 cells done" in view.sweep_line() and "~1m10s left" in view.sweep_line()


def test_events_for_a_cell_nobody_started_start_it():
    """The Ray executor starts a cell when its first event arrives."""
    view, _, stream = _plain_view()
    cell = _cell()
    view.update(cell, Progress("starting"))
    assert stream.getvalue().startswith(f"[1/2] {cell.key} ...\n")


def test_terminal_view_redraws_in_place_and_keeps_epoch_lines(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    clock, stream = Clock(), io.StringIO()
    cell = _cell()
    with SweepView(1, stream, terminal=True, clock=clock) as view:
        view.started(cell)
        view.update(cell, Progress("extracting", 256, 1000))
        view.live.refresh()
        view.update(cell, _training(5, 5, milestone=True, loss=1.0))
        view.live.refresh()
    text = stream.getvalue()
    assert "\x1b[2K" in text and "\x1b[1A" in text  # lines erased and the cursor moved up: redrawn in place
    assert "extracting 256/1,000 images" in text and "sweep: 0/1 cells done" in text
    assert "    [1/1] epoch 1/2: loss 1.000" in text  # the epoch's line stays in the scroll-back
    assert "    [1/1] extracting" not in text  # phases are redrawn, not printed as lines


def test_a_closed_stream_silences_the_view_not_the_sweep():
    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError("reader gone")

    view = SweepView(1, ClosedPipe(), terminal=False)
    cell = _cell()
    view.started(cell)
    view.update(cell, Progress("loading data"))
    view.finished(cell, _ok(cell))
    assert view.closed and view.finished_count == 1
