"""#25 defects 4 and 5, from the outside: every record kind's malformed lines are skipped,
counted and said (on stderr and in the report); a file of which no line parses is an error.

Only the command line and the file names are used, so these tests run against any version."""

import json
import shutil
from pathlib import Path

import pytest

from bench.cli import main
from bench.cost_records import COST_FILE
from bench.records import RUNS_FILE

ROOT = Path(__file__).resolve().parent.parent
RUNS_FIXTURE = Path(__file__).parent / "fixtures" / RUNS_FILE
COMMITTED_COSTS = ROOT / "results" / COST_FILE


def _good(kind: str) -> str:
    return (COMMITTED_COSTS if kind == "cost" else RUNS_FIXTURE).read_text()


def _bad_line(kind: str, flaw: str) -> str:
    record = json.loads(_good(kind).splitlines()[0])
    number = "infer_images_per_second"
    return {
        "json-list": json.dumps([record]),
        "string-for-number": json.dumps({**record, number: "fast"}),
        "missing-field": json.dumps({k: v for k, v in record.items() if k != "backbone"}),
        "provenance-wrong-type": json.dumps({**record, "git_dirty": "yes"}),
        "string-line": json.dumps("a record"),
        "torn": json.dumps(record)[:40],
    }[flaw]


FLAWS = ["json-list", "string-for-number", "missing-field", "provenance-wrong-type", "string-line", "torn"]
FILES = {"runs": RUNS_FILE, "cost": COST_FILE}


def _folder(tmp_path, bad: dict[str, list[str]]) -> Path:
    """An output folder with good runs and cost records, plus ``bad[kind]`` lines in that kind's file."""
    out = tmp_path / "out"
    out.mkdir()
    for kind, name in FILES.items():
        (out / name).write_text(_good(kind) + "".join(_bad_line(kind, flaw) + "\n" for flaw in bad.get(kind, [])))
    return out


@pytest.mark.parametrize("kind", ["runs", "cost"])
@pytest.mark.parametrize("flaw", FLAWS)
def test_the_reader_of_every_kind_skips_and_counts_each_flaw(kind, flaw, tmp_path):
    from bench.cost_records import read_cost_records
    from bench.records import read_records

    out = _folder(tmp_path, {kind: [flaw]})
    loaded = (read_cost_records if kind == "cost" else read_records)(out)
    assert loaded.bad_lines == 1 and len(loaded.records) == len(_good(kind).splitlines())


@pytest.mark.parametrize("kind", ["runs", "cost"])
def test_report_skips_counts_and_says_malformed_lines_of_every_kind(kind, tmp_path, capsys):
    out = _folder(tmp_path, {kind: FLAWS})
    before = (out / FILES[kind]).read_bytes()
    assert main(["report", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "malformed" in line]
    assert len(said) == 1 and str(out / FILES[kind]) in said[0] and f"{len(FLAWS)} malformed line" in said[0], err
    readme = (out / "README.md").read_text()
    assert f"{len(FLAWS)} malformed line(s) in {FILES[kind]} skipped" in readme
    # The good records still make their tables; the file itself is left as it was.
    assert "## Cost without training" in readme and "efficientnet_b0" in (out / "cost.md").read_text()
    assert (out / FILES[kind]).read_bytes() == before


def test_the_end_of_a_run_reports_past_malformed_cost_lines(tmp_path, capsys):
    """``bench run`` ends by writing the report of its --out folder (commands.report.write_report)."""
    from bench.commands.report import write_report

    out = _folder(tmp_path, {"cost": FLAWS})
    paths = write_report(out)
    assert paths is not None and (out / "cost.md").exists()
    assert f"{len(FLAWS)} malformed line(s) in cost.jsonl skipped" in (out / "README.md").read_text()


@pytest.mark.parametrize("kind", ["runs", "cost"])
@pytest.mark.parametrize("content", ["garbage", "all-flaws", "older-renamed"])
def test_a_file_of_which_no_line_parses_is_an_error_naming_it(kind, content, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    if content == "garbage":
        lines = ["not json", "{also not"]
    elif content == "all-flaws":
        lines = [_bad_line(kind, flaw) for flaw in FLAWS]
    else:  # what an older version with a renamed field would have written
        lines = [json.dumps({("model" if k == "backbone" else k): v for k, v in json.loads(line).items()}) for line in _good(kind).splitlines()]
    (out / FILES[kind]).write_text("\n".join(lines) + "\n")
    before = (out / FILES[kind]).read_bytes()
    assert main(["report", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and str(out / FILES[kind]) in err and f"{len(lines)} line(s)" in err, err
    assert (out / FILES[kind]).read_bytes() == before and not (out / "README.md").exists()


def test_compare_refuses_an_input_with_no_readable_line(tmp_path, capsys):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    shutil.copy(RUNS_FIXTURE, old / RUNS_FILE)
    (new / RUNS_FILE).write_text("\n".join(json.dumps({("model" if k == "backbone" else k): v for k, v in json.loads(line).items()}) for line in RUNS_FIXTURE.read_text().splitlines()) + "\n")
    assert main(["compare", str(old), str(new)]) == 2
    err = capsys.readouterr().err.strip()
    # The only line: both inputs are read before anything (OLD's note on mapped records) is said.
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and str(new / RUNS_FILE) in err and "7 line(s)" in err, err


def test_compare_says_which_input_had_unreadable_lines(tmp_path, capsys):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    shutil.copy(RUNS_FIXTURE, old / RUNS_FILE)
    (new / RUNS_FILE).write_text(RUNS_FIXTURE.read_text() + "[1, 2]\n")
    assert main(["compare", str(old), str(new)]) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "malformed" in line]
    assert len(said) == 1 and said[0].startswith(f"warning: {new / RUNS_FILE}: skipped 1 malformed line(s)"), err


def test_records_of_an_earlier_version_are_mapped_and_the_reader_says_so(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    # The fixture predates identities and failure kinds; a failed cost line of that time had no failure kind.
    shutil.copy(RUNS_FIXTURE, out / RUNS_FILE)
    failed = {**json.loads(COMMITTED_COSTS.read_text().splitlines()[0]), "status": "failed", "error": "timeout: no result after 9 s"}
    (out / COST_FILE).write_text(json.dumps(failed) + "\n" + COMMITTED_COSTS.read_text().splitlines()[1] + "\n")
    assert main(["report", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"note: {out / RUNS_FILE}: 7 run record(s) written by an earlier version" in err, err
    assert f"note: {out / COST_FILE}: 1 cost record(s) written by an earlier version" in err, err
    assert "timeout: no result after 9 s" in (out / "cost.md").read_text()
