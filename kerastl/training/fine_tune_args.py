"""`fine_tune`'s arguments: a plan and the defaults filled in, every argument checked.

`resolve` turns one call's arguments into one `Settings`: what the call
passed wins, then the `plan`'s settings, then the defaults. It refuses, before
any tensor is touched, every value `fine_tune` cannot use and every argument
that would be ignored (a phase-2 argument with `epochs=0`, `layer_decay` with
`lr_mult`): nothing the user passes is dropped silently.
"""

import dataclasses
import json
import numbers

import keras

from kerastl._checks import check_bool, check_positive_int, is_finite_number
from kerastl._keras_private import flatten_layers
from kerastl.freeze.lora import LoRA
from kerastl.freeze.policies import FreezePolicy, check_policy, get_policy, validate_bn
from kerastl.heads.task_head import TaskHead
from kerastl.layers.feature_extractor import find_extractor
from kerastl.losses import SparseCategoricalCrossentropy
from kerastl.optimizers.per_layer_lr import PerLayerLR
from kerastl.optimizers.schedules import SCHEDULES, make_schedule
from kerastl.training.feature_cache import check_cache_dtype
from kerastl.training.head_sweep import sweep_grid

# The default of an argument a plan may set: "not passed", told apart from any value.
UNSET = object()
# Arguments a plan may set: their defaults, used when neither the call nor a plan sets them.
DEFAULTS = {"head_epochs": "auto", "lr": 1e-3, "lr_mult": 100.0, "unfreeze": "none", "bn": None}
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
# Arguments that only shape phase 2 (fine-tuning the backbone).
PHASE_TWO = ("unfreeze", "bn", "lr_mult", "layer_decay", "remat")
# What `remat=` takes by name: keras.RematScope's modes that need no more settings.
REMAT_MODES = ("full", "larger_than", "activations")
_PLANNED = ("epochs", "head_epochs", "lr", "lr_mult", "unfreeze", "bn")


@dataclasses.dataclass
class Settings:
    """One `fine_tune` call's arguments, resolved and checked."""

    model: keras.Model
    extractor: object
    head: TaskHead
    epochs: int
    head_epochs: int | str
    lr: float
    lr_mult: float
    layer_decay: float | None
    unfreeze: FreezePolicy
    bn: str
    lora: LoRA | None
    optimizer: object
    schedule: str
    warmup: float
    label_smoothing: float
    ema: bool
    early_stopping: int | None
    batch_size: int
    evaluate_first: bool
    callbacks: list
    verbose: int
    cache: object
    cache_dir: object
    cache_dtype: str
    views: int | None
    head_sweep: object
    grid: list | None
    remat: object = None

    @property
    def converge(self):
        """Whether the head phase trains to convergence (`head_epochs="auto"`)."""
        return self.head_epochs == "auto"

    @property
    def head_count(self):
        """The head phase's epochs in the history: a converged head phase counts as one."""
        return 1 if self.converge else self.head_epochs

    def make_optimizer(self, peak, steps):
        """A fresh optimizer of the asked kind, its rate on the schedule up to `peak`.

        `steps=None`: a phase of unknown length (a head trained until its loss stops
        improving), at the constant rate `peak`.
        """
        schedule = "constant" if steps is None else self.schedule
        learning_rate = make_schedule(schedule, peak, steps, self.warmup)
        extra = {"use_ema": True} if self.ema else {}
        if isinstance(self.optimizer, str):
            return type(keras.optimizers.get(self.optimizer))(learning_rate=learning_rate, **extra)
        config = {**self.optimizer.get_config(), **extra}
        config["learning_rate"] = learning_rate
        config.pop("name", None)
        return type(self.optimizer)(**config)

    def loss(self):
        """The head's loss, with `label_smoothing` where asked."""
        head, smoothing = self.head, self.label_smoothing
        if not smoothing:
            return head.default_loss()
        if head.task == "binary":
            return keras.losses.BinaryCrossentropy(
                from_logits=head.logits, label_smoothing=smoothing
            )
        if head.sparse_labels:
            return SparseCategoricalCrossentropy(label_smoothing=smoothing, from_logits=head.logits)
        return keras.losses.CategoricalCrossentropy(
            from_logits=head.logits, label_smoothing=smoothing
        )

    def record(self):
        """The settings a checkpoint must agree with to be resumed by this call (JSON)."""
        return {
            "epochs": self.epochs,
            "head_epochs": self.head_epochs,
            "lr": self.lr,
            "lr_mult": self.lr_mult,
            "layer_decay": self.layer_decay,
            "unfreeze": keras.saving.serialize_keras_object(self.lora or self.unfreeze),
            "bn": self.bn,
            "optimizer": _optimizer_record(self.optimizer),
            "schedule": self.schedule,
            "warmup": self.warmup,
            "label_smoothing": self.label_smoothing,
            "ema": self.ema,
            "early_stopping": self.early_stopping,
            "views": self.views,
            "cache_dtype": self.cache_dtype,
            "head_sweep": None if self.grid is None else [list(pair) for pair in self.grid],
        }


def resolve(model, validation, *, plan, epochs, **args):
    """The `Settings` of one `fine_tune` call (`validation`: only whether it is given).

    `args` holds every other argument of `fine_tune` as passed, `UNSET` where
    a plan or a default decides.
    """
    planned = _plan_settings(plan) if plan is not None else {}
    given = {key for key, value in args.items() if value is not UNSET}
    for arg in ("layer_decay", "remat"):
        if args[arg] is None:
            given.discard(arg)
    if epochs is None:
        if "epochs" not in planned:
            raise TypeError(
                "`epochs` (the epochs of phase 2) is required unless a `plan` gives it. "
                "Received: epochs=None"
            )
        epochs = planned["epochs"]
    for key, default in DEFAULTS.items():
        if args[key] is UNSET:
            args[key] = planned.get(key, default)
    if isinstance(args["unfreeze"], LoRA) and "lr_mult" not in given and "lr_mult" not in planned:
        # Adapters start at zero: each needs the full rate, not a block-wise lower one.
        args["lr_mult"] = 1.0
    args["epochs"] = epochs
    extractor, head = _model_parts(model)
    _check_epochs_and_rates(args)
    _refuse_ignored(args, given, epochs_planned="epochs" in planned and "epochs" not in given)
    lora, unfreeze, bn = _check_unfreeze(args, extractor)
    grid = _check_cache(args, validation)
    _check_training(args, head)
    remat = _check_remat(args["remat"])
    return Settings(
        **{
            **args,
            "model": model,
            "extractor": extractor,
            "head": head,
            "lr": float(args["lr"]),
            "lr_mult": float(args["lr_mult"]),
            "unfreeze": unfreeze,
            "bn": bn,
            "lora": lora,
            "warmup": float(args["warmup"]),
            "label_smoothing": float(args["label_smoothing"]),
            "callbacks": list(args["callbacks"] or []),
            "grid": grid,
            "remat": remat,
        }
    )


def _check_remat(remat):
    """`remat` as a `keras.RematScope`, or `None`."""
    if remat is None or isinstance(remat, keras.RematScope):
        return remat
    if isinstance(remat, str) and remat in REMAT_MODES:
        return keras.RematScope(mode=remat)
    raise ValueError(
        f"`remat` must be None, one of {REMAT_MODES} or a keras.RematScope (e.g. "
        "keras.RematScope(mode='larger_than', output_size_threshold=...)). "
        f"Received: remat={remat!r}"
    )


def _plan_settings(plan):
    settings = {}
    for key in _PLANNED:
        if not hasattr(plan, key):
            raise TypeError(
                f"`plan` must be a kerastl.recommend(...) plan (it has no `{key}`). "
                f"Received: plan={plan!r}"
            )
        settings[key] = getattr(plan, key)
    return settings


def _model_parts(model):
    """The model's `FeatureExtractor` and its one `TaskHead`."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model. Received: model={model!r}")
    extractor = find_extractor(model)
    if extractor is None:
        raise ValueError(
            "`model` holds no kerastl.FeatureExtractor: fine_tune freezes and opens the "
            "backbone through it (build the model with kerastl.build_model). "
            f"Received: model={model.name!r}"
        )
    heads = [layer for layer in flatten_layers(model) if isinstance(layer, TaskHead)]
    if len(heads) != 1:
        raise ValueError(
            f"`model` must hold one kerastl head (kerastl.heads); it holds {len(heads)}. "
            f"Received: model={model.name!r}"
        )
    return extractor, heads[0]


def _check_epochs_and_rates(args):
    for arg in ("epochs", "head_epochs"):
        value = args[arg]
        if arg == "head_epochs" and isinstance(value, str) and value == "auto":
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            also = ", or 'auto' (the head trains until its loss stops improving)"
            raise ValueError(
                f"`{arg}` must be an int >= 0{also if arg == 'head_epochs' else ''}. "
                f"Received: {arg}={value!r}"
            )
    if args["epochs"] == 0 and args["head_epochs"] == 0:
        raise ValueError(
            "Nothing to train: `epochs` and `head_epochs` are both 0. "
            f"Received: epochs={args['epochs']}, head_epochs={args['head_epochs']}"
        )
    for arg in ("lr", "lr_mult"):
        if not is_finite_number(args[arg]) or args[arg] <= 0:
            raise ValueError(f"`{arg}` must be a positive number. Received: {arg}={args[arg]!r}")
    if args["lr_mult"] < 1:
        raise ValueError(
            "`lr_mult` is the head's rate over the first block's: at least 1. "
            f"Received: lr_mult={args['lr_mult']!r}"
        )
    decay = args["layer_decay"]
    if decay is not None and (not is_finite_number(decay) or not 0 < decay <= 1):
        raise ValueError(f"`layer_decay` must be in (0, 1]. Received: layer_decay={decay!r}")


def _refuse_ignored(args, given, epochs_planned):
    """Refuses an argument the call passed that the run would not use."""
    if "layer_decay" in given and "lr_mult" in given:
        raise ValueError(
            "`layer_decay` and `lr_mult` both set how the phase-2 rates fall over the "
            "backbone's blocks, and only one can apply: pass one of them. Received: "
            f"layer_decay={args['layer_decay']!r}, lr_mult={args['lr_mult']!r}"
        )
    if args["epochs"] == 0:
        source = " (the plan's)" if epochs_planned else ""
        for arg in PHASE_TWO:
            if arg in given:
                raise ValueError(
                    f"`{arg}` applies to phase 2 (the backbone's fine-tuning), and `epochs` "
                    f"is 0{source}: there is no phase 2. Pass epochs >= 1, or leave `{arg}` "
                    f"out. Received: {arg}={args[arg]!r}, epochs=0"
                )


def _check_unfreeze(args, extractor):
    """`(lora, unfreeze, bn)`: a LoRA policy apart, the freeze policy of phase 2, its BN mode."""
    lora = None
    policy = args["unfreeze"]
    if isinstance(policy, LoRA):
        # Phase 2 adds adapters (checked now: a policy that adapts nothing raises);
        # nothing else in the backbone opens.
        lora, policy = policy, "all"
        if extractor.lora != lora:
            if extractor.lora is not None:
                raise ValueError(
                    f"The model's extractor already has other LoRA adapters "
                    f"({extractor.lora!r}): merge or remove them first "
                    f"(`kerastl.layers.merge_lora`). Received: unfreeze={lora!r}"
                )
            try:
                lora.targets(extractor.backbone, extractor.blocks)
            except ValueError as e:
                raise ValueError(
                    f"{str(e).rsplit(' Received:', 1)[0]} Received: unfreeze={lora!r}"
                ) from None
    unfreeze = get_policy(policy)
    phase_two = args["epochs"] > 0 and lora is None
    if phase_two and not unfreeze.asks_for_training():
        raise ValueError(
            f"`unfreeze` opens nothing ({unfreeze!r}), so phase 2 would train the head "
            f"again; train it with head_epochs instead. Received: unfreeze={unfreeze!r}"
        )
    bn = extractor.bn if args["bn"] is None else validate_bn(args["bn"])
    if phase_two:
        # Checked now, not after the head phase has run.
        try:
            check_policy(extractor.backbone, unfreeze, extractor.blocks, bn)
        except ValueError as e:
            raise ValueError(
                f"{str(e).rsplit(' Received:', 1)[0]} Received: unfreeze={unfreeze!r}"
            ) from None
    return lora, unfreeze, bn


def _check_training(args, head):
    """The optimizer, its schedule, the loss and the switches of `fit`."""
    optimizer = args["optimizer"]
    if not (
        (isinstance(optimizer, str) and optimizer in OPTIMIZERS)
        or (
            isinstance(optimizer, keras.optimizers.Optimizer)
            and not isinstance(optimizer, PerLayerLR)
        )
    ):
        raise ValueError(
            f"`optimizer` must be one of {OPTIMIZERS} or a Keras optimizer (fine_tune "
            f"adds the per-layer rates itself). Received: optimizer={optimizer!r}"
        )
    if not isinstance(args["schedule"], str) or args["schedule"] not in SCHEDULES:
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
    if smoothing and head.task not in ("multiclass", "binary"):
        raise ValueError(
            f"`label_smoothing` applies to classification heads; this head's task is "
            f"{head.task!r}. Received: label_smoothing={smoothing!r}"
        )
    check_bool(args["ema"], "ema")
    check_bool(args["evaluate_first"], "evaluate_first")
    if args["early_stopping"] is not None:
        check_positive_int(args["early_stopping"], "early_stopping")
    check_positive_int(args["batch_size"], "batch_size")
    callbacks = args["callbacks"]
    if callbacks is not None and (
        not isinstance(callbacks, (list, tuple))
        or not all(isinstance(c, keras.callbacks.Callback) for c in callbacks)
    ):
        raise TypeError(
            f"`callbacks` must be a list of Keras callbacks. Received: callbacks={callbacks!r}"
        )
    if args["verbose"] not in (0, 1, 2):
        raise ValueError(f"`verbose` must be 0, 1 or 2. Received: verbose={args['verbose']!r}")


def _check_cache(args, validation):
    """The cache's arguments; returns the `head_sweep` grid (or `None`)."""
    cache = args["cache"]
    if cache not in ("auto", True, False):
        raise ValueError(f"`cache` must be 'auto', True or False. Received: cache={cache!r}")
    args["cache_dtype"] = check_cache_dtype(args["cache_dtype"], "cache_dtype")
    if args["views"] is not None:
        check_positive_int(args["views"], "views")
    if args["head_sweep"] is False:
        args["head_sweep"] = None
    sweep = args["head_sweep"]
    grid = None if sweep is None else sweep_grid(sweep, float(args["lr"]))
    if grid is not None and args["head_epochs"] == 0:
        raise ValueError(
            "`head_sweep` trains heads in the head phase, and `head_epochs` is 0. "
            f"Received: head_sweep={sweep!r}, head_epochs=0"
        )
    if grid is not None and args["head_epochs"] == "auto":
        raise ValueError(
            "`head_sweep` trains each head of its grid for `head_epochs` epochs: pass "
            "head_epochs=N. (The default, 'auto', trains one head to convergence; a linear "
            "head then chooses its L2 penalty on `validation` itself.) "
            f"Received: head_sweep={sweep!r}, head_epochs='auto'"
        )
    if cache is False:
        asked = {
            "cache_dtype": None if args["cache_dtype"] == "float32" else args["cache_dtype"],
            "cache_dir": args["cache_dir"],
            "views": args["views"],
            "head_sweep": sweep,
        }
        for arg, value in asked.items():
            if value is not None:
                raise ValueError(
                    f"`{arg}` works on cached features, and `cache` is False. "
                    f"Received: {arg}={value!r}, cache=False"
                )
    if grid is not None and validation is None:
        raise ValueError(
            "`head_sweep` keeps the head that does best on `validation`, which is None. "
            f"Received: head_sweep={sweep!r}, validation=None"
        )
    return grid


def _optimizer_record(optimizer):
    """The optimizer's class and config (its rate aside, which fine_tune sets), as JSON."""
    instance = keras.optimizers.get(optimizer) if isinstance(optimizer, str) else optimizer
    config = dict(instance.get_config())
    for key in ("name", "learning_rate"):
        config.pop(key, None)
    cls = type(instance)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "config": json.loads(json.dumps(config, default=repr)),
    }
