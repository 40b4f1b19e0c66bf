"""``bench cache``: the cache folder's size and the entries its manifest lists; ``--clear --yes`` removes them."""

from __future__ import annotations

import sys
import time

from bench.data import DEFAULT_CACHE_DIR
from bench.errors import UsageError


def handle(args, command: str) -> int:
    from bench import cache_admin
    from bench.render.cache import render_cache

    if args.cache_dir.exists() and not args.cache_dir.is_dir():
        raise UsageError(f"--cache-dir {args.cache_dir} is a file, not a folder; pass the cache folder (default {DEFAULT_CACHE_DIR})")
    if args.yes and not args.clear:
        raise UsageError("--yes confirms --clear and does nothing alone; add --clear (without --yes, --clear lists what it would remove)")
    if args.adopt:
        if args.clear:
            raise UsageError("--adopt and --clear are separate steps; adopt first, then list with --clear")
        adopted, left = cache_admin.adopt(args.cache_dir)
        print(f"adopted {len(adopted)} entr{'y' if len(adopted) == 1 else 'ies'} into the manifest of {args.cache_dir}" + (f"; left alone {len(left)} whose .sha256 does not match: {', '.join(p.name for p in left)}" if left else ""))
        return 0
    listing, now = cache_admin.list_cache(args.cache_dir), time.time()
    if args.cache_dir.is_dir() and not listing.marked:
        if args.clear:
            raise UsageError(cache_admin.unmarked_note(args.cache_dir))
        print(render_cache(listing, [], now))
        print(f"note: {cache_admin.unmarked_note(args.cache_dir)}")
        return 0
    if listing.unreadable_records:
        print(f"note: {len(listing.unreadable_records)} unreadable manifest record(s) left alone, with what they describe (first: {listing.unreadable_records[0]})", file=sys.stderr)
    chosen = cache_admin.select(listing, args.older_than, now)
    print(render_cache(listing, chosen, now))
    if not args.clear:
        return 0
    if not args.yes:
        print(f"dry run: --clear would remove the {len(chosen)} entr{'y' if len(chosen) == 1 else 'ies'} listed above and nothing else; add --yes to remove them")
        return 0
    print(f"removing the {len(chosen)} entr{'y' if len(chosen) == 1 else 'ies'} listed above", flush=True)
    try:
        cache_admin.remove(listing, chosen)
    except OSError as error:
        raise UsageError(f"cannot remove {error.filename}: {error.strerror}; fix its permissions or remove it by hand") from None
    print(render_cache(cache_admin.list_cache(args.cache_dir), [], now, removed=chosen))
    return 0
