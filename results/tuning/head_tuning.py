"""Transfer-head variants for frozen MobileNetV2 on cached pooled features (ad hoc).

For each JSON override of the `transfer` stage's fields, trains a fresh head on the cached
128 px features (original and mirrored) and prints validation accuracy (what the choice is
made on) and test accuracy (for the record), both with flip TTA.

    python results/tuning/head_tuning.py '{"epochs": 10}' '{}' '{"head_units": 1024}'
"""

import dataclasses
import json
import math
import sys
from pathlib import Path

import keras

from backbones import get_backbone
from bench.cell import Cell, FeatureCache, _one_hot, _variant_epochs, cached_inputs, evaluate, train
from bench.data import DEFAULT_CACHE_DIR, load_raw, prepare
from bench.models import build_classifier, build_head

DATA = Path.home() / ".cache/bench/cifar10-jpeg"
WEIGHTS = Path(__file__).resolve().parents[2] / "../shared/weights/mobilenet_v2.weights.h5"

overrides = [json.loads(a) for a in sys.argv[1:]] or [{}]
cell = Cell("mobilenet_v2", "transfer", 128, "flip", 0, data=str(DATA), weights=str(WEIGHTS.resolve()))
data = prepare(load_raw(cell.data, DEFAULT_CACHE_DIR), cell.seed, cell.val_fraction, None, None)
y_train, y_val = _one_hot(data.y_train, 10), _one_hot(data.y_val, 10)
clf = build_classifier(get_backbone(cell.backbone), cell.recipe(), data.image_size, cell.image_size, data.num_classes, cell.weights)
cache = FeatureCache(cell, clf.features, ("pooled",), DEFAULT_CACHE_DIR / "features")
train_variants, val_variants, test_variants = cached_inputs(cache, data, ("original", "flipped"), True)
for override in overrides:
    recipe = dataclasses.replace(cell.recipe(), **override)
    keras.utils.set_random_seed(cell.seed)
    head = build_head(train_variants[0].shape[-1], data.num_classes, recipe)
    history, *_, seconds = train(head, _variant_epochs(train_variants, y_train, cell.seed), math.ceil(len(y_train) / recipe.batch_size), val_variants[0], y_val, recipe)
    val, test = evaluate(head, val_variants, data.y_val)[0], evaluate(head, test_variants, data.y_test)[0]
    print(f"RESULT {json.dumps(override)}: val {val:.4f} test {test:.4f} train {history[-1]['accuracy']:.4f} ({seconds:.0f} s)", flush=True)
