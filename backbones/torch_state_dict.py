"""Reads a PyTorch state dict (a ``.pth`` file) into NumPy arrays, without torch and without
running any code the file's pickle asks for.

``torch.save`` writes a pickle, and a pickle may name any importable function and call it
(``os.system`` among them): loading an untrusted one with ``pickle`` or a plain ``torch.load``
runs whatever it says. A state dict is made of very little: ordered dicts, tensors rebuilt by
``torch._utils._rebuild_tensor_v2`` from typed storages (``torch.FloatStorage``, ...) that the
pickle names by persistent id, and the raw bytes of those storages. The unpickler here maps
exactly those names to inert stand-ins of its own and refuses every other one, so nothing the
file names is ever imported or called.

Both serialisations are read: the legacy one (``_use_new_zipfile_serialization=False``: four
pickles in a row, then each storage's element count and bytes) and the zip one (``data.pkl``
beside one ``data/<key>`` entry per storage).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

# The legacy format's first two pickles: a magic number and the serialisation's version.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# The typed storages a tensor of a state dict may live in, and their little-endian layout
# (torch writes storages in the machine's order; the legacy header and the zip's
# ``byteorder`` entry say little-endian for every file this reader accepts).
STORAGE_DTYPES = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class StateDictError(ValueError):
    """A file that is not a state dict this reader accepts; the message is one line."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple
    stride: tuple


def _is_int_tuple(value) -> bool:
    return isinstance(value, tuple) and all(type(v) is int and v >= 0 for v in value)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """The stand-in for ``torch._utils._rebuild_tensor_v2``: records where the tensor's values lie."""
    if not isinstance(storage, _StorageRef) or type(storage_offset) is not int or storage_offset < 0:
        raise StateDictError("a tensor's storage or offset is malformed")
    if not _is_int_tuple(size) or not _is_int_tuple(stride) or len(size) != len(stride):
        raise StateDictError("a tensor's size or stride is malformed")
    if backward_hooks:
        raise StateDictError("a tensor carries backward hooks, which a state dict never holds")
    return _TensorRef(storage, storage_offset, size, stride)


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only a state dict's own names, each to an inert stand-in; refuses the rest."""

    def __init__(self, file, persistent_id_length: int):
        super().__init__(file)
        self.persistent_id_length = persistent_id_length
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise StateDictError(f"its pickle asks for {module}.{name}, which a state dict never holds (the file may try to run code); nothing was loaded") from None

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, element count) in the zip format; the legacy
        # one adds view metadata, None for every storage written by torch 1.0 and later.
        if not (isinstance(pid, tuple) and len(pid) == self.persistent_id_length and pid[0] == "storage"):
            raise StateDictError(f"a persistent id is not a storage reference: {str(pid)[:80]}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise StateDictError(f"a storage reference is malformed: {str(pid)[:80]}")
        if len(pid) == 6 and pid[5] is not None:
            raise StateDictError("a storage view (pre-1.0 torch) is not supported")
        ref = _StorageRef(key, storage_type.dtype, numel)
        if self.storages.setdefault(key, ref) != ref:
            raise StateDictError(f"storage {key} is referenced with two different types or sizes")
        return ref


def _load_plain(file):
    """One of the legacy format's header pickles: plain data only (no name resolves)."""
    return _RestrictedUnpickler(file, persistent_id_length=0).load()


def read_state_dict(path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch state dict file, by name, in the file's order.

    Raises:
        StateDictError: the file is not a flat state dict of tensors in either format, its
            pickle names anything but a state dict's parts, or its storages are inconsistent
            with the tensors; one line, naming the file.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            tensors, blobs = _read_zip(path)
        else:
            with open(path, "rb") as file:
                tensors, blobs = _read_legacy(file)
        return {name: _materialise(ref, blobs) for name, ref in tensors.items()}
    except StateDictError as error:
        raise StateDictError(f"{path}: {error}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, struct.error, zipfile.BadZipFile) as error:
        # Malformed pickles surface as any of these from the pickle machinery.
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise StateDictError(f"{path}: not a PyTorch state dict ({type(error).__name__}: {first})") from None


def _check_state_dict(value) -> dict[str, _TensorRef]:
    if not isinstance(value, dict):
        raise StateDictError(f"its pickle holds a {type(value).__name__}, not a state dict (a dict of tensors)")
    for name, tensor in value.items():
        if not isinstance(name, str) or not isinstance(tensor, _TensorRef):
            raise StateDictError(f"entry {str(name)[:60]!r} is not a named tensor (a nested checkpoint? pass the state dict itself)")
    return value


def _read_legacy(file) -> tuple[dict[str, _TensorRef], dict[str, bytes]]:
    if _load_plain(file) != LEGACY_MAGIC:
        raise StateDictError("neither a zip archive nor a legacy torch.save file (wrong magic number)")
    protocol = _load_plain(file)
    if protocol != LEGACY_PROTOCOL:
        raise StateDictError(f"legacy serialisation protocol {protocol!r}, not {LEGACY_PROTOCOL}")
    sys_info = _load_plain(file)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise StateDictError("written on a big-endian machine, or without its system header")
    unpickler = _RestrictedUnpickler(file, persistent_id_length=6)
    tensors = _check_state_dict(unpickler.load())
    keys = _load_plain(file)
    if not isinstance(keys, list) or sorted(keys) != sorted(unpickler.storages):
        raise StateDictError("the storage list does not match the storages the tensors use")
    blobs = {}
    for key in keys:
        ref = unpickler.storages[key]
        (numel,) = struct.unpack("<q", file.read(8))
        if numel != ref.numel:
            raise StateDictError(f"storage {key} holds {numel} elements, its reference says {ref.numel}")
        blobs[key] = file.read(numel * ref.dtype.itemsize)
        if len(blobs[key]) != numel * ref.dtype.itemsize:
            raise StateDictError(f"the file ends inside storage {key} (truncated?)")
    if file.read(1):
        raise StateDictError("bytes follow the last storage")
    return tensors, blobs


def _read_zip(path: Path) -> tuple[dict[str, _TensorRef], dict[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise StateDictError("a zip archive without exactly one <folder>/data.pkl (not a torch.save file)")
        prefix = pickles[0][: -len("data.pkl")]
        if prefix + "byteorder" in names and archive.read(prefix + "byteorder").strip() != b"little":
            raise StateDictError("written in big-endian byte order")
        unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), persistent_id_length=5)
        tensors = _check_state_dict(unpickler.load())
        blobs = {}
        for key, ref in unpickler.storages.items():
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise StateDictError(f"storage {key} has no entry {entry} in the archive")
            blobs[key] = archive.read(entry)
            if len(blobs[key]) != ref.numel * ref.dtype.itemsize:
                raise StateDictError(f"storage {key} holds {len(blobs[key])} bytes, its reference says {ref.numel} elements of {ref.dtype.itemsize}")
    return tensors, blobs


def _materialise(ref: _TensorRef, blobs: dict[str, bytes]) -> np.ndarray:
    """The tensor's values as an owned, native-order array (bounds checked before any view)."""
    storage = np.frombuffer(blobs[ref.storage.key], dtype=ref.storage.dtype)
    if 0 not in ref.size:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
        if last >= ref.storage.numel:
            raise StateDictError(f"a tensor of shape {ref.size} reaches past the end of storage {ref.storage.key}")
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[ref.offset :], shape=ref.size, strides=[s * itemsize for s in ref.stride], writeable=False)
    return view.astype(storage.dtype.newbyteorder("="), copy=True)
