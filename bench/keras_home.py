"""Where Keras keeps its downloads, found as Keras finds it, so messages name the folder actually used.

Without importing Keras: the offline hints are built before (or instead of) loading it.
"""

from __future__ import annotations

import os
from pathlib import Path


def keras_cache_dir() -> Path:
    """The folder Keras's ``get_file`` downloads into (it adds ``datasets/`` or ``models/``).

    Keras 3 (``keras.src.backend.config`` and ``keras.src.utils.file_utils.get_file``) takes
    ``$KERAS_HOME``, else ``~/.keras`` (``/tmp/.keras`` when the home folder is read-only), and
    falls back to ``/tmp/.keras`` when that folder is not writable, including when it does not
    exist yet.
    """
    if "KERAS_HOME" in os.environ:
        home = os.environ["KERAS_HOME"]
    else:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    home = os.path.expanduser(home)
    if not os.access(home, os.W_OK):
        return Path("/tmp") / ".keras"
    return Path(home)
