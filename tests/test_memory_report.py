"""Peak anonymous memory in the report: shown beside peak RSS where records have it, and older
records render byte for byte as before (the committed results regenerate unchanged)."""

import dataclasses
import shutil
from pathlib import Path

import pytest

from bench import publish
from bench.render.runs import ANON_EXPLANATION, render_headline
from bench.stats import records_frame, summarize
from bench.records import append_record, read_records

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "runs.jsonl"


# Each published folder with the other folders its report reads (the commands in its notes).
PUBLISHED = {"results": (), "results/axes": (), "results/from-scratch": ("results",), "results/deploy": (), "results/tuning": (), "results/tuning-cap4": ()}


@pytest.mark.parametrize("folder,inputs", PUBLISHED.items(), ids=list(PUBLISHED))
def test_committed_results_regenerate_byte_for_byte(folder, inputs, tmp_path):
    copy, readme = tmp_path / "results", tmp_path / "README.md"
    shutil.copytree(ROOT / "results", copy)
    shutil.copy(ROOT / "README.md", readme)
    out = tmp_path / folder
    written = publish.write_report(out, [tmp_path / extra for extra in inputs], project_readme=readme if folder == "results" else None)
    assert {p.name for p in written} >= {"README.md"}
    for path in written:
        committed = ROOT / path.relative_to(tmp_path)
        assert path.read_bytes() == committed.read_bytes(), f"{committed} changed"


def _columns(text: str, after: str = "") -> list[str]:
    """The column names of the first table in ``text`` after the line ``after``."""
    header = next(line for line in text[text.index(after):].splitlines() if line.startswith("| backbone"))
    return [cell.strip() for cell in header.split("|")]


def test_peak_anon_column_only_where_records_have_it(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    records = read_records(FIXTURE).records
    for folder, anon in ((old, None), (new, 1234.0)):
        folder.mkdir()
        for i, record in enumerate(records):
            append_record(folder, dataclasses.replace(record, peak_anon_mb=None if anon is None else anon + i))
        publish.write_report(folder)
    old_text, new_text = (old / "README.md").read_text(), (new / "README.md").read_text()
    assert "anon" not in old_text and "peak_anon_mb" not in (old / "summary.csv").read_text()
    columns = _columns(new_text, "## Cost")
    assert columns.index("peak anon MB") == columns.index("peak RSS MB") + 1
    assert ANON_EXPLANATION in new_text and "peak_anon_mb" in (new / "summary.csv").read_text().splitlines()[0]
    assert "1,234" in new_text
    summary = summarize(records_frame(read_records(new).records))
    headline = render_headline(records_frame(read_records(new).records), summary)
    columns = _columns(headline)
    assert columns.index("peak anon MB") == columns.index("peak RSS MB") + 1 and ANON_EXPLANATION in headline
