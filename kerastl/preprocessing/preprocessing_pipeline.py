import keras


@keras.saving.register_keras_serializable(package="kerastl")
class Pipeline(keras.layers.Pipeline):
    """`keras.layers.Pipeline` that works out its output shape without running its layers.

    Keras builds a `Pipeline` inside a model by running its layers on symbolic tensors.
    On torch that runs the augmentation's affine transforms (rotation, zoom, translation)
    on placeholder tensors index by index: a model with `augment="medium"` at 96x96 took
    about 15 s to build. Each layer of a kerastl pipeline knows its output shape, so this
    one asks them (`compute_output_shape`) and builds each with its input shape. A layer of
    your own without `compute_output_shape` is run on symbolic tensors, as Keras does.
    Outputs, config and saving are `keras.layers.Pipeline`'s.

    Example:

    ```python
    prep = kerastl.preprocessing.Pipeline(
        [kerastl.preprocessing.GrayscaleToRGB(), keras.layers.RandomRotation(0.1)]
    )
    inputs = keras.Input((32, 32, 1))
    print(prep(inputs).shape)  # (None, 32, 32, 3)
    ```
    """

    def build(self, input_shape):
        if input_shape is None:  # inputs Keras does not convert (NumPy): built as they run
            return
        shape = tuple(input_shape)
        for layer in self.layers:
            if not layer.built:
                layer.build(shape)
            try:
                shape = layer.compute_output_shape(shape)
            except NotImplementedError:
                return  # the rest build when the pipeline first runs on symbolic tensors

    def compute_output_spec(self, inputs, training=True, mask=None):
        try:
            shape = tuple(inputs.shape)
            for layer in self.layers:
                shape = layer.compute_output_shape(shape)
        except NotImplementedError:
            return super().compute_output_spec(inputs, training=training, mask=mask)
        dtype = self.layers[-1].compute_dtype if self.layers else inputs.dtype
        return keras.KerasTensor(shape, dtype=dtype)
