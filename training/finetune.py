"""Fine-tuning from `--init-weights`: a slower learning rate for the loaded layers, and
`--freeze-base-epochs`, which trains only the new classifiers first.

The freeze phase sets `trainable=False` on every layer but the classifiers
(`training.init_weights.set_base_frozen`): Keras 3 then runs a frozen BatchNormalization
in inference mode, also inside `fit`, so it normalizes with the source's moving
statistics and keeps them. This is what avoids the BatchNorm trap of keras.applications'
fine-tuning guides (keras issues 9214, 10045, 20285: high accuracy in `fit`, low in
`evaluate`, because frozen BN layers still normalized with batch statistics), and
precise BN (`training.batchnorm`) leaves frozen layers alone.

The optimizer is built over every variable before the base is frozen, so one optimizer
(and one schedule) serves both phases, and `keras.callbacks.BackupAndRestore` resumes a
run on either side of the boundary: `fit_in_phases` runs `fit` once per phase from the
backed-up epoch.

Example:

```python
scale_base_learning_rate(model.optimizer, model, 0.1)
history = fit_in_phases(model, freeze_epochs=2, resumed_at=0, epochs=10, **fit_kwargs)
```
"""

from __future__ import annotations

from typing import Any

import keras

from training import keras_patches
from training.init_weights import HEAD_LAYER, set_base_frozen


def base_variable_paths(model: keras.Model) -> set[str]:
    """The paths of the trainable variables of every layer but the classifiers."""
    return {
        variable.path
        for layer in model.layers
        if not HEAD_LAYER.match(layer.name)
        for variable in layer.trainable_weights
    }


def scale_base_learning_rate(
    optimizer: keras.optimizers.Optimizer, model: keras.Model, scale: float
) -> keras.optimizers.Optimizer:
    """Makes `optimizer` update the loaded layers at `scale` times its learning rate
    (`training.keras_patches.scale_learning_rate`); returns it. Builds the optimizer over
    every trainable variable of `model` first, so that a later freeze keeps its state:
    call it before freezing, inside the strategy's scope."""
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    return keras_patches.scale_learning_rate(optimizer, base_variable_paths(model), scale)


def fit_in_phases(
    model: keras.Model, *, freeze_epochs: int, resumed_at: int, epochs: int, **fit_kwargs: Any
) -> dict[str, list]:
    """`model.fit(..., epochs=epochs, **fit_kwargs)`, the base frozen for the first
    `freeze_epochs` epochs; returns the history of the epochs trained (both phases).

    `resumed_at` is the epochs already backed up: a run resumed past the freeze phase
    skips it. Each `fit` restores the run's BackupAndRestore state itself.
    """
    history: dict[str, list] = {}

    def run(**kwargs):
        for key, values in model.fit(**fit_kwargs, **kwargs).history.items():
            history.setdefault(key, []).extend(values)

    if freeze_epochs and resumed_at < freeze_epochs:
        set_base_frozen(model, True)
        model.make_train_function(force=True)
        try:
            run(epochs=freeze_epochs)
        finally:
            set_base_frozen(model, False)
        model.make_train_function(force=True)
    if epochs > freeze_epochs or not freeze_epochs:
        run(epochs=epochs, initial_epoch=min(freeze_epochs, epochs))
    return history
