"""Backbones that fail on purpose, registered only by the reliability tests.

Each builds quickly at 32 px; the fault fires when the harness builds or trains it. Keras is
imported in the builders, as in tests/tiny_backbones.py: registering these in a `bench cost`
parent (which never loads TensorFlow itself) costs no TensorFlow import.
"""

import os
import signal
import time

from backbones import register_backbone

NAMES = ("fault_raises", "fault_aborts", "fault_hangs", "fault_diverges", "fault_oom_once", "fault_slow", "fault_killed")


def _tiny(input_shape, exploding=False):
    import keras

    class Explode(keras.layers.Layer):
        def call(self, x):
            return x * float("inf")

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    return keras.Model(inputs, Explode()(x) if exploding else x)


@register_backbone(default_image_size=32, stages=("baseline", "transfer"))
def fault_raises(input_shape=(32, 32, 3), weights=None):
    raise RuntimeError("injected failure in the builder")


@register_backbone(default_image_size=32, stages=("baseline",))
def fault_aborts(input_shape=(32, 32, 3), weights=None):
    os.abort()  # SIGABRT: what a segfaulting native library looks like from outside


@register_backbone(default_image_size=32, stages=("baseline",))
def fault_hangs(input_shape=(32, 32, 3), weights=None):
    time.sleep(3600)


@register_backbone(default_image_size=32, stages=("baseline",))
def fault_diverges(input_shape=(32, 32, 3), weights=None):
    return _tiny(input_shape, exploding=True)


@register_backbone(default_image_size=32, stages=("baseline",))
def fault_oom_once(input_shape=(32, 32, 3), weights=None):
    """Raises MemoryError on the first build in a folder, then builds (the retry's)."""
    marker = os.environ["FAULT_OOM_MARKER"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise MemoryError("injected out-of-memory")
    return _tiny(input_shape)


@register_backbone(default_image_size=32, stages=("baseline",))
def fault_slow(input_shape=(32, 32, 3), weights=None):
    """Sleeps FAULT_SLOW_SECONDS before building: a long cell to kill the sweep in.

    Writes its process id to FAULT_SLOW_MARKER (where set) first, so a test can watch it.
    """
    if os.environ.get("FAULT_SLOW_MARKER"):
        with open(os.environ["FAULT_SLOW_MARKER"], "w") as marker:
            marker.write(str(os.getpid()))
    time.sleep(float(os.environ.get("FAULT_SLOW_SECONDS", "0")))
    return _tiny(input_shape)


@register_backbone(default_image_size=32, stages=("baseline",))
def fault_killed(input_shape=(32, 32, 3), weights=None):
    """SIGKILLs itself, as a user's ``kill -9`` would; appends a line to FAULT_KILL_MARKER per build."""
    with open(os.environ["FAULT_KILL_MARKER"], "a") as marker:
        marker.write("built\n")
    os.kill(os.getpid(), signal.SIGKILL)
