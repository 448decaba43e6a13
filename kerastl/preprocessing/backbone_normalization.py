import keras
from keras import ops

from kerastl.backbones.recipes import (
    CAFFE_MEAN_BGR,
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    PREPROCESSING_MODES,
)


@keras.saving.register_keras_serializable(package="kerastl")
class BackboneNormalization(keras.layers.Layer):
    """Maps raw 0..255 RGB images to the input range a backbone's weights expect.

    The same arithmetic as `keras.applications.<family>.preprocess_input`, as a
    layer that lives in the model, so nobody has to remember it.

    Args:
        mode: `"caffe"` (RGB -> BGR, ImageNet mean subtracted), `"tf"` (scaled
            to [-1, 1]), `"torch"` (scaled to [0, 1], then ImageNet mean/std)
            or `"none"` (cast only: the backbone rescales inside).

    Call arguments:
        inputs: `(batch, height, width, 3)` RGB images in 0..255, any numeric
            dtype; `"tf"` and `"none"` also take 1-channel (grayscale) images.

    Example:

    ```python
    images = np.full((2, 8, 8, 3), 255, "uint8")
    x = kerastl.preprocessing.BackboneNormalization("tf")(images)
    print(tuple(x.shape), float(keras.ops.max(x)))  # (2, 8, 8, 3) 1.0
    ```
    """

    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"`mode` must be one of {PREPROCESSING_MODES}. Received: mode={mode!r}"
            )
        self.mode = mode

    def build(self, input_shape):
        channels = tuple(input_shape)[-1]
        if self.mode in ("caffe", "torch") and channels not in (3, None):
            raise ValueError(
                f"The {self.mode!r} recipe normalises the three RGB channels; these images "
                f"have {channels}: give grayscale images mode 'tf' or 'none'. "
                f"Received: input_shape={tuple(input_shape)}"
            )

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        # Same operations in the same order as keras.applications.imagenet_utils.
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            x = x / 255.0
            mean = ops.convert_to_tensor(IMAGENET_MEAN_RGB, x.dtype)
            std = ops.convert_to_tensor(IMAGENET_STD_RGB, x.dtype)
            return (x - mean) / std
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)  # RGB -> BGR
            return x - ops.convert_to_tensor(CAFFE_MEAN_BGR, x.dtype)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config
