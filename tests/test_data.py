import os

import numpy as np
import pytest
from PIL import Image

from bench.cache_manifest import read_record
from bench.data import load_image_folder, load_raw, make_synthetic, prepare, split_validation
from bench.errors import UsageError


def _write_tree(root, counts, size=(8, 8), order=None, split_sizes=None):
    """An image folder with ``counts[class]`` images per split; files written in ``order``."""
    jobs = []
    for split in ("train", "test"):
        for name, count in counts.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count if split == "train" else max(1, count // 2)):
                jobs.append((root / split / name / f"{i:04d}.png", (split_sizes or {}).get((split, name, i), size)))
    if order == "reversed":
        jobs = jobs[::-1]
    for path, image_size in jobs:
        seed = sum(map(ord, str(path.relative_to(root))))
        pixels = np.random.default_rng(seed).integers(0, 255, (image_size[1], image_size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
    return root


def test_validation_split_is_stratified_and_seeded():
    labels = np.repeat(np.arange(5), [100, 50, 20, 10, 40])
    train, val = split_validation(labels, 0.1, seed=3)
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(labels)
    for c, n in zip(range(5), [100, 50, 20, 10, 40]):
        assert np.sum(labels[val] == c) == round(0.1 * n)
    again = split_validation(labels, 0.1, seed=3)
    assert np.array_equal(val, again[1])
    assert not np.array_equal(val, split_validation(labels, 0.1, seed=4)[1])


def test_split_does_not_depend_on_class_sorted_order():
    """The shared copy is sorted by class: the split must pick from across each class."""
    labels = np.repeat(np.arange(2), 100)
    _, val = split_validation(labels, 0.1, seed=0)
    picked = val[labels[val] == 0]
    assert picked.max() - picked.min() > 50  # not simply the first or last files


def test_prepare_subsets_stratified_and_keeps_test_out_of_choices():
    raw = make_synthetic(train_per_class=50, test_per_class=20)
    data = prepare(raw, seed=0, val_fraction=0.2, train_images=200, test_images=100)
    assert len(data.train_index) + len(data.val_index) == 200
    assert np.bincount(data.y_val).tolist() == [4] * 10
    assert np.bincount(data.y_test).tolist() == [10] * 10


def test_labels_out_of_range_rejected():
    raw = make_synthetic(train_per_class=4, test_per_class=2)
    bad = type(raw)(raw.name, raw.class_names, raw.x_train, raw.y_train + 5, raw.x_test, raw.y_test)
    with pytest.raises(UsageError, match="labels out of range"):
        prepare(bad, seed=0)


def test_image_folder_reads_and_ignores_file_order(tmp_path):
    a = load_image_folder(_write_tree(tmp_path / "a", {"cat": 6, "dog": 4}), cache_dir=tmp_path / "cache")
    b = load_image_folder(_write_tree(tmp_path / "b", {"cat": 6, "dog": 4}, order="reversed"), cache_dir=tmp_path / "cache")
    assert a.class_names == ("cat", "dog")
    assert a.x_train.shape == (10, 8, 8, 3) and a.x_test.shape == (5, 8, 8, 3)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_train, b.y_train)
    assert np.bincount(a.y_train).tolist() == [6, 4]


def test_image_folder_cache_is_reused_and_invalidated(tmp_path):
    root = _write_tree(tmp_path / "d", {"a": 3, "b": 3})
    first = load_image_folder(root, cache_dir=tmp_path / "cache")
    # One memory-mapped .npy entry per split, each listed in the manifest with its checksum.
    entries = sorted((tmp_path / "cache" / "datasets").glob("*.npy"))
    assert sorted(e.name.rsplit(".", 2)[1] for e in entries) == ["x_test", "x_train"]
    assert all(read_record(e)["sha256"] for e in entries)
    assert isinstance(first.x_train, np.memmap) and isinstance(load_image_folder(root, cache_dir=tmp_path / "cache").x_test, np.memmap)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "a" / "0000.png")
    os.utime(root / "train" / "a" / "0000.png", ns=(1, 1))
    second = load_image_folder(root, cache_dir=tmp_path / "cache")
    assert not np.array_equal(first.x_train[0], second.x_train[0])
    assert second.x_train[0].max() == 0


def test_a_train_only_load_lists_no_test_folder_and_shares_the_training_entry(tmp_path):
    import shutil

    root = _write_tree(tmp_path / "d", {"a": 3, "b": 3})
    full = load_image_folder(root, cache_dir=tmp_path / "cache")
    shutil.rmtree(root / "test")  # a load that so much as listed test/ would fail
    train_only = load_image_folder(root, cache_dir=tmp_path / "cache", with_test=False)
    assert train_only.x_test is None and train_only.y_test is None
    assert np.array_equal(train_only.x_train, full.x_train) and len(list((tmp_path / "cache" / "datasets").glob("*.npy"))) == 2


def test_mixed_image_sizes_are_resized_to_the_common_size(tmp_path):
    root = _write_tree(tmp_path / "m", {"a": 3, "b": 3}, split_sizes={("train", "a", 0): (12, 10)})
    raw = load_image_folder(root, cache_dir=tmp_path / "cache")
    assert raw.x_train.shape[1:] == (8, 8, 3)


def test_image_sizes_too_different_to_resize_are_rejected(tmp_path):
    root = _write_tree(tmp_path / "m", {"a": 3, "b": 3}, split_sizes={("train", "b", 2): (40, 8)})
    with pytest.raises(UsageError, match=r"image .*b/0002.png is 40x8 but most images are 8x8"):
        load_image_folder(root, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    "breakage,message",
    [
        ("no_train", "has no train/ subfolder"),
        ("no_test", "has no test/ subfolder"),
        ("class_mismatch", "different classes"),
        ("empty", "holds no images"),
        ("empty_class", "hold no images"),
        ("corrupt", "cannot read image .*0001.png"),
    ],
)
def test_image_folder_errors_name_the_problem(tmp_path, breakage, message):
    root = _write_tree(tmp_path / "d", {"a": 3, "b": 3})
    import shutil

    if breakage == "no_train":
        shutil.rmtree(root / "train")
    elif breakage == "no_test":
        shutil.rmtree(root / "test")
    elif breakage == "class_mismatch":
        shutil.move(root / "test" / "b", root / "test" / "c")
    elif breakage == "empty":
        for f in (root / "train").rglob("*.png"):
            f.unlink()
    elif breakage == "empty_class":
        for f in (root / "train" / "b").glob("*.png"):
            f.unlink()
    elif breakage == "corrupt":
        (root / "train" / "a" / "0001.png").write_bytes(b"not an image")
    with pytest.raises(UsageError, match=message):
        load_image_folder(root, cache_dir=tmp_path / "cache")


def test_class_too_small_to_split(tmp_path):
    raw = load_image_folder(_write_tree(tmp_path / "d", {"a": 3, "b": 1}), cache_dir=tmp_path / "cache")
    with pytest.raises(UsageError, match="at least 2 are needed"):
        prepare(raw, seed=0)


def test_unknown_source_rejected(tmp_path):
    with pytest.raises(UsageError, match="neither 'cifar10', 'synthetic' nor a directory"):
        load_raw(str(tmp_path / "missing"))


def test_cifar10_offline_says_where_to_put_the_file(monkeypatch, tmp_path):
    import keras

    def offline():
        raise Exception("URL fetch failure: Name or service not known")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    # The hint names the folder Keras will look in: here a KERAS_HOME of the test's own.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(UsageError, match=rf"save .*cifar-10-python.tar.gz as {tmp_path}/datasets/cifar-10-batches-py-target_archive"):
        load_raw("cifar10")


def _png_header_only(path, width, height):
    """A PNG that declares ``width`` x ``height`` and holds no pixels: Pillow checks the size on open."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b""))
    return path


def _mode_image(mode):
    """(a small image in ``mode``, the uint8 RGB it must decode to, the suffix that keeps the mode)."""
    if mode == "I;16":
        values = np.array([[0, 257, 32896, 65535]], np.uint16)
        return Image.fromarray(values), np.repeat(np.array([[0, 1, 128, 255]], np.uint8)[..., None], 3, -1), ".png"
    if mode == "I":
        values = np.array([[0, 257, 32896, 65535]], np.int32)
        return Image.fromarray(values, mode="I"), np.repeat(np.array([[0, 1, 128, 255]], np.uint8)[..., None], 3, -1), ".tif"
    if mode == "F":
        values = np.array([[0.0, 0.25, 0.5, 1.0]], np.float32)
        return Image.fromarray(values, mode="F"), np.repeat(np.array([[0, 64, 128, 255]], np.uint8)[..., None], 3, -1), ".tif"
    if mode == "LA":
        image = Image.fromarray(np.array([[[0, 0], [0, 255], [100, 255], [255, 255]]], np.uint8), mode="LA")
        return image, np.repeat(np.array([[255, 0, 100, 255]], np.uint8)[..., None], 3, -1), ".png"  # transparent -> white
    if mode == "P":
        image = Image.new("P", (4, 1))
        image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
        image.putdata([0, 1, 2, 1])
        image.info["transparency"] = 0
        return image, np.array([[[255, 255, 255], [255, 0, 0], [0, 0, 255], [255, 0, 0]]], np.uint8), ".png"
    if mode == "CMYK":
        image = Image.fromarray(np.array([[[255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 0, 255], [0, 0, 0, 0]]], np.uint8), mode="CMYK")
        return image, np.array([[[0, 255, 255], [255, 0, 255], [0, 0, 0], [255, 255, 255]]], np.uint8), ".tif"
    if mode == "1":
        image = Image.fromarray(np.array([[0, 255, 0, 255]], np.uint8)).convert("1")
        return image, np.repeat(np.array([[0, 255, 0, 255]], np.uint8)[..., None], 3, -1), ".png"
    raise ValueError(mode)


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "LA", "P", "CMYK", "1"])
def test_every_pillow_mode_decodes_scaled_not_clipped(tmp_path, mode):
    from bench.image_files import decode as _decode

    image, expected, suffix = _mode_image(mode)
    path = tmp_path / f"image{suffix}"
    image.save(path, **({"transparency": 0} if mode == "P" else {}))
    with Image.open(path) as check:
        assert check.mode.startswith(mode[0]), check.mode  # the file kept a mode of that family
    assert np.array_equal(_decode([path], None)[0], expected)


def test_sixteen_bit_png_keeps_its_tones(tmp_path):
    """Pillow's own RGB conversion clips 16-bit values: the issue's 99.9 % white pixels."""
    from bench.image_files import decode as _decode

    gradient = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(gradient).save(tmp_path / "g.png")
    decoded = _decode([tmp_path / "g.png"], None)[0]
    assert (decoded == 255).mean() < 0.01
    assert abs(float(decoded.mean()) - gradient.mean() / 257) < 1


def test_images_in_nested_class_subfolders_are_read(tmp_path):
    root = _write_tree(tmp_path / "d", {"a": 4, "b": 4})
    (root / "train" / "a" / "extra" / "deeper").mkdir(parents=True)
    for i, folder in enumerate([root / "train" / "a" / "extra", root / "train" / "a" / "extra" / "deeper"]):
        Image.fromarray(np.full((8, 8, 3), 200 + i, np.uint8)).save(folder / f"n{i}.png")
    raw = load_image_folder(root, cache_dir=tmp_path / "cache")
    assert np.bincount(raw.y_train).tolist() == [6, 4]
    assert {200, 201} <= set(raw.x_train[raw.y_train == 0][:, 0, 0, 0].tolist())


def test_broken_symlink_is_named(tmp_path):
    root = _write_tree(tmp_path / "d", {"a": 3, "b": 3})
    (root / "train" / "b" / "gone.png").symlink_to(tmp_path / "missing.png")
    with pytest.raises(UsageError, match=r"image .*b/gone.png is a broken symbolic link .*missing.png"):
        load_image_folder(root, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("side", [13500, 10000], ids=["over-2x-limit-error", "over-limit-warning"])
def test_decompression_bomb_is_named_not_decoded(tmp_path, side):
    root = _write_tree(tmp_path / "d", {"a": 3, "b": 3})
    _png_header_only(root / "train" / "a" / "bomb.png", side, side)
    with pytest.raises(UsageError, match=r"image .*a/bomb.png is too large to decode safely"):
        load_image_folder(root, cache_dir=tmp_path / "cache")


def test_too_few_images_names_the_class_folder(tmp_path):
    raw = load_image_folder(_write_tree(tmp_path / "d", {"cats": 3, "dogs": 1}), cache_dir=tmp_path / "cache")
    with pytest.raises(UsageError, match=r"class folder .*d/train/dogs has 1 training image"):
        prepare(raw, seed=0)


@pytest.mark.parametrize("damage", ["truncate", "same-size"])
def test_a_damaged_dataset_cache_heals_with_one_line(tmp_path, capsys, damage):
    root = _write_tree(tmp_path / "d", {"a": 3, "b": 3})
    first = np.array(load_image_folder(root, cache_dir=tmp_path / "cache").x_train)
    (entry,) = (tmp_path / "cache" / "datasets").glob("*.x_train.npy")
    if damage == "truncate":
        os.truncate(entry, entry.stat().st_size - 10)
    else:
        data = bytearray(entry.read_bytes())
        data[-1] ^= 0xFF
        entry.write_bytes(bytes(data))
    capsys.readouterr()
    healed = load_image_folder(root, cache_dir=tmp_path / "cache")
    notes = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(notes) == 1 and entry.name in notes[0] and ("truncated" if damage == "truncate" else "checksum mismatch") in notes[0]
    assert np.array_equal(healed.x_train, first)
    assert (entry.parent / "damaged" / entry.name).exists()
    # Healed for good: the next load says nothing.
    load_image_folder(root, cache_dir=tmp_path / "cache")
    assert capsys.readouterr().err == ""


def test_prepare_copies_no_images(tmp_path):
    raw = load_image_folder(_write_tree(tmp_path / "d", {"a": 20, "b": 20}), cache_dir=tmp_path / "cache")
    data = prepare(raw, seed=0, val_fraction=0.2, train_images=30, test_images=10)
    # Views into the memory-mapped entries: splits and subsets are index sets, never copies.
    for view in (data.x_pool, data.x_train, data.x_val, data.x_test):
        assert view.array is raw.x_train or view.array is raw.x_test
    assert np.array_equal(data.x_val.rows(slice(None)), np.asarray(raw.x_train)[data.x_pool.index[data.val_index]])
    assert len(data.x_train) + len(data.x_val) == 30 and len(data.x_test) == 10


@pytest.mark.parametrize("train_images,classes", [(5000, 10), (20000, 10), (45000, 10), (7, 3), (100, 7)])
def test_pool_size_gives_at_least_the_asked_training_images(train_images, classes):
    from bench.data import pool_images_for

    pool = pool_images_for(train_images, classes, 0.1)
    labels = np.repeat(np.arange(classes), pool // classes)
    train, _ = split_validation(labels, 0.1, seed=0)
    smaller = np.repeat(np.arange(classes), pool // classes - 1)
    assert len(train) >= train_images > len(split_validation(smaller, 0.1, seed=0)[0])
