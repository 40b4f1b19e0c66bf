"""Search spaces as data: the range each recipe field is tuned over, per stage, as a backbone
narrows or widens it (``BackboneSpec.search_ranges``); ``bench.study`` turns them into
Optuna distributions.

Rates and decay are searched on log ranges (their effect is multiplicative). Every stage's
default lies inside its ranges, so a study's first trial is the default recipe and the
study says whether the default holds up. A stage without a range here (``linear``, which
chooses its penalty itself on validation) has nothing to tune.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Range:
    """The values one recipe field is tuned over.

    Attributes:
        field: a ``bench.stages.Stage`` field that ``--set`` may change.
        low, high: the bounds, both included.
        log: sample on a log scale (rates, decay).
        step: for an integer field, the step between values (``low``, ``low + step``, ...).
        choices: for a field tuned over a few values only; ``low`` and ``high`` are then unused.
    """

    field: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: int | None = None
    choices: tuple = ()

    def nearest(self, value):
        """The value of this range closest to ``value`` (``value`` itself when it lies inside)."""
        if self.choices:
            return min(self.choices, key=lambda choice: abs(choice - value))
        if self.step is None:
            return min(max(value, self.low), self.high)
        steps = round((min(max(value, self.low), self.high) - self.low) / self.step)
        return int(min(self.low + steps * self.step, self.high))


SPACES: dict[str, tuple[Range, ...]] = {
    "baseline": (
        Range("learning_rate", 3e-4, 1e-2, log=True),
        Range("weight_decay", 1e-5, 1e-2, log=True),
        Range("epochs", 5, 30, step=5),
        Range("label_smoothing", 0.0, 0.2),
    ),
    "transfer": (
        Range("learning_rate", 1e-4, 1e-2, log=True),
        Range("weight_decay", 1e-6, 1e-1, log=True),
        # Steps of 5: schedules of 5, 10, 15 ... epochs pass 20 %, 40 % ... of their length at
        # whole epochs, where the pruner compares them (bench.trial_link).
        Range("epochs", 5, 40, step=5),
        Range("label_smoothing", 0.0, 0.2),
        Range("head_dropout", 0.0, 0.7),
        Range("head_units", choices=(0, 256, 512, 1024)),
    ),
    # No head width: finetune starts from the transfer head, whose shape it keeps.
    "finetune": (
        Range("learning_rate", 1e-5, 1e-3, log=True),
        Range("weight_decay", 1e-6, 1e-1, log=True),
        Range("epochs", 2, 16, step=2),
        Range("label_smoothing", 0.0, 0.2),
        Range("head_dropout", 0.0, 0.7),
        Range("unfreeze_layers", 1, 16, step=1),
        Range("shift_fraction", 0.0, 0.25),
    ),
}


def tunable(stage: str) -> bool:
    return stage in SPACES


def search_space(spec, stage: str, max_epochs: int) -> tuple[Range, ...]:
    """``stage``'s ranges for the backbone ``spec``, its epochs capped at ``max_epochs``."""
    own = {field: (low, high) for field, low, high in spec.search_ranges}
    space = []
    for range_ in SPACES[stage]:
        if range_.field in own:
            range_ = dataclasses.replace(range_, low=own[range_.field][0], high=own[range_.field][1])
        if range_.field == "epochs":
            high = min(range_.high, max_epochs)
            low = min(range_.low, high)
            range_ = dataclasses.replace(range_, low=low, high=low + (high - low) // range_.step * range_.step)
        space.append(range_)
    return tuple(space)


def defaults_in(space: tuple[Range, ...], recipe) -> dict:
    """The resolved default ``recipe``'s value of each field, moved into its range where it lies
    outside (an epoch count over the cap)."""
    return {range_.field: range_.nearest(getattr(recipe, range_.field)) for range_ in space}
