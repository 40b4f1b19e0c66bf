"""``bench cache`` output: the cache folder's totals by kind, its entries, or what was removed."""

from __future__ import annotations

from bench.render.format import table


def _bytes(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:,.1f} {unit}"
    return f"{count} B"


def _age(days: float) -> str:
    return f"{days:.1f} d" if days >= 1 else f"{24 * days:.1f} h"


def _entries(count: int) -> str:
    return f"{count} entr{'y' if count == 1 else 'ies'}"


def render_cache(listing, shown, now: float, removed: list | None = None) -> str:
    """Text for ``bench cache``: totals by kind, then the ``shown`` entries, or what was removed.

    Args:
        listing: the folder's entries (``cache_admin.list_cache``); ``exists`` says whether the folder is there.
        shown: the entries to list one by one.
        now: the clock ages are measured against (seconds since the epoch).
        removed: the entries just removed, or ``None`` where nothing was.
    """
    entries = listing.entries
    parts = [f"cache {listing.folder}: {_bytes(listing.total_bytes)} in {_entries(len(entries))}"]
    if not listing.exists:
        parts[0] += " (the folder does not exist)"
    kinds = {}
    for entry in entries:
        kinds.setdefault(entry.kind, []).append(entry)
    if kinds:
        totals = [{"kind": kind, "entries": len(group), "size": _bytes(sum(e.size_bytes for e in group)), "newest": _age(min(e.age_days(now) for e in group))} for kind, group in kinds.items()]
        parts += ["", table(totals)]
    if removed is not None:
        parts += ["", f"removed {_entries(len(removed))}, {_bytes(sum(e.size_bytes for e in removed))}"]
    elif shown:
        parts += ["", table([{"kind": e.kind, "entry": e.path.name, "size": _bytes(e.size_bytes), "age": _age(e.age_days(now))} for e in shown])]
    return "\n".join(parts)
