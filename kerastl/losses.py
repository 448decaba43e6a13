"""Losses that Keras lacks for fine-tuning: label smoothing with integer labels."""

import keras
from keras import ops

from kerastl._checks import check_bool, is_finite_number


@keras.saving.register_keras_serializable(package="kerastl")
class SparseCategoricalCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy on integer labels, with label smoothing.

    `keras.losses.SparseCategoricalCrossentropy` has no `label_smoothing`;
    this one one-hot encodes the labels (as many classes as the prediction
    has) and applies `keras.losses.categorical_crossentropy` with it.

    Args:
        label_smoothing: in [0, 1): the true class gets `1 - label_smoothing`
            plus its share of `label_smoothing` spread over all classes.
        from_logits: whether predictions are logits.

    Example:

    ```python
    loss = kerastl.losses.SparseCategoricalCrossentropy(label_smoothing=0.1)
    print(round(float(loss(np.array([0]), np.array([[0.9, 0.05, 0.05]]))), 4))  # 0.2981
    ```
    """

    def __init__(
        self,
        label_smoothing=0.0,
        from_logits=False,
        reduction="sum_over_batch_size",
        name="sparse_categorical_crossentropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not is_finite_number(label_smoothing, 0.0) or label_smoothing >= 1:
            raise ValueError(
                "`label_smoothing` must be a number in [0, 1). "
                f"Received: label_smoothing={label_smoothing!r}"
            )
        self.label_smoothing = float(label_smoothing)
        self.from_logits = check_bool(from_logits, "from_logits")

    def call(self, y_true, y_pred):
        classes = ops.shape(y_pred)[-1]
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        one_hot = ops.one_hot(labels, classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot,
            y_pred,
            from_logits=self.from_logits,
            label_smoothing=self.label_smoothing,
        )

    def get_config(self):
        config = super().get_config()
        config.update(label_smoothing=self.label_smoothing, from_logits=self.from_logits)
        return config
