from typing import Any

import keras
from keras import ops

from kerastl._checks import check_bool, is_finite_number


@keras.saving.register_keras_serializable(package="kerastl")
class GeMPooling2D(keras.layers.Layer):
    """Generalised-mean pooling over height and width, with a learnable power `p`.

    `p=1` is average pooling and `p -> inf` approaches max pooling; learning `p`
    lets the head choose (Radenović et al., 2018).

    Args:
        p: initial power, > 0.
        eps: floor applied to inputs before the power (keeps the gradient finite).
        trainable_p: whether `p` is learned.

    Call arguments:
        inputs: `(batch, height, width, channels)` feature map.

    Example:

    ```python
    x = np.random.rand(2, 5, 5, 8).astype("float32")
    print(tuple(kerastl.layers.GeMPooling2D()(x).shape))  # (2, 8)
    ```
    """

    def __init__(
        self, p: float = 3.0, eps: float = 1e-6, trainable_p: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        for arg, value in (("p", p), ("eps", eps)):
            if not is_finite_number(value) or value <= 0:
                raise ValueError(
                    f"`{arg}` must be a positive, finite number. Received: {arg}={value!r}"
                )
        check_bool(trainable_p, "trainable_p")
        self.p = float(p)
        self.eps = float(eps)
        self.trainable_p = bool(trainable_p)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"GeMPooling2D expects a 4D input (batch, height, width, channels). "
                f"Received: input_shape={input_shape}"
            )
        self.power = self.add_weight(
            name="p",
            shape=(),
            initializer=keras.initializers.Constant(self.p),
            trainable=self.trainable_p,
        )

    def call(self, inputs):
        x = ops.maximum(inputs, self.eps)
        p = ops.cast(self.power, x.dtype)
        x = ops.mean(ops.power(x, p), axis=(1, 2))
        return ops.power(x, 1.0 / p)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"p": self.p, "eps": self.eps, "trainable_p": self.trainable_p})
        return config
