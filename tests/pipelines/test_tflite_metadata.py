"""TFLite metadata in a bundle's model.tflite (`pipelines.export.metadata`): written by every export, read back
field by field, the model unchanged for LiteRT; classified by MediaPipe Tasks' ImageClassifier where the
`mediapipe` package is importable (it is not pinned: mediapipe 1.2.2 needs absl-py~=2.3, the project pins 1.4.0)."""
import json

import numpy as np
import pytest

from pipelines.export import metadata
from pipelines.export import tflite
from tests import bundle_fixtures as bf

# every channel normalised alike, as the project's RGB datasets (folders, TFDS) are: one metadata value
NORM = {"mean": [0.5] * 3, "std": [0.25] * 3}
DATASET = {"name": "tiny", "num_classes": bf.CLASSES, "class_names": bf.LABELS, "input_shape": bf.SHAPE,
           "normalization": {"input_range": [0.0, 1.0], **NORM}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from pipelines.export import ExportOptions, export_net

    out = tmp_path_factory.mktemp("meta") / "bundle"
    net = bf.tiny_net()
    x = bf.images(8)
    y = np.argmax(net.predict(x, verbose=0), -1)
    export_net(net, out, ExportOptions(parity_images=8, latency_runs=2), DATASET, validation=(x, y), log=lambda *a: None)
    return net, out


def test_plain_bundle_carries_labels_and_normalization(exported):
    net, out = exported
    meta = metadata.read_metadata((out / "model.tflite").read_bytes())
    assert meta["name"] == net.name and meta["min_parser_version"] == "1.0.0"
    inp = meta["input"]
    assert (inp["color_space"], inp["height"], inp["width"]) == ("RGB", 8, 8)
    # (pixel - mean) / std in pixel units == the bundle's (pixel / 255 - m) / s; one value for all channels
    assert inp["mean"] == [127.5] and inp["std"] == [63.75] and inp["min"] == [-2.0] and inp["max"] == [2.0]
    (logits,) = meta["outputs"]
    assert logits["labels_file"] == "labels.txt" and "3 classes" in logits["description"]
    assert meta["files"] == {"labels.txt": (out / "labels.txt").read_text()}
    doc = json.loads((out / "model.json").read_text())
    assert doc["size_bytes"] == (out / "model.tflite").stat().st_size  # model.json describes the shipped bytes
    from pipelines.export.bundle import weights_digest

    assert doc["weights_sha256"] == weights_digest(net)  # which trained network the bundle came from


def test_weights_digest_tells_networks_apart_by_their_weights_alone():
    from pipelines.export.bundle import weights_digest

    net = bf.tiny_net(seed=0)
    twin = bf.tiny_net(seed=5, name="twin")  # another name and initial weights, then the same weights
    assert weights_digest(twin) != weights_digest(net)
    twin.set_weights(net.get_weights())
    assert weights_digest(twin) == weights_digest(net)
    nudged = [w.copy() for w in net.get_weights()]
    nudged[-1][0] = np.nextafter(nudged[-1][0], np.float32(np.inf))  # one float32 step on one bias
    twin.set_weights(nudged)
    assert weights_digest(twin) != weights_digest(net)


def test_metadata_leaves_the_model_unchanged_for_litert(exported):
    from pipelines.export.bundle import Bundle

    net, out = exported
    x = bf.images(4, seed=1)
    got = np.stack([p.logits for p in Bundle.load(out).predict(x)])
    np.testing.assert_allclose(got, net.predict(x, verbose=0), atol=1e-4)


def test_dynamic_bundle_metadata_on_its_first_signature(tmp_path):
    """A two-signature model (BasisNet's preview + specialist): metadata describes the first; both
    signatures give the same outputs as without it."""
    bf.basisnet(tmp_path, threshold=0.5)
    plain = (tmp_path / "model.tflite").read_bytes()
    data = metadata.with_metadata(plain, "basis", 3, DATASET["normalization"], bf.LABELS)
    assert metadata.read_metadata(plain) is None
    meta = metadata.read_metadata(data)
    assert meta["input"]["color_space"] == "RGB"
    # per-channel normalisation (allowed by the schema; MediaPipe refuses it): a value per channel
    per_channel = metadata.read_metadata(metadata.with_metadata(plain, "basis", 3, {"input_range": [-1.0, 1.0],
                                                                                     **bf.NORM}, bf.LABELS))["input"]
    pixel = np.array([0.0, 128.0, 255.0])[:, None]
    ours = (pixel / 255.0 * 2.0 - 1.0 - np.array(bf.NORM["mean"])) / np.array(bf.NORM["std"])
    theirs = (pixel - np.array(per_channel["mean"])) / np.array(per_channel["std"])
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(per_channel["min"], ours[0], rtol=1e-5)
    np.testing.assert_allclose(per_channel["max"], ours[-1], rtol=1e-5)
    assert [o["labels_file"] for o in meta["outputs"]].count("labels.txt") == 1  # the preview logits, not the coefficients
    assert metadata.read_metadata(metadata.with_metadata(data, "again", 3, None, bf.LABELS))["name"] == "again"
    x = bf.images(1)
    a, b = tflite.Runner(plain), tflite.Runner(data)
    assert a.signatures() == b.signatures()
    for sig, io_ in a.signatures().items():
        feed = {"image": x}
        if "coefficients" in io_["inputs"]:
            feed["coefficients"] = np.full((1, 2), 0.5, np.float32)
        ra = a.interpreter.get_signature_runner(sig)(**feed)
        rb = b.interpreter.get_signature_runner(sig)(**feed)
        for k in ra:
            np.testing.assert_array_equal(ra[k], rb[k])


def test_grayscale_input_is_described_as_grayscale():
    from keras_layers import env  # noqa: F401
    import tf_keras as keras

    inp = keras.Input((8, 8, 1))
    net = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inp)))
    data = metadata.with_metadata(tflite.convert(net), "gray", 1, {"mean": [0.5], "std": [0.5]}, ["a", "b"])
    assert metadata.read_metadata(data)["input"]["color_space"] == "GRAYSCALE"
    with pytest.raises(metadata.MetadataError, match="shape"):
        metadata.with_metadata(tflite.convert(net), "gray", 3, None, ["a", "b"])


def test_mediapipe_image_classifier_agrees_with_run_bundle(exported, tmp_path):
    """MediaPipe Tasks' ImageClassifier (the Android client's code, in Python) reads the labels and the
    normalisation from the metadata and gives run-bundle's top-1 on the same image files."""
    mp = pytest.importorskip("mediapipe", reason="mediapipe is not pinned (it needs absl-py~=2.3; the project "
                                                 "pins absl-py==1.4.0)")
    from PIL import Image
    from mediapipe.tasks import python as mp_tasks
    from mediapipe.tasks.python import vision

    from pipelines.export.bundle import Bundle

    _, out = exported
    paths = []
    for i in range(12):
        path = tmp_path / f"{i}.png"
        rng = np.random.RandomState(i)  # a random colour with a little noise: the tiny net's classes vary by colour
        pixels = rng.randint(0, 256, (1, 1, 3)) + rng.randint(-8, 9, (8, 8, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    ours = [p.label for p in Bundle.load(out).predict_files(paths)]
    options = vision.ImageClassifierOptions(base_options=mp_tasks.BaseOptions(model_asset_path=str(out / "model.tflite")),
                                            max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        theirs = [classifier.classify(mp.Image.create_from_file(str(p))).classifications[0].categories[0].category_name
                  for p in paths]
    assert theirs == ours and len(set(ours)) >= 2, (theirs, ours)  # several classes, not one
