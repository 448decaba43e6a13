from typing import Any

import keras
from keras import ops

from kerastl._checks import is_finite_number

SCALED_TASKS = ("binary", "multiclass")
SCALED_INPUTS = ("probabilities", "logits")
EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1 - EPSILON] before their log


@keras.saving.register_keras_serializable(package="kerastl")
class TemperatureScaling(keras.layers.Layer):
    """Divides a classifier's logits by a temperature: calibrated probabilities, same argmax.

    Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural
    Networks"): one scalar `T` fitted on held-out data; `T > 1` softens an
    over-confident model. Put after a model's output by `kerastl.calibrate`,
    so a saved model, `kerastl.Predictor` and exports give calibrated
    probabilities. It takes what the model outputs and gives the same kind:
    probabilities in, probabilities out (their log is the logit, up to a
    constant softmax ignores); logits in, logits out. The temperature is in
    the config, not a weight: nothing trains it.

    Args:
        temperature: the positive scalar `T`.
        task: `"multiclass"` (softmax rows) or `"binary"` (one sigmoid output).
        inputs: `"probabilities"` or `"logits"`: what the layer receives.

    Example:

    ```python
    layer = kerastl.layers.TemperatureScaling(2.0)
    p = np.array([[0.9, 0.09, 0.01]], "float32")
    print(np.round(keras.ops.convert_to_numpy(layer(p)), 3))  # [[0.703 0.222 0.074]]
    ```
    """

    def __init__(
        self,
        temperature: float = 1.0,
        task: str = "multiclass",
        inputs: str = "probabilities",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not is_finite_number(temperature) or temperature <= 0:
            raise ValueError(
                f"`temperature` must be a positive, finite number. Received: "
                f"temperature={temperature!r}"
            )
        if task not in SCALED_TASKS:
            raise ValueError(f"`task` must be one of {SCALED_TASKS}. Received: task={task!r}")
        if inputs not in SCALED_INPUTS:
            raise ValueError(
                f"`inputs` must be one of {SCALED_INPUTS}. Received: inputs={inputs!r}"
            )
        self.temperature = float(temperature)
        self.task = task
        self.inputs = inputs

    def call(self, x):
        x = ops.cast(x, "float32")
        if self.inputs == "logits":
            return x / self.temperature
        p = ops.clip(x, EPSILON, 1.0 - EPSILON)
        if self.task == "binary":
            return ops.sigmoid((ops.log(p) - ops.log(1.0 - p)) / self.temperature)
        return ops.softmax(ops.log(p) / self.temperature, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "task": self.task, "inputs": self.inputs})
        return config
