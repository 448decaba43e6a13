from typing import Any

import keras
from keras import ops

from kerastl.layers.gem_pooling_2d import GeMPooling2D

GLOBAL_POOLING_MODES = ("avg", "max", "avgmax", "gem")


@keras.saving.register_keras_serializable(package="kerastl")
class GlobalPooling2D(keras.layers.Layer):
    """Global pooling of a feature map to one vector per image, by name.

    The one pooling layer of kerastl: the `FeatureExtractor` (`pooling=`) and
    the heads (`kerastl.heads`, `pooling=`) both use it.

    Args:
        mode: `"avg"` (mean over height and width), `"max"`, `"avgmax"`
            (both, concatenated: twice the channels) or `"gem"` (generalised
            mean with a learnable power, `GeMPooling2D`).

    Call arguments:
        inputs: `(batch, height, width, channels)` feature map.

    Example:

    ```python
    maps = np.random.rand(2, 5, 5, 8).astype("float32")
    print(tuple(kerastl.layers.GlobalPooling2D("avgmax")(maps).shape))  # (2, 16)
    ```
    """

    def __init__(self, mode: str = "avg", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in GLOBAL_POOLING_MODES:
            raise ValueError(
                f"`mode` must be one of {GLOBAL_POOLING_MODES}. Received: mode={mode!r}"
            )
        self.mode = mode
        self.gem = GeMPooling2D(name="gem", dtype=self.dtype_policy) if mode == "gem" else None

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "GlobalPooling2D expects a 4D input (batch, height, width, channels). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        if self.gem is not None:
            self.gem.build(input_shape)

    def call(self, inputs):
        if self.mode == "avg":
            return ops.mean(inputs, axis=(1, 2))
        if self.mode == "max":
            return ops.max(inputs, axis=(1, 2))
        if self.mode == "avgmax":
            return ops.concatenate(
                [ops.mean(inputs, axis=(1, 2)), ops.max(inputs, axis=(1, 2))], axis=-1
            )
        return self.gem(inputs)

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        if self.mode == "avgmax" and channels is not None:
            channels *= 2
        return (input_shape[0], channels)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config
