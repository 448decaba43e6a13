"""One TensorFlow worker of two under `tf.distribute.MultiWorkerMirroredStrategy`.

    python multiworker_tf_worker.py INDEX FIRST_PORT

`TF_CONFIG` names two workers on 127.0.0.1 (FIRST_PORT and the next). Prints
whether Keras' own `fit` runs under the strategy (`keras fit: ...`; it fails in
Keras 3.15, keras-team/keras#20585) and what `kerastl.fine_tune` says
(`fine_tune: ...`).
"""

import json
import os
import sys

index, port = int(sys.argv[1]), int(sys.argv[2])
os.environ["KERAS_BACKEND"] = "tensorflow"
workers = [f"127.0.0.1:{port + i}" for i in range(2)]
os.environ["TF_CONFIG"] = json.dumps(
    {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerastl  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()
x = np.random.default_rng(0).uniform(0, 255, (32, 8, 8, 1)).astype("float32")
y = np.arange(32) % 2
with strategy.scope():
    plain = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    plain.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    inputs = keras.Input((8, 8, 1))
    features = keras.layers.Conv2D(4, 3, padding="same")(keras.layers.Rescaling(1 / 255)(inputs))
    extractor = kerastl.FeatureExtractor(keras.Model(inputs, features), pooling="avg")
    model = kerastl.build_model(extractor, kerastl.heads.binary(), preprocessing=False)
try:
    plain.fit(x, y, batch_size=8, epochs=1, verbose=0)
    print("keras fit: runs", flush=True)
except Exception as e:  # noqa: BLE001 - what Keras raises is what the test reads
    print(f"keras fit: fails ({type(e).__name__}: {str(e).splitlines()[0]})", flush=True)
try:
    kerastl.fine_tune(model, (x, y), epochs=1, verbose=0)
    print("fine_tune: runs", flush=True)
except ValueError as e:
    print(f"fine_tune: refused ({e})", flush=True)
