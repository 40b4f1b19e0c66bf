"""Kornblith's question over a report's records: which rows stand for each backbone, the
correlations and their intervals, the section and the figure."""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import imagenet_transfer, publish
from bench.records import append_record, read_records
from bench.render.imagenet import imagenet_section
from bench.stats import records_frame, summarize

FIXTURE = Path(__file__).parent / "fixtures" / "runs.jsonl"
# The registry's published ImageNet top-1 of the four pretrained backbones.
TOP1 = {"mobilenet_v2": 71.3, "efficientnet_lite0": 75.1, "efficientnet_lite1": 76.7, "efficientnet_lite2": 77.6}


def _record(backbone, stage="transfer", seed=0, accuracy=0.8, image_size=96, weights="imagenet", recipe=None):
    base = read_records(FIXTURE).records[2]  # mobilenet_v2 transfer
    changes = {"backbone": backbone, "stage": stage, "seed": seed, "image_size": image_size, "weights": weights}
    identity = {**base.identity, **{k: v for k, v in changes.items() if k in base.identity}, "recipes": recipe}
    return dataclasses.replace(
        base, **changes, identity=identity, key=f"{backbone}-{stage}-{image_size}-{seed}-{recipe}", test_accuracy=accuracy,
        recipe={"source": recipe} if recipe else {"source": "default"},
    )


def _summary(records):
    frame = records_frame(records)
    return frame, summarize(frame)


def test_the_statistics_agree_with_their_definitions():
    assert imagenet_transfer.log_odds([50.0, 75.0], 100) == pytest.approx([0.0, math.log(3)])
    assert imagenet_transfer.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert math.isnan(imagenet_transfer.pearson([1, 2, 3], [5, 5, 5]))
    # Ranks, not values: a monotone but curved relation has rho 1 and r below 1.
    assert imagenet_transfer.spearman([1, 2, 3, 4], [1, 2, 3, 100]) == pytest.approx(1.0)
    assert imagenet_transfer.pearson([1, 2, 3, 4], [1, 2, 3, 100]) < 0.9
    # Four networks: a perfect order is 1 of 24; the reversed order is matched by every ordering.
    assert imagenet_transfer.permutation_p([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1 / 24)
    assert imagenet_transfer.permutation_p([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(1.0)
    assert imagenet_transfer.permutation_p([1, 2], [1, 2]) is None


def test_the_interval_over_networks_needs_four_and_widens_as_they_get_fewer():
    assert imagenet_transfer.fisher_interval(0.9, 3) is None
    four, sixteen = imagenet_transfer.fisher_interval(0.9, 4), imagenet_transfer.fisher_interval(0.9, 16)
    assert four[0] < sixteen[0] < 0.9 < sixteen[1] < four[1]


def test_the_seed_bootstrap_is_seeded_and_empty_without_a_second_seed():
    top1 = np.array([71.3, 75.1, 76.7, 77.6])
    single = [np.array([a]) for a in (0.80, 0.82, 0.83, 0.84)]
    assert imagenet_transfer.seed_bootstrap(top1, single) is None
    several = [np.array([a - 0.01, a, a + 0.01]) for a in (0.80, 0.82, 0.83, 0.84)]
    first, again = imagenet_transfer.seed_bootstrap(top1, several), imagenet_transfer.seed_bootstrap(top1, several)
    assert first == again and first[0] < first[1] <= 1.0
    # Noisier seeds spread r wider.
    noisy = [np.array([a - 0.03, a, a + 0.03]) for a in (0.80, 0.82, 0.83, 0.84)]
    wide = imagenet_transfer.seed_bootstrap(top1, noisy)
    assert wide[1] - wide[0] > first[1] - first[0]


def test_a_tuned_row_stands_in_only_where_every_backbone_has_one():
    records = [_record(b, accuracy=0.7 + TOP1[b] / 1000) for b in TOP1]
    records.append(_record("mobilenet_v2", accuracy=0.99, recipe="tuning/recipes"))
    _, summary = _summary(records)
    points = imagenet_transfer.points(summary)
    # Only MobileNetV2 is tuned: every backbone is stood for by its default row.
    assert not points["tuned"].any() and points["test_accuracy"].max() < 0.9


def test_each_backbone_is_stood_for_by_its_tuned_row_at_the_common_size_never_by_its_best():
    records = [_record(b, accuracy=0.7 + TOP1[b] / 1000, recipe="tuning/recipes") for b in TOP1 if b != "mobilenet_v2"]
    # MobileNetV2 also has a more accurate default row with more seeds (not chosen: the tuned one is),
    # a row at another size (not chosen: the others ran at 96 px), and a random-init row.
    records.append(_record("mobilenet_v2", accuracy=0.70, recipe="tuning/recipes"))
    records += [_record("mobilenet_v2", seed=s, accuracy=0.95) for s in (1, 2)]
    records.append(_record("mobilenet_v2", accuracy=0.99, image_size=160))
    records.append(_record("efficientnet_lite0", accuracy=0.99, weights="none", recipe="x"))
    records.append(_record("small_cnn", stage="baseline", accuracy=0.9))
    _, summary = _summary(records)
    points = imagenet_transfer.points(summary)
    assert list(points["backbone"]) == sorted(TOP1)
    assert set(points["stage"]) == {"transfer"} and set(points["image_size"]) == {96}
    mobilenet = points[points["backbone"] == "mobilenet_v2"].iloc[0]
    assert points["tuned"].all() and mobilenet["test_accuracy"] == pytest.approx(0.70)
    assert dict(zip(points["backbone"], points["imagenet_top1"])) == TOP1


def test_correlations_follow_the_accuracies_and_count_the_fewest_seeds():
    ordered = {b: 0.70 + (TOP1[b] - 70) / 100 for b in TOP1}
    records = [_record(b, seed=s, accuracy=ordered[b] + 0.002 * s) for b in TOP1 for s in range(3)]
    records += [_record(b, stage="finetune", accuracy=0.95 - (TOP1[b] - 70) / 100) for b in TOP1]
    frame, summary = _summary(records)
    points = imagenet_transfer.points(summary)
    correlations = imagenet_transfer.correlations(frame, points).set_index("stage")
    transfer, finetune = correlations.loc["transfer"], correlations.loc["finetune"]
    assert transfer["pearson_r"] > 0.95 and transfer["spearman_rho"] == pytest.approx(1.0)
    assert transfer["permutation_p"] == pytest.approx(1 / 24) and transfer["seeds"] == 3
    assert transfer["r_seed_low"] <= transfer["r_seed_high"]
    # A reversed order: negative correlation, no seed interval with one seed a point.
    assert finetune["pearson_r"] < -0.95 and finetune["spearman_rho"] == pytest.approx(-1.0)
    assert finetune["seeds"] == 1 and pd.isna(finetune["r_seed_low"])
    text = imagenet_section(points, correlations.reset_index(), "imagenet_vs_cifar10.png")
    rows = {}
    for line in text.splitlines():
        if line.startswith(("| transfer", "| finetune")):
            rows.setdefault(line.split("|")[1].strip(), [cell.strip() for cell in line.split("|")[2:-1]])
    # The correlations table comes first: networks, seeds, r, over seeds, over networks, rho, p.
    assert rows["transfer"][0] == "4" and rows["transfer"][5] == "1.00" and rows["transfer"][6] == "0.042"
    assert rows["finetune"][3] == "" and rows["finetune"][5] == "-1.00"


def test_without_three_pretrained_networks_the_report_has_no_section_and_no_figure(tmp_path):
    for record in [_record("mobilenet_v2"), _record("efficientnet_lite0")]:
        append_record(tmp_path, record)
    publish.write_report(tmp_path)
    assert "transfer better" not in (tmp_path / "README.md").read_text()
    assert not (tmp_path / "imagenet_vs_cifar10.png").exists()


def test_the_report_draws_the_figure_and_writes_the_section(tmp_path):
    for backbone in TOP1:
        append_record(tmp_path, _record(backbone, accuracy=0.7 + TOP1[backbone] / 1000))
    publish.write_report(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "## Does the better ImageNet model transfer better?" in text
    assert (tmp_path / "imagenet_vs_cifar10.png").stat().st_size > 10_000
