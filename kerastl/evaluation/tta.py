"""Test-time augmentation: the model sees several views of each image; probabilities average.

Views are taken of the batch as the model takes it (raw pixels for a
`kerastl.build_model` model), so the model's own preprocessing runs on each.
"""

import keras
import numpy as np

from kerastl.evaluation.metrics import probabilities_of

TTA_MODES = ("flip", "crops", "flip+crops")
CROP_FRACTION = 0.875  # each crop keeps 87.5% of the height and width (the 224-of-256 ratio)


def check_tta(tta):
    """None or one of `TTA_MODES`."""
    if tta is not None and (not isinstance(tta, str) or tta not in TTA_MODES):
        raise ValueError(
            f"`tta` must be None (no test-time augmentation) or one of {TTA_MODES}. "
            f"Received: tta={tta!r}"
        )
    return tta


def views(batch, tta):
    """The views of a `(batch, height, width, channels)` array that `tta` asks for, as float32.

    `"flip"`: the images and their mirror images (2 views). `"crops"`: the
    whole image, then its centre and four corner crops of 87.5% of each side,
    resized back to the image's size (6 views). `"flip+crops"`: those and
    their mirror images (12 views).
    """
    batch = np.asarray(batch, dtype="float32")
    if tta is None:
        return [batch]
    if tta == "flip":
        return [batch, batch[:, :, ::-1]]
    crops = [batch] + _crops(batch)
    if tta == "crops":
        return crops
    return crops + [crop[:, :, ::-1] for crop in crops]


def predict_probabilities(model, batch, task, logits, tta=None):
    """`(batch, classes)` probabilities of `model` on `batch`, averaged over the views."""
    rows = [
        probabilities_of(keras.ops.convert_to_numpy(model.predict_on_batch(view)), task, logits)
        for view in views(batch, tta)
    ]
    return np.mean(rows, axis=0)


def _crops(batch):
    """The centre and four corner crops, each resized back to the batch's size."""
    height, width = batch.shape[1:3]
    h, w = max(1, round(height * CROP_FRACTION)), max(1, round(width * CROP_FRACTION))
    corners = [
        ((height - h) // 2, (width - w) // 2),
        (0, 0),
        (0, width - w),
        (height - h, 0),
        (height - h, width - w),
    ]
    crops = []
    for y, x in corners:
        crop = batch[:, y : y + h, x : x + w]
        resized = keras.ops.image.resize(crop, (height, width), interpolation="bilinear")
        crops.append(keras.ops.convert_to_numpy(resized).astype("float32"))
    return crops
