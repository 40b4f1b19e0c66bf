"""A cell's key and digests, computed from its identity alone (``bench.grid.IDENTITY_FIELDS``).

The key is what ``--resume`` looks up, what ``latest_by_key`` deduplicates on and what log
and artifact file names derive from, so it may hold nothing the identity does not: two
requests with one identity (the same images under two folder names, say) get one key. Kept
apart from ``bench.grid`` so ``bench.records`` can key the records of earlier versions on
read without importing the grid. Imports nothing of ``bench``.
"""

from __future__ import annotations

import hashlib
import json

# Identities were hashed, up to records schema 1, with a "loader" entry that every cell of a
# sweep had as "batched" (the in-memory loader is now `bench perf --memory`'s own option, not
# part of the identity). Hashing with that entry as a default keeps every digest published
# since: the committed records' keys and the group ids in summary.csv are unchanged.
_HASHED_SINCE_SCHEMA_1 = {"loader": "batched"}
# Identity fields added later, hashed only where they differ from the value every earlier
# cell had: a default cell keeps the key and group id it was published under.
_HASHED_UNLESS = {"recipes": None, "fit_on": "train"}


def digest(value) -> str:
    """A short stable hash of a JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:10]


def identity_digest(identity: dict) -> str:
    """The digest of an identity (or of a group's: an identity without its seed)."""
    kept = {name: value for name, value in identity.items() if name not in _HASHED_UNLESS or value != _HASHED_UNLESS[name]}
    return digest({**_HASHED_SINCE_SCHEMA_1, **kept})


def data_tag(dataset_id: str) -> str:
    """The readable name of the data in a key, from its content fingerprint alone.

    Keras's CIFAR-10 and the synthetic set are named; an image folder is ``folder`` whatever
    it is called (the digest tells folders apart). A record written before records carried
    identities knew its data only by a label (``label:NAME``): that label is its identity.
    """
    kind, colon, value = str(dataset_id).partition(":")
    if not colon:
        return kind
    return value if kind == "label" else "folder"


def cell_key(identity: dict) -> str:
    """Readable where it can be, unique always: the identity's digest ends it."""
    readable = "/".join(
        [
            str(identity["backbone"]),
            str(identity["stage"]),
            f"{identity['image_size']}px",
            str(identity["augment"]),
            f"seed{identity['seed']}",
            data_tag(identity["dataset_id"]),
            str(identity["profile"]),
        ]
    )
    return f"{readable}/{identity_digest(identity)}"
