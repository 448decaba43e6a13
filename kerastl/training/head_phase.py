"""The head phase's strategy: train the head on cached features when the model allows it.

While the backbone is frozen, the layers before the head compute the same
features every epoch. When nothing there trains or draws random numbers
(`feature_cache.cacheable`), `cached_trainer` runs them once per image
(`feature_cache.features_of`) and returns a `Trainer` of the head alone on
those features; `fine_tune` asks it once per head phase and fits whatever
`Trainer` it gets. `sweep_heads` trains a `head_sweep` grid on the same features.
"""

import dataclasses
import math

import keras

from kerastl import _processes as processes
from kerastl._keras_private import batch_shards
from kerastl.training import head_loop
from kerastl.training.converged_head import (
    MAX_EPOCHS_CACHED,
    MAX_EPOCHS_FULL,
    PATIENCE,
    PATIENCE_STEPS,
    StopOnPlateau,
    solvable,
    solve_linear_head,
)
from kerastl.training.feature_cache import FeatureBatches, cacheable, features_of, random_layers
from kerastl.training.head_sweep import HeadSweep, train_heads


@dataclasses.dataclass
class Trainer:
    """What one phase fits: a model, its `fit` data, and its validation data.

    Attributes:
        model: the full model, or the head on cached features (compiled).
        fit_arguments: the data arguments of `model.fit` (`x`, `y`, `batch_size`, ...).
        validation_data: what `model.fit` takes as `validation_data`, or `None`.
        evaluate_arguments: the data arguments of `model.evaluate` on the validation
            data, or `None`.
        on_cache: whether `model` is the head on cached features.
        features: on the cache, the training features and labels `(x, y)` as arrays
            (augmented views flattened into images), else `None`.
        validation_features: on the cache, the validation features and labels
            `(x, y)` as arrays, else `None`.
        epochs_loop: on the cache where `head_loop` trains the head instead of
            `fit` (TensorFlow and torch, features in memory), the training `FeatureBatches`
            and the validation's `(x, y, batch_size)` or `None`; else `None`.
    """

    model: keras.Model
    fit_arguments: dict
    validation_data: object = None
    evaluate_arguments: dict | None = None
    on_cache: bool = False
    features: tuple | None = None
    validation_features: tuple | None = None
    epochs_loop: tuple | None = None

    def fit(self, *, epochs, initial_epoch=0, callbacks=(), verbose=0):
        """Trains `model` as `model.fit` would on this trainer's data; the `History`."""
        if self.epochs_loop is not None:
            batches, validation = self.epochs_loop
            return head_loop.fit_epochs(
                self.model,
                batches,
                epochs=epochs,
                initial_epoch=initial_epoch,
                validation=validation,
                callbacks=callbacks,
                verbose=verbose,
            )
        return self.model.fit(
            **self.fit_arguments,
            validation_data=self.validation_data,
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=list(callbacks),
            verbose=verbose,
        )


def full_model_trainer(model, train, validation):
    """The `Trainer` of the full model on the data adapters `train` and `validation`."""
    if validation is None:
        return Trainer(model, train.fit_arguments())
    return Trainer(
        model,
        train.fit_arguments(),
        validation.validation_data(),
        validation.evaluate_arguments(),
    )


HEAD_STEPS_PER_EXECUTION = 32


def cached_trainer(settings, train, validation, *, steps, epochs_done=0):
    """The head phase on cached features: `(trainer, None)`, or `(None, why it cannot)`.

    Args:
        settings: the run's `fine_tune_args.Settings`.
        train: the training data's `DataAdapter`.
        validation: the validation data's `DataAdapter`, or `None`.
        steps: the optimizer steps of the head phase (its schedule's length), or
            `None` (a head trained to convergence, at a constant rate).
        epochs_done: the epochs the run has done (augmented views are drawn per epoch).

    Returns:
        `(Trainer, None)`: the head alone on the features, compiled with a fresh
        optimizer of the run; or `(None, reason)`.

    Raises:
        ValueError: the call asked for the cache (`cache=True`, `views`,
            `head_sweep`) and this model's features cannot be cached.
    """
    front, head, reason = _cacheable(settings, train)
    if front is None:
        asked = {
            "cache": settings.cache,
            "views": settings.views,
            "head_sweep": settings.head_sweep,
        }
        for arg, value in asked.items():
            if value is True or (arg != "cache" and value is not None):
                raise ValueError(
                    f"`{arg}` needs the head phase on cached features, and the features of "
                    f"this model cannot be cached: {reason}. Received: {arg}={value!r}"
                )
        return None, reason
    views = settings.views if random_layers(front) else None
    if settings.verbose:
        copies = f" ({views} augmented copies of each image)" if views else ""
        print(f"Caching the frozen backbone's features for the head phase{copies}")
    options = dict(
        cache_dir=settings.cache_dir, dtype=settings.cache_dtype, verbose=settings.verbose
    )
    features = features_of(front, train, batch_size=train.batch_size, views=views, **options)
    # Features on disk are read a batch at a time (`FeatureBatches`): fit would take the
    # memory map whole, and features larger than memory would come back into it.
    on_disk = features.path is not None
    validation_data = evaluate_arguments = validation_features = None
    if validation is not None:
        # In inference mode: augmentation is off, as when the full model evaluates.
        held_out = features_of(front, validation, batch_size=validation.batch_size, **options)
        validation_features = (held_out.features, held_out.labels)
        if on_disk:
            validation_data = FeatureBatches(
                *validation_features, validation.batch_size, shuffle=False
            )
            evaluate_arguments = {"x": validation_data}
        else:
            validation_data = validation_features
            evaluate_arguments = {
                "x": held_out.features,
                "y": held_out.labels,
                "batch_size": validation.batch_size,
            }
    shape = features.features.shape[2:] if views else features.features.shape[1:]
    model = _head_model(settings, head, shape, steps)
    x, y = features.features, features.labels
    epochs_loop = None
    if views or on_disk or keras.config.backend() != "jax":
        # Batches drawn from (seed, epoch): a resumed run sees what an uninterrupted one
        # would, one device what several would (TensorFlow and torch train on them
        # without `fit` where they can, `head_loop`); views: one copy per image an epoch.
        batches = FeatureBatches(
            features.features,
            features.labels,
            train.batch_size,
            shuffle=not train.keeps_order,
            views=bool(views),
            epoch=epochs_done,
        )
        # Keras would reshuffle a PyDataset's batches (torch) from the global RNG.
        fit_arguments = {"x": batches, "shuffle": False}
        x, y = batches.end_to_end()
        if head_loop.applies(model, features.features):
            held_out = None
            if validation is not None:
                held_out = (*validation_features, validation.batch_size)
            epochs_loop = (batches, held_out)
    else:
        fit_arguments = {
            "x": features.features,
            "y": features.labels,
            "batch_size": train.batch_size,
            # The order kerastl batches keep; arrays are reshuffled every epoch as fit does.
            "shuffle": not train.keeps_order,
        }
    trainer = Trainer(
        model,
        fit_arguments,
        validation_data,
        evaluate_arguments,
        on_cache=True,
        features=(x, y),
        validation_features=validation_features,
        epochs_loop=epochs_loop,
    )
    return trainer, None


def converge_head(settings, trainer, *, steps_per_epoch):
    """Trains the head of `trainer` until its loss stops improving; returns its history entry.

    A linear head on cached features is solved exactly (`converged_head`);
    any other head trains epochs at the constant rate `lr` until its training loss
    stops improving (the best epoch kept). The entry holds what `fit` logs for an
    epoch (`loss`, the metrics, `val_` ones with validation): for a solved head,
    the model's evaluation on the training and validation features. The user's
    callbacks do not see it: it is one epoch of the run's history.
    """
    head = settings.head
    if trainer.features is not None and solvable(head, trainer.features[0]):
        # Several processes: each cached its own shard; the head is solved on all of
        # them, the same on every process.
        x, y = (processes.gather_rows(a, "features") for a in trainer.features)
        validation = trainer.validation_features
        if validation is not None:
            validation = tuple(processes.gather_rows(a, "validation features") for a in validation)
        l2 = solve_linear_head(
            head,
            x,
            y,
            validation=validation,
            label_smoothing=settings.label_smoothing,
        )
        model = trainer.model
        # Each process its own rows, a batch at a time (a memory map is not read whole).
        rows = FeatureBatches(*trainer.features, 1024, shuffle=False)
        logs = model.evaluate(rows, verbose=0, return_dict=True)
        if trainer.evaluate_arguments is not None:
            held_out = model.evaluate(**trainer.evaluate_arguments, verbose=0, return_dict=True)
            logs.update({f"val_{key}": value for key, value in held_out.items()})
        logs = {key: float(value) for key, value in logs.items()}
        if settings.verbose:
            shown = ", ".join(f"{key} {value:.4f}" for key, value in logs.items())
            print(f"Head phase: logistic regression solved by L-BFGS (l2={l2:g}): {shown}")
        return logs
    # Patience counted in steps as well: a few-batch epoch at a small rate moves the loss
    # little, and "no better for 3 epochs" would end the phase long before convergence.
    patience = max(PATIENCE, math.ceil(PATIENCE_STEPS / max(steps_per_epoch, 1)))
    plateau = StopOnPlateau(patience=patience)
    epochs = MAX_EPOCHS_CACHED if trainer.on_cache else MAX_EPOCHS_FULL
    trainer.fit(epochs=epochs, callbacks=[plateau], verbose=settings.verbose)
    logs = plateau.restore()
    if settings.verbose:
        print(f"Head phase: {plateau.epochs} epochs, the loss stopped improving")
    return logs


def sweep_heads(settings, trainer, *, steps, epochs):
    """Trains the `head_sweep` grid on the cached features of `trainer`; the best head is kept."""
    fit = trainer.fit_arguments
    train = fit["x"] if isinstance(fit["x"], FeatureBatches) else (fit["x"], fit["y"])
    sweep = train_heads(
        settings.head,
        train,
        trainer.validation_data,
        settings.grid,
        epochs=epochs,
        batch_size=fit.get("batch_size", 32),
        make_optimizer=lambda peak: settings.make_optimizer(peak, steps),
        loss=settings.loss(),
        shuffle=fit.get("shuffle", True),
        verbose=settings.verbose,
    )
    if settings.verbose:
        print(f"Head sweep ({len(settings.grid)} heads, the kept one marked *):")
        print(sweep.table())
    return sweep


def sweep_results(sweep: HeadSweep, head):
    """The kept head's last validation figures, in `evaluate`'s names."""
    best = sweep.best
    results = {"loss": best["val_loss"]}
    results.update({m.name: best[f"val_{m.name}"] for m in head.default_metrics()})
    return results


def _cacheable(settings, train):
    """`(front, head, None)` when the head phase can run on cached features, else a reason."""
    if settings.cache is False:
        return None, None, "`cache` is False"
    front, head, reason = cacheable(settings.model, allow_random=settings.views is not None)
    if front is not None and train.mixes:
        return None, None, "the training batches mix images at random (mix=)"
    if front is not None and train.has_weights:
        return None, None, "`train` has sample weights, which the cached features do not keep"
    if front is not None and settings.callbacks and not settings.converge:
        # A callback sees the model being fit: on the cache, the head alone. (A head
        # trained to convergence is one step of the run: callbacks do not see it.)
        return None, None, "`callbacks` watch the full model, which the cache skips"
    return front, head, reason


def _head_model(settings, head, shape, steps):
    """The head alone on features of `shape`, compiled for the head phase."""
    inputs = keras.Input(shape, name="features")
    model = keras.Model(inputs, head(inputs), name=f"{settings.model.name}_head")
    # The head's policy, not the global one: under mixed_float16, `compile` then adds
    # loss scaling as it does for the full model.
    model.dtype_policy = head.dtype_policy
    model.compile(
        optimizer=settings.make_optimizer(settings.lr, steps),
        loss=settings.loss(),
        metrics=head.default_metrics(),
        steps_per_execution=head_steps_per_execution(settings.model),
    )
    return model


def head_steps_per_execution(model):
    """Optimizer steps per call of the head's compiled train function.

    A step of a small head on cached features costs less than the call around it
    (TensorFlow: ~3 ms a call for a Dense head, most of a cached epoch), so
    `HEAD_STEPS_PER_EXECUTION` steps run in one call on TensorFlow and JAX. The
    updates are the same; callbacks see a batch end every that many steps. torch
    runs one step a call (Keras allows no other there) and pays no such cost; so
    does a model split over several devices or processes (a `tf.distribute`
    strategy's step loop fails on a short last batch).
    """
    if keras.config.backend() == "torch" or batch_shards(model) > 1 or processes.count() > 1:
        return 1
    return HEAD_STEPS_PER_EXECUTION
