"""One module per command, each with ``handle(args, command) -> int``.

``args`` is the parsed command line, ``command`` the line as typed (stamped on records and
reports). ``bench.cli`` imports only the module of the command given, so ``list`` and
``--help`` load nothing heavy. ``run_then_report`` is the ending the measuring commands share.
"""

from __future__ import annotations

import sys
from pathlib import Path


def run_then_report(out: Path, run, write_report, name: str, noun: str, table: str) -> int:
    """``run()`` (returns the records it appended), then ``write_report()`` (returns the files written).

    Returns:
        1 where a record failed (say how many, and where to look) or a write failed (one line:
        appends and tables are all-or-nothing writes, so what was there before is intact); else 0.
    """
    try:
        records = run()
        paths = write_report()
    except OSError as error:
        print(f"error: could not write to {out}/ ({error.strerror or error}); every earlier record is kept; free space or pick another --out", file=sys.stderr)
        return 1
    print(f"{name}: {', '.join(str(p) for p in paths)}", file=sys.stderr)
    failed = sum(r.status != "ok" for r in records)
    if failed:
        print(f"{failed} of {len(records)} {noun} failed; see {out}/{table} and the logs in {out}/logs/", file=sys.stderr)
        return 1
    return 0
