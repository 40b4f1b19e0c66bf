"""Training stages and run profiles, as data; ``bench.grid`` resolves them into a cell's recipe,
``bench.models`` and ``bench.training`` interpret their fields.

Every change to a recipe is made here, in a stage's fields, never in ad-hoc flags, so a
record's ``stage`` name pins down exactly how its numbers were produced.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Nesterov:
    """airbench94's optimiser, schedule and weight averaging: the rules of a stage whose solver
    is ``"nesterov"`` (``bench.training.compile_model``).

    The stage's ``learning_rate`` and ``weight_decay`` are then airbench's decoupled ones: per
    1,024 examples, with the step's amplification by the momentum, 1 + 1 / (1 - momentum),
    divided out, and the decay's size independent of the rate.

    Attributes:
        momentum: Nesterov momentum (PyTorch's form: the buffer sums gradients, the rate is
            applied to the step).
        bias_lr_scale: BatchNorm offsets train at this many times the rate (not the decay).
        peak_fraction: the rate rises linearly over this fraction of all steps ...
        start_factor: ... from this fraction of its peak ...
        end_factor: ... then falls linearly to this fraction of it at the last step.
        lookahead_every: steps between weight-averaging updates: every so many steps an
            average of the weights moves towards them and the weights are reset to it
            (0: none).
        lookahead_decay: the average's per-step decay, raised to ``lookahead_every`` and
            scaled by (step / all steps) cubed: it follows the weights closely early and
            averages over more steps late.
        whiten_bias_epochs: epochs the bias of the backbone's patch-whitening layer
            (``backbones.airbench_layers.Whitening``) trains before it freezes; a backbone
            without one: no effect.
    """

    momentum: float = 0.85
    bias_lr_scale: float = 64.0
    peak_fraction: float = 0.23
    start_factor: float = 0.2
    end_factor: float = 0.07
    lookahead_every: int = 5
    lookahead_decay: float = 0.95
    whiten_bias_epochs: int = 3


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training regime.

    Attributes:
        name: key used on the command line and in records.
        description: one line for ``bench list`` and the report.
        pretrained: start the backbone from ImageNet weights (else from random init).
        trainable: which weights train: ``"all"``, ``"head"`` (backbone frozen) or
            ``"top"`` (the last ``unfreeze_layers`` non-BatchNorm layers plus the head).
        resize: run at the backbone's image size; ``False`` keeps the data's native size.
        epochs: passes over the training split.
        batch_size: images per step.
        learning_rate: peak AdamW learning rate, reached after ``warmup_epochs``, then
            cosine-decayed to zero.
        weight_decay: AdamW decoupled weight decay.
        warmup_epochs: linear warm-up length, in epochs.
        label_smoothing: cross-entropy label smoothing.
        augment: default augmentation policy (see ``bench.augment``).
        head_units: width of the head's hidden Dense layer; 0 means no hidden layer.
        head_dropout: dropout rate before the head's output layer.
        unfreeze_layers: for ``trainable="top"``, how many of the backbone's last
            weight-carrying, non-BatchNorm layers train.
        starts_from: stage whose trained head this stage starts from (same backbone, seed).
        tta_flip: average predictions over the image and its mirror at evaluation.
        shift_fraction: random translation of the training inputs, on top of the policy,
            up to this fraction of the side (0: none). The cached path shifts the cut's
            activation map by whole cells (at least one), a cheap stand-in for translating
            the images, which the uncached path does; pooled features cannot shift, so a
            ``transfer``-like stage with a shift runs uncached.
        solver: ``"adamw"`` (warm-up and cosine decay) or ``"nesterov"`` (airbench94's SGD,
            schedule and weight averaging, ruled by ``nesterov``), the epoch loop of
            ``bench.training``; or ``"lbfgs"``, the ``linear`` stage's logistic regression
            (``bench.linear_probe``), which ignores the epoch, batch and optimiser fields and
            trains on the cached pooled features only.
        l2_penalties: for ``"lbfgs"``, the L2 penalties searched on validation: ``count``
            log-spaced values from ``low`` to ``high``, as ``(low, high, count)``.
        tta_shift_pixels: at evaluation, also average over the images translated by this
            many pixels up-left and down-right (reflect-padded), each mirrored too where
            ``tta_flip``; the translated views share half the weight (airbench94's
            multi-crop). 0: none. Uncached evaluation only.
        tta_average: what is averaged over the test-time views: ``probabilities``, or
            ``logits`` (airbench94's; the mean log-probability, which has the same softmax).
        head_bias: whether the head's output layer has a bias.
        logit_scale: the head's logits are multiplied by this before the softmax (airbench94:
            1/9, which also slows the output layer's learning).
        head_init: the output layer's initialiser: a Keras name, or ``torch`` (PyTorch's
            default, uniform in +-1/sqrt(fan_in)).
        nesterov: for ``"nesterov"``, its rules (momentum, rate groups, schedule shape,
            averaging, the whitening bias's epochs).
        precision: the compute precision it trains in where the run does not say
            (``--precision``): ``float32``, or ``mixed`` (bfloat16 compute on CPU, float16 on GPU).
    """

    name: str
    description: str
    pretrained: bool
    trainable: str
    resize: bool
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    warmup_epochs: float
    label_smoothing: float
    augment: str
    head_units: int
    head_dropout: float
    unfreeze_layers: int = 0
    starts_from: str | None = None
    tta_flip: bool = True
    shift_fraction: float = 0.0
    solver: str = "adamw"
    l2_penalties: tuple[float, float, int] | None = None
    tta_shift_pixels: int = 0
    tta_average: str = "probabilities"
    head_bias: bool = True
    logit_scale: float = 1.0
    head_init: str = "glorot_uniform"
    nesterov: Nesterov | None = None
    precision: str = "float32"

    @property
    def by_epochs(self) -> bool:
        """Whether it trains in the epoch loop (AdamW or Nesterov SGD), not by L-BFGS."""
        return self.solver != "lbfgs"


BASELINE = Stage(
    name="baseline",
    description="train the whole network from scratch at the native 32 px",
    pretrained=False,
    trainable="all",
    resize=False,
    epochs=15,
    batch_size=128,
    learning_rate=2e-3,
    weight_decay=5e-4,
    warmup_epochs=1,
    label_smoothing=0.1,
    augment="flip-crop",
    head_units=0,
    head_dropout=0.0,
)

# Kornblith et al. 2019 ("Do Better ImageNet Models Transfer Better?"), fixed features: the
# frozen backbone's pooled features, no augmentation, L2-regularised multinomial logistic
# regression by L-BFGS, the penalty chosen on validation from 45 log-spaced values in
# [1e-6, 1e5]. It reads the very cache entries `transfer` reads (same backbone, weights, size).
LINEAR = Stage(
    name="linear",
    description="Kornblith et al. 2019's linear probe: logistic regression (L-BFGS) on the frozen backbone's pooled features, L2 penalty chosen on validation",
    pretrained=True,
    trainable="head",
    resize=True,
    epochs=0,  # no epochs: each penalty is fitted by L-BFGS to its tolerance (bench.linear_probe)
    batch_size=0,  # no batches: every L-BFGS iteration reads the whole training split
    learning_rate=0.0,
    weight_decay=0.0,
    warmup_epochs=0.0,
    label_smoothing=0.0,
    augment="none",
    # The head is one Dense softmax layer: the fitted coefficients are loaded into it.
    head_units=0,
    head_dropout=0.0,
    # No flip at test time: Kornblith's protocol scores one view of each image, and the figure
    # is meant to measure the features, not a test-time augmentation on top of them (which
    # `--set tta_flip=true` still gives, averaging the head over the mirrored images' features).
    tta_flip=False,
    solver="lbfgs",
    l2_penalties=(1e-6, 1e5, 45),
)

TRANSFER = Stage(
    name="transfer",
    description="ImageNet backbone frozen (BatchNorm in inference mode), new head trained on resized images",
    pretrained=True,
    trainable="head",
    resize=True,
    # 20, not 10: on cached features an epoch costs seconds, and MobileNetV2's head at 128 px
    # gained 0.8 points of validation accuracy (79.9 -> 80.7 %); a wider head (1024),
    # less dropout (0.3), a larger rate (2e-3) or weight decay 1e-2 did no better on validation.
    epochs=20,
    batch_size=128,
    learning_rate=1e-3,
    weight_decay=1e-4,
    warmup_epochs=0.5,
    label_smoothing=0.1,
    # Mirrored images are an exact cache variant, so the frozen backbone runs once per variant.
    augment="flip",
    head_units=512,
    head_dropout=0.5,
)

FINETUNE = Stage(
    name="finetune",
    description="from the transfer head, unfreeze the backbone's last weight layers (4, or the backbone's own setting; BatchNorm stays frozen) at a 10x lower rate, with random shifts",
    pretrained=True,
    trainable="top",
    resize=True,
    # 8, not 5: with the shift below, validation kept rising (MobileNetV2: 85.8 -> 86.5 %).
    epochs=8,
    batch_size=128,
    learning_rate=TRANSFER.learning_rate / 10,
    weight_decay=1e-4,
    warmup_epochs=0.0,
    label_smoothing=0.1,
    augment="flip",
    head_units=TRANSFER.head_units,
    head_dropout=TRANSFER.head_dropout,
    unfreeze_layers=4,
    starts_from="transfer",
    # The unfrozen top overfits (MobileNetV2, 13 layers: 94.6 % train against 84.2 % validation
    # after 5 epochs). Shifting the cut's 8 x 8 activation map by one cell (12.5 % of the side,
    # CIFAR's classic 4 px of 32) lifted validation 85.1 -> 85.8 % at the same cost.
    shift_fraction=0.125,
)

# In run order: `linear` and `transfer` read one cache; `finetune` starts from `transfer`'s head.
STAGES = {stage.name: stage for stage in (BASELINE, LINEAR, TRANSFER, FINETUNE)}

# Recipe fields ``--set`` may change. Structural ones (trainable, pretrained, resize,
# starts_from) define the stage itself and are refused; a few have a Cell field of their own.
OVERRIDABLE = (
    "epochs",
    "batch_size",
    "learning_rate",
    "weight_decay",
    "warmup_epochs",
    "label_smoothing",
    "head_units",
    "head_dropout",
    "unfreeze_layers",
    "shift_fraction",
    "augment",
    "tta_flip",
)
# Of those, what a stage fitted by L-BFGS (linear) reads: the others are the epoch loop's, and
# `run` applies them to the other stages only.
LBFGS_OVERRIDABLE = ("augment", "tta_flip")

# airbench94's recipe (github.com/KellerJordan/cifar10-airbench, legacy/airbench94.py), the
# ``baseline`` stage of the backbone of the same name: its hyperparameters, in its units.
AIRBENCH94 = dataclasses.replace(
    BASELINE,  # from scratch, the whole network, at the native 32 px
    description="airbench94's recipe from scratch at 32 px: whitened first layer, Nesterov SGD at batch 1,024 (rate and decay per 1,024 examples) with its triangular schedule and lookahead averaging, alternating flip and 2 px translation, 6-view test-time augmentation",
    # airbench trains 9.9 epochs; a stage's epochs are whole (the grid's identity and --epochs
    # are integers), and the schedule scales with them, so 10 trains 1 % more steps.
    epochs=10,
    batch_size=1024,
    learning_rate=11.5,  # per 1,024 examples (see Nesterov)
    weight_decay=0.0153,  # per 1,024 examples, decoupled from the rate
    warmup_epochs=0.0,  # the schedule is Nesterov's peak_fraction
    label_smoothing=0.2,
    augment="altflip-translate",
    tta_shift_pixels=1,  # with the stage's tta_flip
    tta_average="logits",
    head_bias=False,
    logit_scale=1 / 9,
    head_init="torch",
    solver="nesterov",
    nesterov=Nesterov(),
    # Upstream trains in half precision (float16 on its GPU). Here bfloat16 steps run 1.4x
    # faster than float32 on CPUs with AVX512-BF16 (results/cost.md); 90.1 % against 90.5 %
    # at seed 0 (results/from-scratch), within the seeds' spread of the other schedules.
    precision="mixed",
)

# The small CNN's recipe: the stage's defaults, trained in bfloat16. At its batch of 128 a
# bfloat16 training step runs 1.65x faster than float32 on CPUs with AVX512-BF16 (529 against
# 320 img/s, `bench cost --backbone small_cnn --batch-size 128 [--precision mixed]`,
# 2026-12-06), and its 15 epochs are the largest share of the default grid's time;
# `--precision float32` trains it as the second edition did (results/from-scratch).
SMALL_CNN = dataclasses.replace(
    BASELINE,
    description="the stage's defaults from scratch at 32 px, in bfloat16 compute",
    precision="mixed",
)

# Recipes a backbone names as its own for the ``baseline`` stage (``BackboneSpec.baseline_recipe``),
# in place of the stage's defaults; a tuned recipe (``bench.recipes``) or a ``--set`` applies on top.
BASELINE_RECIPES = {"airbench94": AIRBENCH94, "small_cnn": SMALL_CNN}


def stage_defaults(stage: str, baseline_recipe: str | None = None) -> Stage:
    """The stage's defaults: for ``baseline``, the backbone's own recipe where it names one."""
    if baseline_recipe is None or stage != BASELINE.name:
        return STAGES[stage]
    if baseline_recipe not in BASELINE_RECIPES:
        raise ValueError(f"unknown baseline recipe {baseline_recipe!r}; bench.stages.BASELINE_RECIPES has: {', '.join(BASELINE_RECIPES)}")
    return BASELINE_RECIPES[baseline_recipe]


def unfreeze_layers(stage: Stage, backbone_setting: int | None, override: int | None = None) -> int:
    """Layers a stage unfreezes: the run's override, else the backbone's own setting, else the stage's."""
    return next(n for n in (override, backbone_setting, stage.unfreeze_layers) if n is not None)


@dataclasses.dataclass(frozen=True)
class Profile:
    """How much of the data and schedule a run uses.

    Attributes:
        name: ``quick`` or ``full``.
        train_images: stratified subset of the training split (``None``: all of it).
        test_images: stratified subset of the test split (``None``: all of it).
        max_epochs: cap on every stage's epochs (``None``: the stage's own).
    """

    name: str
    train_images: int | None
    test_images: int | None
    max_epochs: int | None


PROFILES = {
    "full": Profile("full", None, None, None),
    # A few-minute pass over the whole grid: checks that everything runs, not what it reaches.
    "quick": Profile("quick", 1000, 500, 1),
    # `bench perf`: enough images that per-image costs dominate, few enough for minutes.
    "perf": Profile("perf", 5000, 1000, None),
}
