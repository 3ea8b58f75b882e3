"""Registered versions of a tiny digits classifier (8x8, seconds to train), made the way `train` makes
them: a tracked run with `run/model.keras`, `run/config.json`, `run/dataset.json`, then
`pipelines.mlops.registry.register`. `epochs` sets how good a version is (0 = untrained)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from keras_layers import env  # noqa: F401
import tf_keras as keras

from pipelines import data
from pipelines.mlops import registry
from pipelines import tracking

IMAGE_SIZE = 8


def digits(split="train", limit=None):
    return data.as_numpy("digits", split, image_size=IMAGE_SIZE, limit=limit)


def tiny_digits_net(epochs, seed=0):
    keras.utils.set_random_seed(seed)
    x, y, info = digits("train")
    inp = keras.Input(info.input_shape, name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    net = keras.Model(inp, keras.layers.Dense(info.num_classes, name="logits")(h), name="tiny_digits")
    net.compile(keras.optimizers.Adam(0.02), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    if epochs:
        net.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return net, info


def register_tiny(name, epochs, tracking_uri, seed=0, transform=None):
    """Train, track and register one version of `name`; returns its ModelVersion. `transform(net)`, if given,
    changes the trained model before it is saved (e.g. NaN weights)."""
    import mlflow

    net, info = tiny_digits_net(epochs, seed)
    if transform is not None:
        transform(net)
    tracking.configure(tracking_uri)
    exp = tracking.ensure_experiment("tests", tracking_uri)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(experiment_id=exp) as run:
        d = Path(tmp)
        net.save(d / "model.keras")
        (d / "config.json").write_text(json.dumps({"model": "tiny_digits", "data": "digits", "recipe": None,
                                                   "image_size": IMAGE_SIZE, "data_dir": None, "epochs": epochs}))
        (d / "dataset.json").write_text(json.dumps(info.to_dict()))
        for f in ("model.keras", "config.json", "dataset.json"):
            mlflow.log_artifact(str(d / f), "run")
        run_id = run.info.run_id
    return registry.register(run_id, name, tracking_uri=tracking_uri, log=lambda *_: None)
