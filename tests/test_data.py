import os

import numpy as np
import pytest
from PIL import Image

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
    # One memory-mapped .npy entry per split, each with its checksum.
    entries = sorted((tmp_path / "cache" / "datasets").glob("*.npy"))
    assert [e.name.rsplit(".", 2)[1] for e in entries] == ["x_test", "x_train"]
    assert all(e.with_name(e.name + ".sha256").exists() for e in entries)
    assert isinstance(first.x_train, np.memmap) and isinstance(load_image_folder(root, cache_dir=tmp_path / "cache").x_test, np.memmap)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "a" / "0000.png")
    os.utime(root / "train" / "a" / "0000.png", ns=(1, 1))
    second = load_image_folder(root, cache_dir=tmp_path / "cache")
    assert not np.array_equal(first.x_train[0], second.x_train[0])
    assert second.x_train[0].max() == 0


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


def test_cifar10_offline_says_where_to_put_the_file(monkeypatch):
    import keras

    def offline():
        raise Exception("URL fetch failure: Name or service not known")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(UsageError, match=r"save .*cifar-10-python.tar.gz as ~/.keras/datasets/cifar-10-batches-py-target_archive"):
        load_raw("cifar10")


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
