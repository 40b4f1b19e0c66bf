"""airbench94's optimiser in Keras: Nesterov SGD as PyTorch runs it, its triangular learning-rate
schedule and its lookahead weight averaging (``bench.stages.Nesterov`` holds the numbers).

Written as airbench's ``main`` does it (github.com/KellerJordan/cifar10-airbench,
legacy/airbench94.py), in Keras: the decay is added to the gradient before the momentum (PyTorch's
SGD), not subtracted from the weights after it (Keras's), and the BatchNorm offsets and the
whitening layer's bias get their own rules, which Keras's SGD has no place for.
"""

from __future__ import annotations

import keras
import numpy as np

from backbones.airbench_layers import Whitening
from bench.stages import Stage


def kilostep_scale(momentum: float) -> float:
    """airbench's unit: 1,024 examples times how much Nesterov momentum amplifies a constant
    gradient's step, 1 + 1 / (1 - momentum)."""
    return 1024 * (1 + 1 / (1 - momentum))


# Registered: cloning a compiled model (``bench.convert``'s inference copy) rebuilds its optimiser
# from its config, which cannot hold the variables of its per-variable rules: such a copy's
# optimiser would step every variable alike. It is never trained.
@keras.saving.register_keras_serializable(package="bench")
class NesterovSGD(keras.optimizers.Optimizer):
    """PyTorch's SGD with Nesterov momentum and L2 decay, per variable:
    ``d = g * gradient_scale + decay / s * w``, ``buffer = momentum * buffer + d``,
    ``w -= s * lr * (d + momentum * buffer)``, where ``s`` is ``lr_scale`` for the variables in
    ``scaled`` (1 for the others), so every variable decays alike. A variable in ``frozen_after``
    stops changing (no step, no decay, no momentum) once that many steps are done.
    """

    def __init__(self, learning_rate, momentum: float, decay: float, gradient_scale: float, lr_scale: float = 1.0, scaled=(), frozen_after=(), **kwargs):
        super().__init__(learning_rate=learning_rate, name=kwargs.pop("name", "nesterov_sgd"), **kwargs)
        self.momentum, self.decay, self.gradient_scale, self.lr_scale = momentum, decay, gradient_scale, lr_scale
        # By object: the optimiser's variable order is only known once it is built.
        self._scaled_ids = {id(v) for v in scaled}
        self._frozen_after_ids = {id(v): steps for v, steps in frozen_after}

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.buffers = self.add_optimizer_variables(variables, "buffer")
        self._scales = [self.lr_scale if id(v) in self._scaled_ids else 1.0 for v in variables]
        self._stops = [self._frozen_after_ids.get(id(v)) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        buffer, scale, stop = self.buffers[index], self._scales[index], self._stops[index]
        ops = keras.ops
        step = ops.cast(gradient, variable.dtype) * self.gradient_scale + (self.decay / scale) * variable
        new_buffer = self.momentum * buffer + step
        new_variable = variable - ops.cast(learning_rate, variable.dtype) * scale * (step + self.momentum * new_buffer)
        if stop is not None:
            # ``iterations`` counts the steps done before this one.
            live = ops.less(self.iterations, stop)
            new_buffer, new_variable = ops.where(live, new_buffer, buffer), ops.where(live, new_variable, variable)
        self.assign(buffer, new_buffer)
        self.assign(variable, new_variable)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "decay": self.decay, "gradient_scale": self.gradient_scale, "lr_scale": self.lr_scale}


@keras.saving.register_keras_serializable(package="bench")
class TriangleSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """airbench's rate: from ``start_factor`` of ``peak`` up to ``peak`` over the first
    ``peak_fraction`` of ``total_steps``, then linearly down to ``end_factor`` of it at the last step."""

    def __init__(self, peak: float, total_steps: int, peak_fraction: float, start_factor: float, end_factor: float):
        self.peak, self.total_steps, self.peak_fraction, self.start_factor, self.end_factor = peak, total_steps, peak_fraction, start_factor, end_factor

    def __call__(self, step):
        rise = int(self.total_steps * self.peak_fraction)
        step = keras.ops.cast(step, "float32")
        # max(1, ...): only against dividing by zero; the branch it guards is then never taken.
        up = self.start_factor + (1 - self.start_factor) * step / max(1, rise)
        down = 1 + (self.end_factor - 1) * (step - rise) / max(1, self.total_steps - rise)
        return self.peak * keras.ops.where(step < rise, up, down)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "peak_fraction": self.peak_fraction, "start_factor": self.start_factor, "end_factor": self.end_factor}


def _layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def nesterov_optimizer(model, recipe: Stage, steps_per_epoch: int) -> NesterovSGD:
    """``recipe``'s optimiser and schedule for ``model``, from airbench's decoupled hyperparameters."""
    rules = recipe.nesterov
    total = max(1, recipe.epochs * steps_per_epoch)
    # airbench's rate is per example of a summed loss, its decay per step, both in kilosteps.
    lr = recipe.learning_rate / kilostep_scale(rules.momentum)
    decay = recipe.weight_decay * recipe.batch_size / kilostep_scale(rules.momentum)
    offsets = [v for layer in _layers(model) if isinstance(layer, keras.layers.BatchNormalization) for v in layer.trainable_variables]
    whiten_bias = [v for layer in _layers(model) if isinstance(layer, Whitening) for v in layer.trainable_variables]
    return NesterovSGD(
        learning_rate=TriangleSchedule(lr, total, rules.peak_fraction, rules.start_factor, rules.end_factor),
        momentum=rules.momentum,
        # PyTorch's group decay is airbench's decay over the group's rate, so every group decays alike.
        decay=decay / lr,
        # Keras averages the loss over the batch; airbench sums it.
        gradient_scale=float(recipe.batch_size),
        lr_scale=rules.bias_lr_scale,
        scaled=offsets,
        frozen_after=[(v, rules.whiten_bias_epochs * steps_per_epoch) for v in whiten_bias],
    )


class Lookahead(keras.callbacks.Callback):
    """airbench's lookahead averaging: every ``every`` steps an average of all float weights
    (BatchNorm's running statistics included) moves towards them by ``1 - decay`` and the
    weights are set to it, ``decay = base_decay ** every * (step / total_steps) ** 3``; after the
    last step the weights are set to the average. Kept in NumPy: a few milliseconds every
    few steps, against seconds per step at airbench's batch size on a CPU."""

    def __init__(self, every: int, base_decay: float, total_steps: int):
        super().__init__()
        self.every, self.base_decay, self.total_steps = every, base_decay, total_steps
        self.average = None

    def on_train_begin(self, logs=None):
        if self.average is None:  # the train loop calls fit once per epoch; the average spans them all
            self.variables = [v for v in self.model.weights if "float" in str(v.dtype)]
            self.average = [np.array(v.numpy()) for v in self.variables]

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every == 0:
            self._pull(self.base_decay**self.every * (step / self.total_steps) ** 3)
        if step == self.total_steps:
            self._pull(1.0)

    def _pull(self, decay: float) -> None:
        for average, variable in zip(self.average, self.variables):
            average += (1 - decay) * (variable.numpy() - average)
            variable.assign(average)
