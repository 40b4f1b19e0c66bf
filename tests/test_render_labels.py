"""Rows of a report table are told apart: rows equal in every shown column and in their
settings, which differ only in what they trained on, say which data each row is."""

import dataclasses
from pathlib import Path

import pytest

from bench.records import read_records
from bench.render.labels import distinguish_labels, settings_column
from bench.render.runs import accuracy_table, cost_table, headline_table
from bench.stats import records_frame, summarize

FIXTURE = Path(__file__).parent / "fixtures" / "runs.jsonl"


def _record(**changes):
    """The fixture's first record, with ``changes`` made to its fields and, where they name it, its identity."""
    record = read_records(FIXTURE).records[0]
    identity = {**record.identity, **{k: v for k, v in changes.items() if k in record.identity}}
    return dataclasses.replace(record, **{k: v for k, v in changes.items() if k != "dataset_id"}, identity=identity)


def _summary(*records):
    return distinguish_labels(summarize(records_frame(list(records))))


# The columns a reader tells rows apart by (the rest are numbers).
NAMING_COLUMNS = {"backbone", "stage", "weights", "size px", "augment", "settings"}


def _row_names(table: str) -> list[tuple[str, ...]]:
    """Each row's cells in the naming columns of a markdown table."""
    header, _, *rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.splitlines()]
    keep = [index for index, name in enumerate(header) if name in NAMING_COLUMNS]
    return [tuple(row[index] for index in keep) for row in rows]


# Two configurations that differ only in their data: another dataset, the same folder name
# over other images, or another profile (how many images of the dataset).
DATA_PAIRS = {
    "dataset": ({"dataset": "cifar10", "dataset_id": "label:cifar10"}, {"dataset": "synthetic", "dataset_id": "label:synthetic"}),
    "same name, other images": ({"dataset": "imgs", "dataset_id": "sha256:aaaa"}, {"dataset": "imgs", "dataset_id": "sha256:bbbb"}),
    "profile": ({"profile": "quick"}, {"profile": "full"}),
}


@pytest.mark.parametrize("pair", DATA_PAIRS, ids=list(DATA_PAIRS))
@pytest.mark.parametrize("render", [accuracy_table, cost_table, headline_table], ids=lambda f: f.__name__)
def test_rows_that_differ_only_in_their_data_are_told_apart(pair, render):
    first, second = DATA_PAIRS[pair]
    summary = _summary(_record(**first, test_accuracy=0.4), _record(**second, test_accuracy=0.6))
    assert len(summary) == 2
    names = _row_names(render(summary))
    assert len(names) == 2 and names[0] != names[1], names


def test_the_data_cell_names_each_rows_data():
    summary = _summary(_record(dataset="cifar10", dataset_id="label:cifar10"), _record(dataset="synthetic", dataset_id="label:synthetic"))
    by_dataset = dict(zip(summary["dataset"], settings_column(summary)))
    assert by_dataset == {"cifar10": "data cifar10", "synthetic": "data synthetic"}


def test_rows_already_apart_get_no_data_cell():
    # Other sizes tell the rows apart: the settings column stays out (committed reports keep their bytes).
    summary = _summary(_record(dataset="cifar10", dataset_id="label:cifar10"), _record(dataset="synthetic", dataset_id="label:synthetic", image_size=128))
    assert settings_column(summary) is None and "settings" not in accuracy_table(summary)


def test_a_data_cell_joins_the_rows_own_settings():
    summary = _summary(
        _record(dataset="cifar10", dataset_id="label:cifar10", precision="mixed"), _record(dataset="synthetic", dataset_id="label:synthetic", precision="mixed")
    )
    assert sorted(settings_column(summary)) == ["mixed precision, data cifar10", "mixed precision, data synthetic"]


def test_a_backbones_own_recipe_sets_the_batch_size_a_row_is_compared_with():
    # airbench94's recipe trains at batch 1,024, the baseline stage's default at 128.
    own = _summary(_record(backbone="airbench94", stage="baseline", batch_size=1024), _record(backbone="airbench94", stage="baseline", batch_size=1024, image_size=64))
    assert settings_column(own) is None
    other = _summary(_record(backbone="small_cnn", stage="baseline", batch_size=1024), _record(backbone="small_cnn", stage="baseline", batch_size=1024, image_size=64))
    assert settings_column(other) == ["batch 1024", "batch 1024"]
