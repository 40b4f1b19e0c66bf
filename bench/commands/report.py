"""``bench report``: tables, CSV and plots from the records alone, merging shards' folders."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from bench.errors import UsageError
from bench.preflight import check_out_dir


def write_report(out: Path, extra_inputs=(), project_readme: Path | None = None) -> list[Path] | None:
    """``publish.write_report``; a full disk or a read-only folder is one line on stderr and None."""
    from bench import publish

    try:
        return publish.write_report(out, extra_inputs=extra_inputs, project_readme=project_readme)
    except OSError as error:
        # Every file is replaced whole or not at all (bench.files), so say which one failed, not a traceback.
        rerun = ["python", "-m", "bench", "report", "--out", str(out), *map(str, extra_inputs)]
        if project_readme is not None:
            rerun += ["--readme", str(project_readme)]
        print(
            f"error: could not write the report file {error.filename or out}: {error.strerror or error}; every file keeps its old or its whole new text "
            f"and runs.jsonl is intact; free space or fix permissions, then rerun `{shlex.join(rerun)}`",
            file=sys.stderr,
        )
        return None


def handle(args, command: str) -> int:
    from bench import publish
    from bench.shard_plans import shard_warnings

    for path in args.inputs:
        if not path.exists():
            raise UsageError(f"report input {path} does not exist; pass output folders or runs.jsonl files")
    check_out_dir(args.out)
    if args.readme is not None:
        # Checked before anything is written, so a bad README leaves the report untouched too.
        if not args.readme.is_file():
            raise UsageError(f"--readme {args.readme} does not exist; pass the markdown file whose results section to update")
        try:
            publish.splice_readme(args.readme.read_text(), "")
        except ValueError as error:
            raise UsageError(f"--readme {args.readme}: {error}") from None
    for line in shard_warnings([args.out, *(p if p.is_dir() else p.parent for p in args.inputs)]):
        print(line, file=sys.stderr)
    paths = write_report(args.out, extra_inputs=args.inputs, project_readme=args.readme)
    if paths is None:
        return 1
    print(f"report: {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0
