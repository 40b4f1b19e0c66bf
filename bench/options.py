"""Parsing and validating one option value: each rule written once, every command uses the same ones.

An argparse type here raises ``argparse.ArgumentTypeError``; the parser turns it into one
line and exit 2. Nothing here imports TensorFlow: ``list``, ``--help`` and argument errors
stay fast and quiet.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from bench.augment import POLICIES
from bench.errors import UsageError
from bench.stages import OVERRIDABLE, STAGES

# Inputs past this side make the activation cache and the batches huge (10,000 px: about
# 90 GB of temporary files per variant) for no benchmark purpose; --allow-large-images lifts it.
MAX_IMAGE_SIZE = 1024


def int_at_least(minimum: int, wanted: str):
    """An argparse type: an integer of at least ``minimum`` (``wanted`` names it in the error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value

    return parse


non_negative_int = int_at_least(0, "an integer of 0 or more")
positive_int = int_at_least(1, "a positive integer")


def finite_number(kind: str, in_range, wanted: str, hint: str = ""):
    """An argparse type: a finite float for which ``in_range(value)`` holds.

    ``kind`` names what a non-number should have been, ``wanted`` the range; ``hint`` follows
    the range error. nan compares false with everything and inf passes every lower bound:
    unchecked, either switches a limit or a threshold off, so both are refused here, once.
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not math.isfinite(value) or not in_range(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}{hint}")
        return value

    return parse


positive_seconds = finite_number(
    "a number of seconds", lambda v: v > 0, "a positive, finite number of seconds", "; leave the option out for no limit"
)
days = finite_number("a number of days", lambda v: v >= 0, "a number of days of 0 or more")
fraction = finite_number("a number between 0 and 1", lambda v: 0 < v < 1, "a number between 0 and 1 (exclusive)")
percent = finite_number("a number of percent", lambda v: v >= 0, "a finite number of percent of 0 or more")
accuracy_points = finite_number("a number of accuracy points", lambda v: v >= 0, "a finite number of accuracy points of 0 or more")
# Ray reserves fractions of a CPU or GPU; 0 is Ray's own "no reservation".
resource_share = finite_number("a number of devices", lambda v: v >= 0, "a finite number of 0 or more (fractions allowed)")


class GivenOnce(argparse.Action):
    """A list option that may appear once: where a repeat would change what the first one means
    (``--seeds 3`` is a count, ``--seeds 3 5`` a list), it is refused rather than guessed."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest) is not None:
            parser.error(f"{option_string} given twice; give all its values after one {option_string}")
        setattr(namespace, self.dest, values)


def data_source(text: str) -> str:
    """``cifar10``, ``synthetic``, or a folder's resolved path, so ``--data .`` records the folder's real name."""
    if text in ("cifar10", "synthetic") or not Path(text).is_dir():
        return text
    return str(Path(text).resolve())


def check_image_sizes(sizes, allowed: bool, what: str = "--image-size {size}") -> None:
    """Refuse sizes over ``MAX_IMAGE_SIZE`` unless ``--allow-large-images`` (``allowed``) was given."""
    too_large = [size for size in sizes if size > MAX_IMAGE_SIZE]
    if too_large and not allowed:
        raise UsageError(
            f"{what.format(size=too_large[0])} is over the {MAX_IMAGE_SIZE:,} px limit (activations and batches grow with the square of the side); "
            f"pass {MAX_IMAGE_SIZE} or less, or --allow-large-images to run it anyway"
        )


def shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise argparse.ArgumentTypeError(f"expected INDEX/COUNT with 0 <= INDEX < COUNT (e.g. 0/4), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def override(text: str) -> tuple[str, object]:
    """One ``--set FIELD=VALUE`` (an argparse type; see ``parse_override``)."""
    try:
        return parse_override(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_override(text: str) -> tuple[str, object]:
    """One ``FIELD=VALUE`` recipe setting, parsed by the recipe field's type: ``--set``'s and a
    recipe file's (``bench.recipes``) values follow the same rules.

    Raises:
        ValueError: the field cannot be set or the value is out of its range; the message says which.
    """
    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    structural = {"trainable", "pretrained", "resize", "starts_from", "name", "description"}
    if not sep or not value.strip():
        raise ValueError(f"expected FIELD=VALUE (e.g. epochs=20), got {text!r}")
    if name in structural:
        raise ValueError(f"{name} defines the stage itself and cannot be set; pick another --stage (settable: {', '.join(OVERRIDABLE)})")
    if name not in OVERRIDABLE:
        raise ValueError(f"unknown recipe field {name!r}; settable: {', '.join(OVERRIDABLE)}")
    default = getattr(STAGES["transfer"], name)
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            parsed = value.lower() in ("true", "1", "yes")
        elif isinstance(default, int):
            parsed = int(value)
        elif isinstance(default, float):
            parsed = float(value)
        else:
            parsed = value
    except ValueError:
        raise ValueError(f"{name} takes a {type(default).__name__}, got {value!r}") from None
    problem = _override_problem(name, parsed)
    if problem:
        raise ValueError(f"{name}={value}: {problem}")
    return name, parsed


def _override_problem(name: str, value) -> str:
    if name == "augment":
        return "" if value in POLICIES else f"unknown policy; choose from {', '.join(POLICIES)}"
    if isinstance(value, bool):
        return ""
    if not math.isfinite(value):
        return "must be finite"
    if name in ("epochs", "batch_size", "unfreeze_layers") and value < 1:
        return "must be at least 1"
    if name == "learning_rate" and value <= 0:
        return "must be above 0"
    if name in ("head_dropout", "label_smoothing") and not 0 <= value < 1:
        return "must be in [0, 1)"
    if name == "shift_fraction" and not 0 <= value < 0.5:
        return "must be in [0, 0.5)"
    if value < 0:
        return "must be 0 or more"
    return ""
