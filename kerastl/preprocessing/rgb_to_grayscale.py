import keras
from keras import ops

from kerastl.preprocessing.grayscale_to_rgb import check_images, check_shape

# ITU-R BT.601 luma, as OpenCV's `COLOR_RGB2GRAY`, PIL's "L" mode and
# `tf.image.rgb_to_grayscale` (rounded there to 0.2989) compute it.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@keras.saving.register_keras_serializable(package="kerastl")
class RGBToGrayscale(keras.layers.Layer):
    """A grayscale backbone's image entrance: checks the batch, casts to float, gives 1 channel.

    RGB images become their luma, `0.299 R + 0.587 G + 0.114 B` (ITU-R
    BT.601, what OpenCV's `COLOR_RGB2GRAY` and PIL's `"L"` mode compute);
    grayscale images pass unchanged. Values keep their 0..255 range; NaN or
    infinite values are not checked (a traced model cannot raise on data) and
    pass through. `kerastl.preprocessing.pipeline` puts it first for a backbone
    that takes 1-channel images, as it puts `GrayscaleToRGB` first for one
    that takes RGB.

    Call arguments:
        inputs: `(batch, height, width, 1 or 3)` images of any numeric dtype,
            channels in RGB order.

    Example:

    ```python
    red_green_blue = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255]]]], "uint8")
    gray = kerastl.preprocessing.RGBToGrayscale()(red_green_blue)
    print(tuple(gray.shape), np.round(keras.ops.convert_to_numpy(gray).ravel(), 1))
    # (1, 1, 3, 1) [ 76.2 149.7  29.1]
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
            return x
        if x.shape[-1] is None:
            # A traced function that saw both kinds of image (TensorFlow relaxes the
            # shapes it retraces for): 1 or 3 channels; gray broadcast to RGB has
            # itself as its luma (the weights sum to 1).
            x = ops.broadcast_to(x, (*ops.shape(x)[:-1], 3))
        weights = ops.convert_to_tensor(LUMA_WEIGHTS, dtype=x.dtype)
        return ops.sum(x * weights, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], 1)
