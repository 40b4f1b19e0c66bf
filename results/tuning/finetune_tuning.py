"""Finetune recipe variants for MobileNetV2 at 128 px on cached cut activations (ad hoc).

Trains only the unfrozen top from the saved 20-epoch transfer head, as the finetune cell
does, for each JSON override given on the command line, and prints validation accuracy
(what the choice is made on) and test accuracy (for the record), both with flip TTA.

    python results/tuning/finetune_tuning.py HEAD.weights.h5 '{"shift_fraction": 0}' '{"epochs": 8}'

HEAD is the transfer cell's artifact (`results/artifacts/mobilenet_v2__transfer__128px__...`).
Keys are `Stage` fields; the stage's own values apply where a key is absent.
"""

import dataclasses
import json
import math
import sys
from pathlib import Path

import keras

from backbones import get_backbone
from bench.cell import Cell, FeatureCache, _cached_split, _one_hot, _variant_epochs, cached_inputs, evaluate, cells_to_shift, train
from bench.data import DEFAULT_CACHE_DIR, load_raw, prepare
from bench.models import build_classifier

DATA = Path.home() / ".cache/bench/cifar10-jpeg"
WEIGHTS = Path(__file__).resolve().parents[2] / "../shared/weights/mobilenet_v2.weights.h5"

head_file, overrides = sys.argv[1], [json.loads(a) for a in sys.argv[2:]] or [{}]
cell = Cell("mobilenet_v2", "finetune", 128, "flip", 0, data=str(DATA), weights=str(WEIGHTS.resolve()))
data = prepare(load_raw(cell.data, DEFAULT_CACHE_DIR), cell.seed, cell.val_fraction, None, None)
y_train, y_val = _one_hot(data.y_train, 10), _one_hot(data.y_val, 10)
spec = get_backbone(cell.backbone)
for override in overrides:
    keras.utils.set_random_seed(cell.seed)
    recipe = dataclasses.replace(cell.recipe(), **override)
    clf = build_classifier(spec, recipe, data.image_size, cell.image_size, data.num_classes, cell.weights)
    clf.head.load_weights(head_file)
    prefix, suffix, cut_names = _cached_split(clf, cell, spec, recipe)
    train_variants, val_variants, test_variants = cached_inputs(FeatureCache(cell, prefix, cut_names, DEFAULT_CACHE_DIR / "features"), data, ("original", "flipped"), True)
    epochs = _variant_epochs(train_variants, y_train, cell.seed, cells_to_shift(recipe, train_variants[0].shape[1]))
    history, *_, seconds = train(suffix, epochs, math.ceil(len(y_train) / recipe.batch_size), val_variants[0], y_val, recipe)
    val, test = evaluate(suffix, val_variants, data.y_val)[0], evaluate(suffix, test_variants, data.y_test)[0]
    print(f"RESULT {json.dumps(override)}: val {val:.4f} test {test:.4f} train {history[-1]['accuracy']:.4f} ({seconds:.0f} s)", flush=True)
