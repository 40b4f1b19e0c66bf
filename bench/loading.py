"""Reading what a report or a comparison is made from: the latest record per cell (runs) or per
key (costs) across output folders and record files, with the count of malformed lines skipped;
and every recorded measurement's span, which says whether a cell had the cores to itself.

Kept apart from ``bench.stats`` so that statistics are functions of records and read no files.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pandas as pd

from bench import record_store
from bench.errors import UsageError
from bench.records import RUNS, TRIALS, TRIALS_FILE, Record, latest_by_key


def load(sources) -> tuple[list[Record], int]:
    """Latest record per cell across output folders or ``runs.jsonl`` files, and the bad-line count.

    Raises:
        UsageError: a file has lines but no readable record.
    """
    every, bad_lines = load_every(sources)
    return list(latest_by_key(every).values()), bad_lines


def load_every(sources) -> tuple[list[Record], int]:
    """Every run record across output folders or ``runs.jsonl`` files, re-runs of a cell and the
    attempts they replaced included (what a whole run cost), and the bad-line count.

    A ``cost.jsonl``, ``trials.jsonl`` or ``deploy.jsonl`` among the sources is not a runs file and is passed over. Skipped lines and
    records of earlier versions are said on stderr (``record_store.load``).

    Raises:
        UsageError: a file has lines but no readable record.
    """
    kinds = _record_kinds()
    loaded = record_store.load([s for s in map(Path, sources) if s.is_dir() or kinds.get(s.name, RUNS) is RUNS], RUNS)
    return loaded.records, loaded.bad_lines


def load_trials(sources) -> tuple[list[Record], int]:
    """The tuning trials' records across folders (their ``trials.jsonl``) or ``trials.jsonl``
    files, the latest per (study, trial number), ordered by study and number; and the bad-line count.

    Raises:
        UsageError: a file has lines but no readable record.
    """
    loaded = record_store.load([s for s in map(Path, sources) if s.is_dir() or s.name == TRIALS_FILE], TRIALS)
    latest = {(r.study, r.trial): r for r in loaded.records}
    return [latest[key] for key in sorted(latest)], loaded.bad_lines


def load_timings(sources) -> pd.DataFrame:
    """Every recorded measurement in the record files of ``sources`` and of every folder below
    them: run cells, tuning trials, cost and deployment rows, replaced attempts included; one row
    each with its kind, key, host, start and wall seconds. What ``time_spent.overlapped`` checks a
    cell against: any of them on the cell's host while it ran shared its cores.

    A converted model's row starts its ``convert_seconds`` before its stamp: the conversion ran
    just before the measurement, in a process of its own, and its wall seconds count it. The
    inputs' own files are read (and their bad lines said) by the loaders of what they report;
    here a file that cannot be read only leaves its measurements out.
    """
    kinds = _record_kinds()
    files = set()
    for source in map(Path, sources):
        if source.is_dir():
            files.update((found.resolve(), found.name) for found in source.rglob("*.jsonl") if found.name in kinds)
        elif source.exists():
            files.add((source.resolve(), source.name))
    rows = []
    for path, name in sorted(files):
        kind = kinds.get(name, RUNS)
        try:
            records = record_store.read(path, kind).records
        except UsageError:
            continue
        for record in records:
            flat = record_store.as_flat_dict(record)
            rows.append({"kind": kind.name, "key": flat["key"], "hostname": flat.get("hostname", ""), "started_at": _lead(flat.get("started_at", ""), flat.get("convert_seconds")), "wall_seconds": flat.get("wall_seconds")})
    return pd.DataFrame(rows, columns=["kind", "key", "hostname", "started_at", "wall_seconds"])


def _record_kinds() -> dict:
    """Each kind of record by its file's name. A file of any other name is a runs file, as
    ``load_every`` reads one given by name."""
    from bench.cost_records import COSTS
    from bench.deploy_records import DEPLOYS

    return {kind.file_name: kind for kind in (RUNS, TRIALS, COSTS, DEPLOYS)}


def _lead(started_at: str, seconds) -> str:
    """``started_at`` moved ``seconds`` earlier (as it is where there are none, or it is no time)."""
    try:
        return (datetime.datetime.fromisoformat(started_at) - datetime.timedelta(seconds=seconds)).isoformat(timespec="seconds") if seconds else started_at
    except (TypeError, ValueError):
        return started_at


def load_apart(sources) -> list[list[Record]]:
    """``load`` for each source on its own (``compare``'s two sides); every source is read before
    anything is said, so an unreadable one is the only line.

    Raises:
        UsageError: a file has lines but no readable record.
    """
    return [list(latest_by_key(loaded.records).values()) for loaded in record_store.load_each(list(map(Path, sources)), RUNS)]


def load_cost(sources) -> tuple[pd.DataFrame, int]:
    """The latest cost record per key across folders (their ``cost.jsonl``) or ``cost.jsonl``
    files, as a frame ordered by backbone, size, batch and runtime; and the bad-line count.

    A ``runs.jsonl`` among the sources is not a cost file and is passed over.

    Raises:
        UsageError: a file has lines but no readable record.
    """
    from bench.cost_records import COST_FIELDS, COST_FILE, COSTS
    from bench.runtimes import RUNTIMES

    loaded = record_store.load([s for s in map(Path, sources) if s.is_dir() or s.name == COST_FILE], COSTS)
    latest = latest_by_key(loaded.records)
    frame = pd.DataFrame([record_store.as_flat_dict(r) for r in latest.values()], columns=list(COST_FIELDS))
    order = list(RUNTIMES)
    frame["runtime_order"] = [order.index(r) if r in order else len(order) for r in frame["runtime"]]
    frame = frame.sort_values(["backbone", "image_size", "batch_size", "runtime_order", "key"]).drop(columns="runtime_order")
    return frame.reset_index(drop=True), loaded.bad_lines


def load_deploy(sources) -> tuple[pd.DataFrame, int]:
    """The latest deployment record per key across folders (their ``deploy.jsonl``) or
    ``deploy.jsonl`` files, as a frame; and the bad-line count.

    Raises:
        UsageError: a file has lines but no readable record.
    """
    from bench.deploy_records import DEPLOY_FIELDS, DEPLOY_FILE, DEPLOYS

    loaded = record_store.load([s for s in map(Path, sources) if s.is_dir() or s.name == DEPLOY_FILE], DEPLOYS)
    latest = latest_by_key(loaded.records)
    return pd.DataFrame([record_store.as_flat_dict(r) for r in latest.values()], columns=list(DEPLOY_FIELDS)), loaded.bad_lines
