"""`fine_tune`: the two-phase transfer-learning recipe in one call, resumable after a crash."""

import dataclasses
import math
import numbers

import keras
import numpy as np

from kerastl._checks import check_bool, check_positive_int, is_finite_number
from kerastl._keras_private import batch_shards, distribution_scope, flatten_layers
from kerastl.data.image_batches import ImageBatches
from kerastl.freeze.lora import LoRA
from kerastl.freeze.policies import FreezePolicy, check_policy, get_policy, validate_bn
from kerastl.heads.task_head import TaskHead
from kerastl.layers.feature_extractor import find_extractor
from kerastl.training.checkpoints import Checkpoints
from kerastl.training.feature_cache import (
    ViewBatches,
    cacheable,
    check_cache_dtype,
    features_of,
    random_layers,
)
from kerastl.training.head_sweep import HeadSweep, sweep_grid, train_heads
from kerastl.training.losses import SparseCategoricalCrossentropy
from kerastl.training.per_layer_lr import PerLayerLR
from kerastl.training.policy import change_freeze
from kerastl.training.schedules import SCHEDULES, make_schedule

PHASES = ("head", "fine-tune")
# Arguments a plan may set: their defaults, used when neither the call nor a plan sets them.
_UNSET = object()
_DEFAULTS = {"head_epochs": 1, "lr": 1e-3, "lr_mult": 100.0, "unfreeze": "none", "bn": None}
_OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


@dataclasses.dataclass
class FineTuneHistory:
    """What `fine_tune` did, in Keras' `History` layout plus the phases.

    Attributes:
        history: `{"loss": [...], "val_loss": [...], "accuracy": [...], ...}`,
            one value per epoch of both phases, as `keras.callbacks.History`.
        epoch: the epoch indices, `0 .. n - 1`.
        phases: the phase of each run of epochs, `["head", "fine-tune"]`.
        phase_boundaries: the epochs where a new phase begins (`[head_epochs]`).
        initial: the evaluation on `validation` before training (or `None`).
        final: the evaluation on `validation` after training (or `None`).
        stopped_early: whether early stopping ended a phase.
        model: the trained model.
        sweep: the `HeadSweep` of the head phase (`head_sweep=`), or `None`.
    """

    history: dict
    epoch: list
    phases: list
    phase_boundaries: list
    initial: dict | None = None
    final: dict | None = None
    stopped_early: bool = False
    model: keras.Model | None = None
    sweep: HeadSweep | None = None

    def phase_of(self, epoch):
        """The phase name of an epoch index."""
        phase = sum(1 for b in self.phase_boundaries if epoch >= b)
        return self.phases[min(phase, len(self.phases) - 1)]


def fine_tune(
    model,
    train,
    validation=None,
    *,
    epochs=None,
    head_epochs=_UNSET,
    lr=_UNSET,
    lr_mult=_UNSET,
    layer_decay=None,
    unfreeze=_UNSET,
    bn=_UNSET,
    optimizer="adam",
    schedule="cosine",
    warmup=0.1,
    label_smoothing=0.0,
    ema=False,
    early_stopping=None,
    batch_size=32,
    plan=None,
    checkpoint_dir=None,
    cache="auto",
    cache_dir=None,
    cache_dtype="float32",
    views=None,
    head_sweep=None,
    evaluate_first=True,
    callbacks=None,
    verbose=1,
) -> FineTuneHistory:
    """Trains a new head on a frozen backbone, then fine-tunes the backbone, in one call.

    Phase 1 ("head", `head_epochs`): the backbone is frozen (its BatchNorm
    in inference mode), only the head (and any layer outside the extractor)
    trains, at `lr`. Phase 2 ("fine-tune", `epochs`): the `unfreeze` policy
    opens the backbone, BatchNorm follows `bn`, and the model is recompiled
    with a fresh optimizer whose rate peaks at `lr / 2` for the head and falls
    block by block to `lr / 2 / lr_mult` for the first block of the backbone
    (a `PerLayerLR` layer decay). Each phase has its own schedule, counted in
    steps. The model is compiled by `fine_tune`: an optimizer it had is replaced.

    Defaults, and why:

    - `head_epochs=1`, `lr_mult=100`, the halved rate in phase 2: fastai's
      `fine_tune` (freeze_epochs=1, base_lr halved after unfreezing, lr_mult=100),
      a recipe tuned on many transfer tasks. The head first learns on fixed
      features, so phase 2 starts from a head that sends sensible gradients
      into the backbone.
    - `lr=1e-3` with Adam: Adam's default and the Keras transfer-learning
      guide's rate for a new head; the backbone's deepest blocks then train at
      5e-4 and its first at 5e-6, close to the guide's 1e-5 for the whole base.
    - `schedule="cosine"`: a 10% linear warm-up, then cosine decay to zero
      (timm's default shape). A warm-up keeps Adam's first, badly estimated
      steps from wrecking pretrained weights. `"one_cycle"` is fastai's.
    - `unfreeze="none"` (nothing stays frozen: the whole base trains, as
      fastai and the guide do) with `bn` left as the extractor has it
      (`"frozen"` by default: the Keras guide keeps BatchNorm in inference mode
      when fine-tuning, since small batches give poor statistics).

    Args:
        model: a `kerastl.build_model` model, or any model holding one
            `kerastl.FeatureExtractor` and a `kerastl.heads` head.
        train: `(x, y)` arrays, a `keras.utils.PyDataset` (what
            `kerastl.data.from_arrays` / `from_directory` return), a
            `tf.data.Dataset` or a `kerastl.data.from_torch_dataset` source.
        validation: the same kinds, or `None`. Evaluated before training
            (`evaluate_first`), after every epoch and at the end.
        epochs: epochs of phase 2 (0: the head only). Required, unless `plan`
            gives it.
        head_epochs: epochs of phase 1 (0: unfreeze at once).
        lr: peak learning rate of phase 1.
        lr_mult: the head's phase-2 rate over the first block's. 1 gives every
            layer the same rate (the default with a `LoRA` policy: adapters
            start at zero and each needs the full rate).
        layer_decay: instead of `lr_mult`, the `PerLayerLR` decay per block.
        unfreeze: what trains in phase 2: a `kerastl.freeze` policy,
            `"none"` (nothing frozen), or a `kerastl.freeze.LoRA` policy: phase 2
            then adds low-rank adapters to the backbone (its own weights stay
            frozen) and trains them with the head; the model keeps them
            (`kerastl.freeze.merge_lora` folds them in for serving).
        bn: BatchNorm mode in phase 2 (`"frozen"`, `"affine"`, `"train"`);
            `None` keeps the extractor's.
        optimizer: `"adam"`, `"adamw"`, `"sgd"`, `"rmsprop"`, or a Keras
            optimizer whose class and config are used (its rate replaced).
        schedule: `"cosine"` (warm-up + cosine), `"one_cycle"` or `"constant"`.
        warmup: fraction of each phase's steps spent warming up (cosine), or
            rising (one-cycle).
        label_smoothing: for `"multiclass"` and `"binary"` heads.
        ema: keep an exponential moving average of the weights (Keras'
            `use_ema`) and end each phase with it.
        early_stopping: `None`, or the patience in epochs: a phase stops when
            the validation loss (training loss without validation) has not
            improved for that many epochs, and its best weights are restored.
        batch_size: for `(x, y)` arrays.
        plan: a `kerastl.recommend(...)` plan: its settings (`epochs`,
            `head_epochs`, `lr`, `lr_mult`, `unfreeze`, `bn`) replace the
            defaults; any of them you pass yourself wins over the plan.
        checkpoint_dir: a directory for crash-safe checkpoints after every
            epoch. Calling `fine_tune` again with the same directory and
            settings resumes where the run stopped: same phase, epoch,
            trainable layers, optimizer state and schedule position; at most
            the epoch in progress is lost. A finished run returns at once.
        cache: the head phase on cached features (`kerastl.cache_features`):
            the backbone runs once per image instead of once per epoch.
            `"auto"` (default) caches whenever it is valid (nothing before the
            head trains or draws random numbers: no augmentation, no MixUp;
            and no `callbacks`, which watch the full model); `True` raises
            when it is not; `False` never caches.
        cache_dir: keep the cached features on disk here (memory-mapped, reused
            by a later run on the same model and data); `None`: in memory.
        cache_dtype: what the cached features are stored as: `"float32"`,
            `"float16"` or `"bfloat16"` (half the memory and disk; the head
            still trains on them in float32). See `kerastl.cache_features`.
        views: with random augmentation in the model, cache this many
            augmented copies of each image (the augmentation runs `views`
            times, the backbone on each copy) and train the head on one copy
            per image per epoch, drawn at random; `None` (default): a model
            that augments trains its head end to end.
        head_sweep: train several heads at once on the cached features and
            keep the best on `validation` (accuracy, then loss): `True` for
            the default grid (`lr` times 0.1, 0.3, 1 and 3, each with weight
            decay 0 and 1e-4: 8 heads), a dict `{"lr": [...],
            "weight_decay": [...]}` (their product), or a list of
            `{"lr": ..., "weight_decay": ...}`. Weight decay is an L2 penalty
            `wd / 2 * |W|^2` on the head's kernels. Needs `validation` and the
            cache; early stopping does not apply to it. The grid's results are
            in `history.sweep`.
        evaluate_first: evaluate `validation` before training and report it.
        callbacks: more Keras callbacks, given to both phases.
        verbose: 0 silent, 1 progress and the before/after evaluation.

    Returns:
        A `FineTuneHistory`.

    Example:

    ```python
    backbone = keras.Sequential(
        [keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, name="conv")], name="tiny"
    )
    extractor = kerastl.FeatureExtractor(backbone, pooling="avg")
    prep = kerastl.preprocessing.pipeline(extractor, mode="tf")
    model = kerastl.build_model(extractor, kerastl.heads.multiclass(3), prep)
    x = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3)).astype("uint8")
    y = np.arange(12) % 3
    history = kerastl.fine_tune(model, (x, y), (x, y), epochs=2, verbose=0)
    print(len(history.epoch), history.phases, history.phase_boundaries)
    # 3 ['head', 'fine-tune'] [1]
    ```
    """
    given = {
        "head_epochs": head_epochs,
        "lr": lr,
        "lr_mult": lr_mult,
        "unfreeze": unfreeze,
        "bn": bn,
    }
    planned = _plan_settings(plan) if plan is not None else {}
    if epochs is None:
        if "epochs" not in planned:
            raise TypeError(
                "`epochs` (the epochs of phase 2) is required unless a `plan` gives it. "
                "Received: epochs=None"
            )
        epochs = planned["epochs"]
    settings = {
        key: value if value is not _UNSET else planned.get(key, _DEFAULTS[key])
        for key, value in given.items()
    }
    head_epochs, lr, lr_mult = settings["head_epochs"], settings["lr"], settings["lr_mult"]
    unfreeze, bn = settings["unfreeze"], settings["bn"]
    if isinstance(unfreeze, LoRA) and given["lr_mult"] is _UNSET and "lr_mult" not in planned:
        # Adapters start at zero: each needs the full rate, not a block-wise lower one.
        lr_mult = 1.0
    run = _Run.check(
        model=model,
        epochs=epochs,
        head_epochs=head_epochs,
        lr=lr,
        lr_mult=lr_mult,
        layer_decay=layer_decay,
        unfreeze=unfreeze,
        bn=bn,
        optimizer=optimizer,
        schedule=schedule,
        warmup=warmup,
        label_smoothing=label_smoothing,
        ema=ema,
        early_stopping=early_stopping,
        batch_size=batch_size,
        evaluate_first=evaluate_first,
        callbacks=callbacks,
        verbose=verbose,
        cache=cache,
        cache_dir=cache_dir,
        cache_dtype=cache_dtype,
        views=views,
        head_sweep=head_sweep,
    )
    if run.grid is not None and validation is None:
        raise ValueError(
            "`head_sweep` keeps the head that does best on `validation`, which is None. "
            f"Received: head_sweep={head_sweep!r}, validation=None"
        )
    train_data = _Data(train, "train", batch_size, run.head)
    validation_data = (
        None if validation is None else _Data(validation, "validation", batch_size, run.head)
    )
    checkpoints = None if checkpoint_dir is None else Checkpoints(checkpoint_dir)
    # Under tf.distribute the optimizers and the cache's head model are made in the
    # model's strategy scope; a JAX distribution is the one active here.
    with distribution_scope(model):
        shards = batch_shards(model)
        for data in (train_data, validation_data):
            if data is not None:
                data.check_shards(shards)
        return run.fit(train_data, validation_data, checkpoints)


# --- the run ---------------------------------------------------------------------


@dataclasses.dataclass
class _Run:
    model: keras.Model
    extractor: object
    head: TaskHead
    epochs: int
    head_epochs: int
    lr: float
    lr_mult: float
    layer_decay: float | None
    unfreeze: FreezePolicy
    bn: str
    optimizer: object
    schedule: str
    warmup: float
    label_smoothing: float
    ema: bool
    early_stopping: int | None
    evaluate_first: bool
    callbacks: list
    verbose: int
    cache: object = "auto"
    cache_dir: object = None
    cache_dtype: str = "float32"
    views: int | None = None
    grid: list | None = None
    head_sweep: object = None
    lora: object = None

    @classmethod
    def check(cls, model, **args):
        if not isinstance(model, keras.Model):
            raise TypeError(f"`model` must be a keras.Model. Received: model={model!r}")
        extractor = find_extractor(model)
        if extractor is None:
            raise ValueError(
                "`model` holds no kerastl.FeatureExtractor: fine_tune freezes and opens the "
                f"backbone through it (build the model with kerastl.build_model). "
                f"Received: model={model.name!r}"
            )
        heads = [layer for layer in flatten_layers(model) if isinstance(layer, TaskHead)]
        if len(heads) != 1:
            raise ValueError(
                f"`model` must hold one kerastl head (kerastl.heads); it holds {len(heads)}. "
                f"Received: model={model.name!r}"
            )
        for arg in ("epochs", "head_epochs"):
            value = args[arg]
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"`{arg}` must be an int >= 0. Received: {arg}={value!r}")
        if args["epochs"] + args["head_epochs"] == 0:
            raise ValueError(
                "Nothing to train: `epochs` and `head_epochs` are both 0. "
                f"Received: epochs={args['epochs']}, head_epochs={args['head_epochs']}"
            )
        for arg in ("lr", "lr_mult"):
            if not is_finite_number(args[arg]) or args[arg] <= 0:
                raise ValueError(
                    f"`{arg}` must be a positive number. Received: {arg}={args[arg]!r}"
                )
        if args["lr_mult"] < 1:
            raise ValueError(
                "`lr_mult` is the head's rate over the first block's: at least 1. "
                f"Received: lr_mult={args['lr_mult']!r}"
            )
        decay = args["layer_decay"]
        if decay is not None and (not is_finite_number(decay) or not 0 < decay <= 1):
            raise ValueError(f"`layer_decay` must be in (0, 1]. Received: layer_decay={decay!r}")
        lora = None
        if isinstance(args["unfreeze"], LoRA):
            # Phase 2 adds adapters (checked now: a policy that adapts nothing raises);
            # nothing else in the backbone opens.
            lora, args["unfreeze"] = args["unfreeze"], "all"
            if extractor.lora != lora:
                if extractor.lora is not None:
                    raise ValueError(
                        f"The model's extractor already has other LoRA adapters "
                        f"({extractor.lora!r}): merge or remove them first "
                        f"(`kerastl.freeze.merge_lora`). Received: unfreeze={lora!r}"
                    )
                try:
                    lora.targets(extractor.backbone, extractor.blocks)
                except ValueError as e:
                    raise ValueError(
                        f"{str(e).rsplit(' Received:', 1)[0]} Received: unfreeze={lora!r}"
                    ) from None
        unfreeze = get_policy(args["unfreeze"])
        if args["epochs"] > 0 and lora is None and not unfreeze.asks_for_training():
            raise ValueError(
                f"`unfreeze` opens nothing ({unfreeze!r}), so phase 2 would train the head "
                f"again; train it with head_epochs instead. Received: unfreeze={unfreeze!r}"
            )
        bn = extractor.bn if args["bn"] is None else validate_bn(args["bn"])
        if args["epochs"] > 0 and lora is None:
            # Checked now, not after the head phase has run.
            try:
                check_policy(extractor.backbone, unfreeze, extractor.blocks, bn)
            except ValueError as e:
                raise ValueError(
                    f"{str(e).rsplit(' Received:', 1)[0]} Received: unfreeze={unfreeze!r}"
                ) from None
        optimizer = args["optimizer"]
        if not (
            optimizer in _OPTIMIZERS
            or (
                isinstance(optimizer, keras.optimizers.Optimizer)
                and not isinstance(optimizer, PerLayerLR)
            )
        ):
            raise ValueError(
                f"`optimizer` must be one of {_OPTIMIZERS} or a Keras optimizer (fine_tune "
                f"adds the per-layer rates itself). Received: optimizer={optimizer!r}"
            )
        if args["schedule"] not in SCHEDULES:
            raise ValueError(
                f"`schedule` must be one of {SCHEDULES}. Received: schedule={args['schedule']!r}"
            )
        warmup = args["warmup"]
        if not is_finite_number(warmup, 0.0) or warmup >= 1:
            raise ValueError(f"`warmup` must be in [0, 1). Received: warmup={warmup!r}")
        smoothing = args["label_smoothing"]
        if not is_finite_number(smoothing, 0.0) or smoothing >= 1:
            raise ValueError(
                f"`label_smoothing` must be in [0, 1). Received: label_smoothing={smoothing!r}"
            )
        head = heads[0]
        if smoothing and head.task not in ("multiclass", "binary"):
            raise ValueError(
                f"`label_smoothing` applies to classification heads; this head's task is "
                f"{head.task!r}. Received: label_smoothing={smoothing!r}"
            )
        check_bool(args["ema"], "ema")
        check_bool(args["evaluate_first"], "evaluate_first")
        patience = args["early_stopping"]
        if patience is not None:
            check_positive_int(patience, "early_stopping")
        callbacks = args["callbacks"]
        if callbacks is None:
            callbacks = []
        if not isinstance(callbacks, (list, tuple)) or not all(
            isinstance(c, keras.callbacks.Callback) for c in callbacks
        ):
            raise TypeError(
                f"`callbacks` must be a list of Keras callbacks. Received: callbacks={callbacks!r}"
            )
        if args["cache"] not in ("auto", True, False):
            raise ValueError(
                f"`cache` must be 'auto', True or False. Received: cache={args['cache']!r}"
            )
        if args["verbose"] not in (0, 1, 2):
            raise ValueError(f"`verbose` must be 0, 1 or 2. Received: verbose={args['verbose']!r}")
        args["cache_dtype"] = check_cache_dtype(args["cache_dtype"], "cache_dtype")
        if args["cache_dtype"] != "float32" and args["cache"] is False:
            raise ValueError(
                "`cache_dtype` is the dtype of cached features, and `cache` is False. "
                f"Received: cache_dtype={args['cache_dtype']!r}, cache=False"
            )
        if args["views"] is not None:
            check_positive_int(args["views"], "views")
        if args["head_sweep"] is False:
            args["head_sweep"] = None
        sweep = args["head_sweep"]
        grid = None
        if sweep is not None:
            grid = sweep_grid(sweep, float(args["lr"]))
            if args["head_epochs"] == 0:
                raise ValueError(
                    "`head_sweep` trains heads in the head phase, and `head_epochs` is 0. "
                    f"Received: head_sweep={sweep!r}, head_epochs=0"
                )
        for arg, value in (("views", args["views"]), ("head_sweep", grid)):
            if value is not None and args["cache"] is False:
                raise ValueError(
                    f"`{arg}` works on cached features, and `cache` is False. "
                    f"Received: {arg}={value if arg == 'views' else sweep!r}, cache=False"
                )
        args.pop("batch_size")
        return cls(
            model=model,
            extractor=extractor,
            head=head,
            **{
                **args,
                "unfreeze": unfreeze,
                "bn": bn,
                "callbacks": list(callbacks),
                "lr": float(args["lr"]),
                "lr_mult": float(args["lr_mult"]),
                "warmup": float(warmup),
                "label_smoothing": float(smoothing),
                "grid": grid,
                "lora": lora,
            },
        )

    # --- phases -------------------------------------------------------------------

    @property
    def total_epochs(self):
        return self.head_epochs + self.epochs

    def settings(self):
        """What a checkpoint must agree with to be resumed by this call."""
        return {
            "epochs": self.epochs,
            "head_epochs": self.head_epochs,
            "lr": self.lr,
            "lr_mult": self.lr_mult,
            "layer_decay": self.layer_decay,
            "unfreeze": keras.saving.serialize_keras_object(self.lora or self.unfreeze),
            "bn": self.bn,
            "schedule": self.schedule,
            "warmup": self.warmup,
            "label_smoothing": self.label_smoothing,
            "ema": self.ema,
            "early_stopping": self.early_stopping,
            "views": self.views,
            "cache_dtype": self.cache_dtype,
            "head_sweep": None if self.grid is None else [list(pair) for pair in self.grid],
        }

    def fit(self, train, validation, checkpoints):
        state = {
            "settings": self.settings(),
            "epochs_done": 0,
            "phase": 0,
            "history": {},
            "initial": None,
            "stopped_early": False,
            "early": None,
        }
        resume = checkpoints.latest() if checkpoints is not None else None
        if resume is not None:
            state, path = resume
            if state.get("settings") != self.settings():
                raise ValueError(
                    "`checkpoint_dir` holds a run with other settings "
                    f"({_difference(state.get('settings'), self.settings())}); use another "
                    "directory or the same settings. "
                    f"Received: checkpoint_dir={checkpoints.directory!r}"
                )
        phases = [(0, self.head_epochs), (1, self.epochs)]
        start = 0
        on_cache = None  # (head model, validation features) of a head phase on the cache
        for phase, count in phases:
            end = start + count
            if count == 0 or state["epochs_done"] >= end:
                start = end
                continue
            self._compile(phase, train.steps * count)
            trainer = self.model
            fit_data = train.fit_arguments()
            validation_data = None if validation is None else validation.as_validation()
            if phase == 0:
                cached = self._cached(train, validation, train.steps * count, state["epochs_done"])
                if cached is not None:
                    trainer, fit_data, validation_data = cached
                    on_cache = (trainer, validation_data)
            if resume is not None:
                # The optimizer state of a checkpoint belongs to the phase it was written
                # in. In the head phase it is the head's alone, on the cache or not: the
                # same variables either way.
                same_phase = state["phase"] == phase and state["epochs_done"] > start
                trainer.optimizer.build(trainer.trainable_variables)
                checkpoints.restore(
                    self.model, resume[1], optimizer=same_phase, optimizer_of=trainer
                )
                resume = None
            elif phase == 0 and self.evaluate_first and validation is not None:
                if trainer is self.model:
                    state["initial"] = self._evaluate(validation, "Before training")
                else:  # the same figures, from the cached features
                    state["initial"] = self._evaluate_arguments(
                        trainer,
                        {
                            "x": validation_data[0],
                            "y": validation_data[1],
                            "batch_size": validation.batch_size,
                        },
                        "Before training",
                    )
            if state["phase"] != phase:
                state["phase"], state["early"] = phase, None
            state["on_cache"] = trainer is not self.model
            if phase == 0 and self.grid is not None:
                sweep = self._sweep(trainer, fit_data, validation_data, train.steps * count, count)
                for key, values in sweep.history.items():
                    state["history"].setdefault(key, []).extend(values)
                state["epochs_done"] = end
                state["sweep"] = dataclasses.asdict(sweep)
                if checkpoints is not None:  # the head phase is short: no mid-sweep checkpoint
                    checkpoints.write(self.model, state, optimizer_of=trainer)
                start = end
                continue
            if phase == 1 and state.get("boundary") is None:
                # Where phase 2 begins: earlier than head_epochs if early stopping ended
                # the head phase.
                state["boundary"] = state["epochs_done"]
            recorder = _Recorder(self, state, checkpoints, start, trainer)
            trainer.fit(
                **fit_data,
                validation_data=validation_data,
                epochs=end,
                initial_epoch=state["epochs_done"],
                callbacks=[recorder, *self.callbacks],
                verbose=self.verbose,
            )
            recorder.finish()
            if recorder.stopped:
                state["stopped_early"] = True
            start = end
        if resume is not None:
            # The run had finished: its last phase's trainable set and last weights.
            last = 1 if self.epochs else 0
            self._compile(last, train.steps * (self.epochs if last else self.head_epochs))
            checkpoints.restore(self.model, resume[1], optimizer=False)
        final = None
        swept = on_cache is not None and self.grid is not None
        if validation is not None and swept and not self.epochs:
            # The kept head's last validation figures are those of the model now.
            best = state["sweep"]["best"]
            final = {"loss": best["val_loss"]}
            final.update({m.name: best[f"val_{m.name}"] for m in self.head.default_metrics()})
            self._report(final, "After training")
        elif validation is not None and on_cache is not None and not self.epochs:
            # The run ended on the cache: the same figures from the validation features,
            # without running the backbone over the validation images again.
            trainer, (features, labels) = on_cache
            final = self._evaluate_arguments(
                trainer,
                {"x": features, "y": labels, "batch_size": validation.batch_size},
                "After training",
            )
        elif validation is not None:
            final = self._evaluate(validation, "After training")
        history = state["history"]
        count = len(next(iter(history.values()), []))
        boundary = state.get("boundary")
        boundaries = [boundary] if boundary else []
        phases = [PHASES[i] for i, (_, n) in enumerate(phases) if n]
        return FineTuneHistory(
            history=history,
            epoch=list(range(count)),
            phases=phases,
            phase_boundaries=boundaries,
            initial=state["initial"],
            final=final,
            stopped_early=state["stopped_early"],
            model=self.model,
            sweep=HeadSweep(**state["sweep"]) if state.get("sweep") else None,
        )

    def _compile(self, phase, steps):
        if phase == 0:
            change_freeze(self.model, "all")
            peak = self.lr
            optimizer = self._optimizer(make_schedule(self.schedule, peak, steps, self.warmup))
        else:
            if self.lora is not None and self.extractor.lora != self.lora:
                self.extractor.set_lora(self.lora)  # adapters at zero: outputs unchanged
            change_freeze(self.model, self.unfreeze, bn=self.bn)
            peak = self.lr / 2
            inner = self._optimizer(make_schedule(self.schedule, peak, steps, self.warmup))
            decay = self.layer_decay
            blocks = len(self.extractor.blocks)
            if decay is None and self.lr_mult > 1 and blocks:
                decay = self.lr_mult ** (-1.0 / blocks)
            optimizer = (
                PerLayerLR(inner, layer_decay=decay, blocks=self.extractor)
                if decay is not None and decay < 1
                else inner
            )
        self.model.compile(
            optimizer=optimizer, loss=self._loss(), metrics=self.head.default_metrics()
        )

    def _cached(self, train, validation, steps, epochs_done):
        """`(head model, fit data, validation data)` on cached features, or `None`."""
        if self.cache is False:
            return None
        front, head, reason = cacheable(self.model, allow_random=self.views is not None)
        if front is not None and train.mixes:
            front, reason = None, "the training batches mix images at random (mix=)"
        if front is not None and self.callbacks:
            # A callback sees the model being fit: on the cache, the head alone.
            front, reason = None, "`callbacks` watch the full model, which the cache skips"
        if front is None:
            asked = {"cache": self.cache, "views": self.views, "head_sweep": self.head_sweep}
            for arg, value in asked.items():
                if value is True or (arg != "cache" and value is not None):
                    raise ValueError(
                        f"`{arg}` needs the head phase on cached features, and the features of "
                        f"this model cannot be cached: {reason}. Received: {arg}={value!r}"
                    )
            return None
        views = self.views if random_layers(front) else None
        if self.verbose:
            copies = f" ({views} augmented copies of each image)" if views else ""
            print(f"Caching the frozen backbone's features for the head phase{copies}")
        features = features_of(
            front,
            train.cache_source(),
            batch_size=train.batch_size,
            cache_dir=self.cache_dir,
            views=views,
            dtype=self.cache_dtype,
            verbose=self.verbose,
        )
        validation_data = None
        if validation is not None:
            # In inference mode: augmentation is off, as when the full model evaluates.
            held_out = features_of(
                front,
                validation.cache_source(),
                batch_size=validation.batch_size,
                cache_dir=self.cache_dir,
                dtype=self.cache_dtype,
                verbose=self.verbose,
            )
            validation_data = (held_out.features, held_out.labels)
        shape = features.features.shape[2:] if views else features.features.shape[1:]
        inputs = keras.Input(shape, name="features")
        trainer = keras.Model(inputs, head(inputs), name=f"{self.model.name}_head")
        # The head's policy, not the global one: under mixed_float16, `compile` then adds
        # loss scaling as it does for the full model.
        trainer.dtype_policy = self.head.dtype_policy
        schedule = make_schedule(self.schedule, self.lr, steps, self.warmup)
        trainer.compile(
            optimizer=self._optimizer(schedule),
            loss=self._loss(),
            metrics=self.head.default_metrics(),
        )
        if views:
            # One copy per image per epoch, drawn from (seed, epoch): a resumed run draws
            # what an uninterrupted one would.
            batches = ViewBatches(
                features.features,
                features.labels,
                train.batch_size,
                shuffle=not train.keeps_order,
                epoch=epochs_done,
            )
            return trainer, {"x": batches}, validation_data
        fit_data = {
            "x": features.features,
            "y": features.labels,
            "batch_size": train.batch_size,
            # The order kerastl batches keep; arrays are reshuffled every epoch as fit does.
            "shuffle": not train.keeps_order,
        }
        return trainer, fit_data, validation_data

    def _sweep(self, trainer, fit_data, validation_data, steps, epochs):
        """Trains the `head_sweep` grid on the cached features; the best head is kept."""
        if isinstance(fit_data["x"], ViewBatches):
            train = fit_data["x"]
        else:
            train = (fit_data["x"], fit_data["y"])
        sweep = train_heads(
            self.head,
            train,
            validation_data,
            self.grid,
            epochs=epochs,
            batch_size=fit_data.get("batch_size", 32),
            make_optimizer=lambda top: self._optimizer(
                make_schedule(self.schedule, top, steps, self.warmup)
            ),
            loss=self._loss(),
            shuffle=fit_data.get("shuffle", True),
            verbose=self.verbose,
        )
        if self.verbose:
            print(f"Head sweep ({len(self.grid)} heads, the kept one marked *):")
            print(sweep.table())
        return sweep

    def _optimizer(self, learning_rate):
        extra = {"use_ema": True} if self.ema else {}
        if isinstance(self.optimizer, str):
            return type(keras.optimizers.get(self.optimizer))(learning_rate=learning_rate, **extra)
        config = {**self.optimizer.get_config(), **extra}
        config["learning_rate"] = learning_rate
        config.pop("name", None)
        return type(self.optimizer)(**config)

    def _loss(self):
        loss = self.head.default_loss()
        if not self.label_smoothing:
            return loss
        if self.head.task == "binary":
            return keras.losses.BinaryCrossentropy(
                from_logits=self.head.logits, label_smoothing=self.label_smoothing
            )
        if self.head.sparse_labels:
            return SparseCategoricalCrossentropy(
                label_smoothing=self.label_smoothing, from_logits=self.head.logits
            )
        return keras.losses.CategoricalCrossentropy(
            from_logits=self.head.logits, label_smoothing=self.label_smoothing
        )

    def _evaluate(self, validation, label):
        return self._evaluate_arguments(self.model, validation.evaluate_arguments(), label)

    def _evaluate_arguments(self, model, arguments, label):
        results = model.evaluate(**arguments, verbose=0, return_dict=True)
        results = {key: float(value) for key, value in results.items()}
        self._report(results, label)
        return results

    def _report(self, results, label):
        if self.verbose:
            shown = ", ".join(f"{key} {value:.4f}" for key, value in results.items())
            print(f"{label}: {shown}")


class _Recorder(keras.callbacks.Callback):
    """Keeps the merged history, early stopping and the checkpoints of one phase."""

    def __init__(self, run, state, checkpoints, phase_start, trainer):
        super().__init__()
        self.run = run
        self.trainer = trainer  # the full model, or the head model on cached features
        self.state = state
        self.checkpoints = checkpoints
        self.phase_start = phase_start
        self.stopped = False
        early = state.get("early") or {}
        self.best = early.get("best", math.inf)
        self.wait = early.get("wait", 0)
        self.best_weights = None
        self.best_path = early.get("best_path")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        history = self.state["history"]
        for key, value in logs.items():
            history.setdefault(key, []).append(float(value))
        self.state["epochs_done"] = epoch + 1
        if self.run.early_stopping is not None:
            self._early_stop(logs)
        if self.checkpoints is not None:
            self.checkpoints.write(self.run.model, self.state, optimizer_of=self.trainer)

    def _early_stop(self, logs):
        monitor = "val_loss" if "val_loss" in logs else "loss"
        value = float(logs.get(monitor, math.inf))
        if value < self.best:
            self.best, self.wait = value, 0
            self.best_weights = [
                np.array(keras.ops.convert_to_numpy(w)) for w in self.model.weights
            ]
        else:
            self.wait += 1
            if self.wait >= self.run.early_stopping:
                self.model.stop_training = True
                self.stopped = True
        self.state["early"] = {"best": self.best, "wait": self.wait}

    def finish(self):
        if self.stopped and self.best_weights is not None:
            for variable, value in zip(self.model.weights, self.best_weights, strict=True):
                variable.assign(value)


# --- data ----------------------------------------------------------------------------


class _Data:
    """One data argument: how `fit` and `evaluate` take it, its steps, its labels checked."""

    def __init__(self, data, arg, batch_size, head):
        self.arg = arg
        check_positive_int(batch_size, "batch_size")
        self.batch_size = batch_size
        self.x = self.y = None
        self.dataset = None
        if isinstance(data, (tuple, list)) and len(data) == 2 and not _is_dataset(data):
            x, y = data
            x = np.asarray(x) if not isinstance(x, np.ndarray) else x
            y = np.asarray(y) if not isinstance(y, np.ndarray) else y
            if len(x) == 0:
                raise ValueError(f"`{arg}` holds no images. Received: {arg} with 0 samples")
            if len(x) != len(y):
                raise ValueError(
                    f"`{arg}` has {len(x)} images but {len(y)} labels. "
                    f"Received: {arg}=(x of {len(x)}, y of {len(y)})"
                )
            self.x, self.y = x, y
            self.steps = math.ceil(len(x) / batch_size)
            _check_labels(y, head, arg)
        elif _is_dataset(data):
            self.dataset = data
            self.steps = _steps(data, arg)
            self.batch_size = getattr(data, "batch_size", None) or batch_size
            labels = getattr(data, "labels", None)
            if isinstance(data, keras.utils.PyDataset) and labels is not None:
                _check_labels(np.asarray(labels), head, arg)
        else:
            raise TypeError(
                f"`{arg}` must be (x, y) arrays, a keras.utils.PyDataset (kerastl.data), a "
                f"tf.data.Dataset or a torch DataLoader. Received: {arg}={data!r}"
            )

    def check_shards(self, shards):
        """Refuses batches that a distribution cannot split evenly over its `shards` devices.

        JAX (`keras.distribution`) splits every batch; TensorFlow (`tf.distribute`)
        takes uneven batches, except the first of each `fit` / `evaluate`, which
        Keras reduces across replicas to build the model.
        """
        count = len(self.x) if self.x is not None else None
        if isinstance(self.dataset, ImageBatches):
            count = len(self.dataset.images)
        if shards == 1 or count is None:
            return
        sizes = {min(self.batch_size, count)}
        if keras.config.backend() != "tensorflow":
            sizes.add(count % self.batch_size or self.batch_size)
        uneven = sorted(size for size in sizes if size % shards)
        if uneven:
            raise ValueError(
                f"`{self.arg}` gives a batch of {uneven[0]} image(s), which the active "
                f"distribution cannot split evenly over its {shards} devices. Use a batch "
                f"size and a number of images that are multiples of {shards}. Received: "
                f"batch_size={self.batch_size}, {self.arg} of {count} images"
            )

    @property
    def keeps_order(self):
        """Whether the batches come in one fixed order (kerastl batches without shuffle)."""
        return isinstance(self.dataset, ImageBatches) and not self.dataset.shuffle

    @property
    def mixes(self):
        """Whether batches mix images and labels at random (MixUp / CutMix)."""
        return getattr(self.dataset, "mix", None) is not None

    def cache_source(self):
        return self.dataset if self.dataset is not None else (self.x, self.y)

    def fit_arguments(self):
        if isinstance(self.dataset, ImageBatches):
            # kerastl batches keep their own order (shuffled by their seed, or not):
            # Keras would reshuffle the batch order from the global RNG, so a resumed
            # run could not see the batches an uninterrupted one would.
            return {"x": self.dataset, "shuffle": False}
        if self.dataset is not None:
            return {"x": self.dataset}
        return {"x": self.x, "y": self.y, "batch_size": self.batch_size}

    def evaluate_arguments(self):
        arguments = self.fit_arguments()
        arguments.pop("shuffle", None)
        return arguments

    def as_validation(self):
        return self.dataset if self.dataset is not None else (self.x, self.y)


def _is_dataset(data):
    if isinstance(data, keras.utils.PyDataset):
        return True
    module = type(data).__module__
    return module.startswith(("tensorflow", "torch"))


def _steps(data, arg):
    if isinstance(data, keras.utils.PyDataset):
        steps = len(data)
    elif hasattr(data, "cardinality"):
        steps = int(data.cardinality())
        if steps < 0:  # unknown or infinite: count one pass
            steps = sum(1 for _ in data) if steps != -1 else -1
    else:
        steps = len(data)
    if steps == -1:
        raise ValueError(
            f"`{arg}` is an infinite dataset; fine_tune counts epochs in passes over the "
            f"data. Received: {arg}={data!r}"
        )
    if steps == 0:
        raise ValueError(f"`{arg}` holds no batches. Received: {arg}={data!r}")
    return steps


def _check_labels(labels, head, arg):
    """Refuses labels the head cannot have (a class index beyond its outputs)."""
    if head.task == "multiclass" and head.sparse_labels:
        values = labels.reshape(-1)
        if values.size and not np.issubdtype(values.dtype, np.number):
            raise ValueError(
                f"`{arg}` labels must be class indices (numbers); the head has "
                f"{head.num_outputs} classes. Received: {arg} labels of dtype {values.dtype}"
            )
        outside = (values < 0) | (values >= head.num_outputs) | (values != np.round(values))
        if values.size and np.any(outside):
            bad = sorted(set(values[outside].tolist()))[:5]
            raise ValueError(
                f"`{arg}` has labels the head does not have: it has {head.num_outputs} "
                f"classes (0..{head.num_outputs - 1}); found {bad}. Received: {arg} labels"
            )
    elif head.task in ("multiclass", "multilabel") and labels.ndim == 2:
        if labels.shape[-1] != head.num_outputs:
            raise ValueError(
                f"`{arg}` has labels of {labels.shape[-1]} classes; the head has "
                f"{head.num_outputs}. Received: {arg} labels of shape {labels.shape}"
            )
    elif head.task == "binary":
        values = labels.reshape(-1)
        if values.size and np.any((values < 0) | (values > 1)):
            raise ValueError(
                f"`{arg}` has binary labels outside [0, 1]. Received: {arg} labels "
                f"{sorted(set(values.tolist()))[:5]}"
            )


def _plan_settings(plan):
    settings = {}
    for key in ("epochs", "head_epochs", "lr", "lr_mult", "unfreeze", "bn"):
        if not hasattr(plan, key):
            raise TypeError(
                f"`plan` must be a kerastl.recommend(...) plan (it has no `{key}`). "
                f"Received: plan={plan!r}"
            )
        settings[key] = getattr(plan, key)
    return settings


def _difference(saved, wanted):
    if not isinstance(saved, dict):
        return "unreadable settings"
    keys = [k for k in wanted if saved.get(k) != wanted[k]]
    return ", ".join(f"{k}: {saved.get(k)!r} there, {wanted[k]!r} here" for k in keys[:3])
