"""The record store's one interface, for run records, cost records and a kind of its own;
committed records load unchanged; cost measurements are jobs (resume, timeout)."""

import dataclasses
import json
from pathlib import Path

import pytest

from bench import record_store
from bench.cli import main
from bench.cost_records import COST_FILE, COSTS, CostConfig, CostRecord, append_cost_record, read_cost_records
from bench.provenance import Provenance
from bench.records import RUNS, RUNS_FILE, Record
from conftest import ROOT, run_cli

COMMITTED = [(ROOT / "results" / RUNS_FILE, RUNS), (ROOT / "results" / "axes" / RUNS_FILE, RUNS), (ROOT / "results" / COST_FILE, COSTS)]


@pytest.mark.parametrize("path,kind", COMMITTED, ids=["runs", "axes", "cost"])
def test_a_committed_line_loads_with_its_flat_environment(path, kind):
    line = path.read_text().splitlines()[0]
    flat = json.loads(line)
    record, upgraded = record_store.parse(flat, kind)
    assert isinstance(record, kind.record_type)
    assert record.provenance == Provenance(**{f.name: flat[f.name] for f in dataclasses.fields(Provenance)})
    # Written back, the line keeps its names, order and values, but for what the mapping
    # of an earlier schema changes (a run's key and schema) and fields added since (a cost's failure).
    again = json.loads(record_store.to_line(record))
    mapped = {"key", "schema", "identity"} if kind is RUNS else set()
    assert upgraded == (kind is RUNS and flat["schema"] < kind.schema_version)
    assert [k for k in again if k in flat] == list(flat)
    assert {k: v for k, v in again.items() if k in flat and k not in mapped} == {k: v for k, v in flat.items() if k not in mapped}


def test_every_kind_shares_one_provenance_part():
    assert set(f.name for f in dataclasses.fields(Provenance)) <= set(record_store.flat_fields(Record))
    assert set(f.name for f in dataclasses.fields(Provenance)) <= set(record_store.flat_fields(CostRecord))
    assert "provenance" not in record_store.flat_fields(Record) and "provenance" not in record_store.flat_fields(CostRecord)


@dataclasses.dataclass(frozen=True)
class _Trial:
    """A later record kind (a tuning trial), declared the way every kind is."""

    key: str
    status: str
    score: float | None = None
    learning_rate: float = 0.0  # version 1 called it `lr`
    provenance: Provenance = Provenance()
    schema: int = 2


def _rename_lr(data: dict) -> dict:
    return {**{k: v for k, v in data.items() if k != "lr"}, "learning_rate": data["lr"]} if "lr" in data else data


TRIALS = record_store.RecordKind("trial", _Trial, "trials.jsonl", 2, upgrade=_rename_lr, accepts=lambda data: data.get("status") in ("ok", "failed"))


def test_a_new_kind_gets_appends_reads_upgrades_and_checks_from_the_store(tmp_path):
    record_store.append(tmp_path, TRIALS, _Trial("t0", "ok", 0.5, 0.1, Provenance(command="bench tune")))
    with open(tmp_path / "trials.jsonl", "a") as handle:
        handle.write(json.dumps({"key": "t1", "status": "ok", "lr": 0.3, "schema": 1}) + "\n")  # an earlier version's
        handle.write(json.dumps({"key": "t2", "status": "ok", "schema": 3}) + "\n")  # a newer version's: not ours to read
        handle.write(json.dumps({"key": "t3", "status": "maybe"}) + "\n")  # fails the kind's own check
        handle.write(json.dumps({"key": "t4", "status": "ok", "score": "high"}) + "\n")  # a string for a number
        handle.write('{"key": "t5", "sta')  # torn
    record_store.append(tmp_path, TRIALS, _Trial("t6", "failed"))  # lands whole after the torn line
    loaded = record_store.read(tmp_path, TRIALS)
    assert [r.key for r in loaded.records] == ["t0", "t1", "t6"] and loaded.bad_lines == 4 and loaded.upgraded == 1
    assert loaded.records[0].provenance.command == "bench tune" and loaded.records[1].learning_rate == 0.3
    assert json.loads((tmp_path / "trials.jsonl").read_text().splitlines()[0])["command"] == "bench tune"


def _ok_cost(config: CostConfig) -> CostRecord:
    return CostRecord(**config.identity(), status="ok", stages=["baseline"], infer_images_per_second=100.0, latency_p50_ms=1.0, latency_p95_ms=2.0,
                      flops_per_image=1e6, total_params=1000, peak_rss_mb=500.0, wall_seconds=3.0, provenance=Provenance(started_at="2026-01-01T00:00:00+00:00"))  # fmt: skip


def _measured_configs(monkeypatch):
    """Patch out the measuring child: returns the configurations it was asked to measure."""
    from bench import cost

    asked = []
    monkeypatch.setattr(cost, "measure_isolated", lambda config, *rest: asked.append(config.key) or _ok_cost(config))
    return asked


def test_cost_resume_skips_ok_records_and_measures_failed_ones_again(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    small, larger = CostConfig("small_cnn", 32, 64), CostConfig("small_cnn", 32, 128)
    append_cost_record(out, _ok_cost(small))
    append_cost_record(out, dataclasses.replace(_ok_cost(larger), status="failed", failure="timeout", error="timeout: no result after 5 s"))
    asked = _measured_configs(monkeypatch)
    assert main(["cost", "--backbone", "small_cnn", "--batch-size", "64", "128", "--out", str(out), "--resume"]) == 0
    assert asked == [larger.key] and "resume: 1 of 2 measurements already have an ok record; running 1" in capsys.readouterr().err
    asked.clear()
    before = (out / COST_FILE).read_bytes()
    assert main(["cost", "--backbone", "small_cnn", "--batch-size", "64", "128", "--out", str(out), "--resume"]) == 0
    assert asked == [] and (out / COST_FILE).read_bytes() == before
    # Without --resume every configuration is measured again.
    assert main(["cost", "--backbone", "small_cnn", "--batch-size", "64", "--out", str(out)]) == 0 and asked == [small.key]


def test_cost_resume_refuses_a_cost_file_with_no_readable_line(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / COST_FILE).write_text("[1]\n[2]\n")
    asked = _measured_configs(monkeypatch)
    assert main(["cost", "--backbone", "small_cnn", "--out", str(out), "--resume"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert asked == [] and last.startswith("error: ") and str(out / COST_FILE) in last and "2 line(s)" in last, last
    assert (out / COST_FILE).read_text() == "[1]\n[2]\n"


def test_a_hanging_cost_measurement_ends_as_a_timeout_record(tmp_path, fault_backbones):
    out = tmp_path / "out"
    done = run_cli("cost", "--backbone", "fault_hangs", "--batch-size", "2", "--cell-timeout", "8", "--out", out, env={"BENCH_BACKBONE_MODULES": "fault_backbones"})
    assert done.returncode == 1, done.stderr
    (hung,) = read_cost_records(out).records
    assert hung.status == "failed" and hung.failure == "timeout" and hung.error.startswith("timeout: no result after 8 s"), hung
    assert hung.wall_seconds < 60  # killed, not waited out (the backbone sleeps an hour)
    assert "fault_hangs" in (out / "cost.md").read_text() and "1 of 1 measurements failed" in done.stderr


@pytest.mark.slow  # one real measurement (minutes on 2 busy cores); the fast resume test above covers the logic
def test_cost_resume_run_twice_measures_nothing_the_second_time(tmp_path):
    out = tmp_path / "out"
    first = run_cli("cost", "--backbone", "small_cnn", "--data", "synthetic", "--out", out, "--resume")
    assert first.returncode == 0, first.stderr
    lines, logs = (out / COST_FILE).read_bytes(), sorted((out / "logs").iterdir())
    second = run_cli("cost", "--backbone", "small_cnn", "--data", "synthetic", "--out", out, "--resume")
    assert second.returncode == 0 and "1 of 1 measurements already have an ok record; running 0" in second.stderr, second.stderr
    assert (out / COST_FILE).read_bytes() == lines and sorted((out / "logs").iterdir()) == logs
