"""Test stand-in for the internet: every Keras download goes to ``$BENCH_TEST_ORIGIN`` (a local
server) and is checked against ``$BENCH_TEST_HASHES`` (file name -> sha256) instead of the
real files' hashes. Imported through ``BENCH_BACKBONE_MODULES``, so `bench` processes load it.
"""

import json
import os

from keras.src.datasets import cifar10
from keras.src.utils import file_utils

_real_get_file = file_utils.get_file


def get_file(fname=None, origin=None, *args, file_hash=None, **kwargs):
    name = origin.rsplit("/", 1)[-1]
    hashes = json.loads(os.environ.get("BENCH_TEST_HASHES", "{}"))
    return _real_get_file(fname, os.environ["BENCH_TEST_ORIGIN"].rstrip("/") + "/" + name, *args, file_hash=hashes.get(name, file_hash), **kwargs)


# cifar10 bound the name at import; the applications call file_utils.get_file.
file_utils.get_file = get_file
cifar10.get_file = get_file
