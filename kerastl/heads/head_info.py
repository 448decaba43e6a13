import keras

from kerastl._keras_private import flatten_layers
from kerastl.heads.task_head import TaskHead


def find_head(model):
    """The `TaskHead` of a model (the layer named `"head"` first), or None."""
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"`model` must be a keras.Model or layer. Received: model={model!r}")
    heads = [
        layer for layer in flatten_layers(model, include_self=True) if isinstance(layer, TaskHead)
    ]
    named = [layer for layer in heads if layer.name == "head"]
    return (named or heads or [None])[0]


def head_info(model):
    """What a model's head says about its task, as a plain dict.

    Keys: `task` (`"binary"`, `"multiclass"`, `"multilabel"` or
    `"regression"`), `num_outputs`, `from_logits`, `output_activation`
    (`"sigmoid"`, `"softmax"` or None), `sparse_labels` (multiclass only, else
    None) and `class_names` (a list or None). Everything comes from the head's
    config, so it is the same after save and load.

    Example:

    ```python
    model = keras.Sequential([keras.Input((8,)), kerastl.heads.multiclass(3)])
    print(kerastl.heads.head_info(model)["num_outputs"])  # 3
    ```
    """
    if isinstance(model, TaskHead):
        return model.info()
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: model={model!r}")
    head = find_head(model)
    if head is None:
        raise ValueError(
            f"Model {model.name!r} has no kerastl head (TaskHead); build it with "
            f"kerastl.build_model or kerastl.heads. Received: model={model.name!r}"
        )
    return head.info()
