import contextlib

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerastl")
class GrayscaleToRGB(keras.layers.Layer):
    """The model's image entrance: checks the batch, casts to float, gives 3 channels.

    One-channel (grayscale) images are repeated to RGB; RGB images pass
    unchanged. Values keep their 0..255 range; NaN or infinite values are not
    checked (a traced model cannot raise on data) and pass through.

    Call arguments:
        inputs: `(batch, height, width, 1 or 3)` images of any numeric dtype.

    Example:

    ```python
    digits = np.zeros((2, 8, 8, 1), "uint8")
    print(tuple(kerastl.preprocessing.GrayscaleToRGB()(digits).shape))  # (2, 8, 8, 3)
    ```
    """

    def build(self, input_shape):
        check_shape(input_shape)

    def __call__(self, inputs, *args, **kwargs):
        check_images(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if x.shape[-1] == 1:
            x = ops.repeat(x, 3, axis=-1)
        elif x.shape[-1] is None:
            # A traced function that saw both kinds of image (TensorFlow relaxes the
            # shapes it retraces for): 1 or 3 channels, broadcast to 3 either way.
            x = ops.broadcast_to(x, (*ops.shape(x)[:-1], 3))
        return x

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], 3)


def check_images(inputs):
    """Refuses a batch that is not numeric, rank-4 images with 1 or 3 channels."""
    # Checked on every call, before Keras converts arrays to tensors: a string
    # array would fail inside the conversion with a message that names nothing,
    # and a layer built once for 1 channel would let 2 through.
    dtype = getattr(inputs, "dtype", None)
    with contextlib.suppress(ValueError):  # not a Keras dtype: shown as it is
        dtype = keras.backend.standardize_dtype(dtype)
    if dtype == "bool" or not any(k in str(dtype) for k in ("int", "float")):
        raise ValueError(f"Images must have a numeric dtype. Received: dtype={dtype}")
    if getattr(inputs, "shape", None) is not None:
        check_shape(tuple(inputs.shape))


def check_shape(input_shape):
    # Only what is known is checked: a traced tensor may have an unknown channel axis.
    if len(input_shape) != 4:
        raise ValueError(
            "Images must be a batch (batch, height, width, channels); add the batch "
            "axis to a single image (kerastl.data.prepare_image does). "
            f"Received: input_shape={tuple(input_shape)}"
        )
    if input_shape[-1] not in (1, 3, None):
        raise ValueError(
            "Images must have 1 (grayscale) or 3 (RGB) channels. "
            f"Received: input_shape={tuple(input_shape)}"
        )
