"""Reading what a report or a comparison is made from: the latest record per cell (runs) or per
key (costs) across output folders and record files, with the count of malformed lines skipped.

Kept apart from ``bench.stats`` so that statistics are functions of records and read no files.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from bench.records import Record, latest_by_key, read_records


def load(sources) -> tuple[list[Record], int]:
    """Latest record per cell across output folders or ``runs.jsonl`` files, and the bad-line count."""
    records, bad = [], 0
    for source in map(Path, sources):
        loaded = read_records(source)
        records += loaded.records
        bad += loaded.bad_lines
    return list(latest_by_key(records).values()), bad


def load_cost(sources) -> tuple[pd.DataFrame, int]:
    """The latest cost record per key across folders (their ``cost.jsonl``) or ``cost.jsonl``
    files, as a frame ordered by backbone, size and batch; and the bad-line count.

    A ``runs.jsonl`` among the sources is not a cost file and is passed over.
    """
    from bench.cost_records import COST_FIELDS, COST_FILE, read_cost_records

    latest, bad = {}, 0
    for source in map(Path, sources):
        if not source.is_dir() and source.name != COST_FILE:
            continue
        loaded = read_cost_records(source)
        latest.update({r.key: r for r in loaded.records})
        bad += loaded.bad_lines
    frame = pd.DataFrame([dataclasses.asdict(r) for r in latest.values()], columns=list(COST_FIELDS))
    return frame.sort_values(["backbone", "image_size", "batch_size", "key"]).reset_index(drop=True), bad
