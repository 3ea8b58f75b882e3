"""Hostile bundles and images for `run-bundle` (`pipelines.export.bundle`): files outside the bundle folder,
model.json / labels.txt values that would make wrong answers, a decompression bomb and files that do not
decode. Each is refused with one line naming the field or the file, before any work (a model file opened,
an image decoded)."""
import json
import shutil
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from pipelines import cli
from pipelines.export import bundle as bundle_mod
from pipelines.export.bundle import Bundle, BundleError
from tests import bundle_fixtures as bf


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("base") / "bundle"
    bf.plain(d)
    return d


@pytest.fixture()
def secret(tmp_path):
    """A file outside every bundle; its text must never be read (as a model or as labels)."""
    path = tmp_path / "secret.txt"
    path.write_text("ant\nbee\ncat\n")  # would even pass as labels
    return path


def variant(base, tmp_path, spec_patch=None, labels=None, name="bundle"):
    d = tmp_path / name
    shutil.copytree(base, d)
    spec = json.loads((d / "model.json").read_text())
    spec.update(spec_patch or {})
    (d / "model.json").write_text(json.dumps(spec))
    if labels is not None:
        (d / "labels.txt").write_text(labels)
    return d


def refused(d, match):
    with pytest.raises(BundleError, match=match) as err:
        Bundle.load(d)
    assert "\n" not in str(err.value)
    return str(err.value)


def input_block(**norm):
    return {"input": {"shape": [1, *bf.SHAPE], "normalization": {"input_range": [0.0, 1.0], **bf.NORM, **norm}}}


def test_stage_files_outside_the_bundle_are_refused_before_they_are_opened(base, tmp_path, secret, monkeypatch):
    from pipelines.export import tflite

    opened = []
    monkeypatch.setattr(tflite, "Runner", lambda path, **_: opened.append(path))
    depth = "../" * len(tmp_path.parts)
    for i, name in enumerate((f"{depth}{str(secret)[1:]}", str(secret), "../secret.txt")):
        d = variant(base, tmp_path, {"stages": {"main": {"file": name}}}, name=f"b{i}")
        refused(d, rf"stages\.main\.file='{name}' (is outside the bundle folder|must be a file name relative)")
    link = variant(base, tmp_path, name="symlink")
    (link / "model.tflite").unlink()
    (link / "model.tflite").symlink_to(secret)
    refused(link, r"stages\.main\.file='model\.tflite' is outside the bundle folder")
    assert not opened


def test_a_labels_file_outside_the_bundle_is_refused(base, tmp_path, secret):
    d = variant(base, tmp_path, {"labels": str(secret)})
    refused(d, r"labels='.*secret\.txt' must be a file name relative to the bundle folder")
    d = variant(base, tmp_path, {"labels": "../secret.txt"}, name="rel")
    refused(d, r"labels='\.\./secret\.txt' is outside the bundle folder")


@pytest.mark.parametrize("norm,match", [
    ({"std": [0]}, r"input\.std must be a list of 1 or 3 finite numbers > 0; received std=\[0\]"),
    ({"std": [0.2, -0.1, 0.3]}, r"received std=\[0\.2, -0\.1, 0\.3\]"),
    ({"mean": [0.5, 0.5]}, r"input\.mean must be a list of 1 or 3 finite numbers; received mean=\[0\.5, 0\.5\]"),
    ({"mean": [0.5, "x", 0.1]}, r"received mean=\[0\.5, 'x', 0\.1\]"),
    ({"input_range": [1.0, 1.0]}, r"input_range must be \[lo, hi\] finite numbers with lo < hi; received input_range=\[1\.0, 1\.0\]"),
])
def test_normalisation_that_would_give_nan_or_wrong_inputs_is_refused(base, tmp_path, norm, match):
    refused(variant(base, tmp_path, input_block(**norm)), match)


def test_nan_in_model_json_is_refused_where_the_runner_reads_it(base, tmp_path):
    d = variant(base, tmp_path)
    text = (d / "model.json").read_text().replace('"std": [0.25, 0.2, 0.3]', '"std": [NaN, 0.2, 0.3]')
    (d / "model.json").write_text(text)
    refused(d, r"received std=\[nan, 0\.2, 0\.3\]")


@pytest.mark.parametrize("patch,match", [
    ({"threshold": 2.0}, r"threshold must be a probability in \[0, 1\]; received threshold=2\.0"),
    ({"stages": {"main": {"file": "model.tflite", "madds": -5}}}, r"stages\.main\.madds must be a number >= 0"),
    ({"num_classes": 0}, r"num_classes must be an int >= 1; received num_classes=0"),
    ({"input": {"shape": [1, 8, 8, 2]}}, r"input\.shape must be .* C 1 or 3; received shape=\[1, 8, 8, 2\]"),
    ({"input": {"shape": [1, 100000, 8, 3]}}, r"received shape=\[1, 100000, 8, 3\]"),
])
def test_bad_model_json_values_are_refused_at_load(base, tmp_path, patch, match):
    """A plain bundle's threshold of 2.0 used to be ignored; the others were accepted or failed later."""
    refused(variant(base, tmp_path, patch), match)


def test_model_json_that_is_not_an_object_or_too_large_is_refused(base, tmp_path):
    d = variant(base, tmp_path)
    (d / "model.json").write_text("[1, 2]")
    refused(d, r"model\.json: must hold a JSON object; received list")
    (d / "model.json").write_text(" " * (bundle_mod.MAX_SPEC_BYTES + 1) + "{}")
    refused(d, rf"more than the {bundle_mod.MAX_SPEC_BYTES} a model\.json may have")


@pytest.mark.parametrize("labels,patch,match", [
    ("ant\nbee\n", {"num_classes": 3}, r"labels\.txt: 2 label\(s\) but model\.json says num_classes=3"),
    ("ant\n\nbee\ncat\n", {}, r"labels\.txt: line 2 is empty"),
    ("", {}, r"labels\.txt: line 1 is empty"),
])
def test_labels_that_do_not_match_the_classes_are_refused(base, tmp_path, labels, patch, match):
    refused(variant(base, tmp_path, patch, labels=labels), match)


def test_a_named_labels_file_that_is_missing_is_refused(base, tmp_path):
    d = variant(base, tmp_path)
    (d / "labels.txt").unlink()
    refused(d, r"labels='labels\.txt' not found in the bundle")


def test_labels_fewer_than_the_logits_are_refused_when_predicting(base, tmp_path):
    """Without num_classes in model.json: 2 labels for 3 logits used to fall back to the index silently."""
    d = variant(base, tmp_path, labels="ant\nbee\n")
    bundle = Bundle.load(d)
    with pytest.raises(BundleError, match=r"stage 'main' gives 3 logits but the bundle has 2 labels"):
        bundle.predict(bf.images(1))


def bomb_png(path, width=20000, height=20000):
    """A real PNG of width x height black pixels (a few hundred KB: rows of zeros compress ~1000:1)."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + gray pixels
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def run_bundle(bundle, image, capsys):
    rc = cli.main(["run-bundle", str(bundle), str(image)])
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.mark.parametrize("size", [(20000, 20000), (10000, 10000), (8000, 7000)])
def test_decompression_bombs_are_refused_from_the_header(base, tmp_path, capsys, size):
    """400 MP (over Pillow's own refusal), 100 MP (Pillow only warns) and 56 MP (Pillow is silent): each is
    refused from its header in well under a second, naming the file, before a pixel is decoded."""
    image = bomb_png(tmp_path / "bomb.png", *size)
    assert image.stat().st_size < 1_000_000
    start = time.monotonic()
    rc, err = run_bundle(base, image, capsys)
    assert time.monotonic() - start < 5  # decoding 56-400 MP would take seconds and 0.2-1.2 GB
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: image '{image}'") and "refusing to decode it" in err, err
    assert f"more than {'the ' if size[0] * size[1] < 89_478_485 else ''}{bundle_mod.MAX_IMAGE_PIXELS}" in err


def test_an_image_at_the_bound_is_decoded(base, tmp_path):
    """The bound is on pixels, not on the file: a 4000x3000 photo-sized image runs."""
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (3000, 4000, 3), np.uint8)).save(path)
    assert Bundle.load(base).preprocess(path).shape == bf.SHAPE


def test_files_that_do_not_decode_are_one_line_naming_them(base, tmp_path, capsys):
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.RandomState(1).randint(0, 256, (64, 64, 3), np.uint8)).save(noise)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(noise.read_bytes()[:2000])
    tiff = tmp_path / "scan.tif"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tiff)
    for path, what in ((text, "cannot read image"), (truncated, "cannot decode image"), (tiff, "cannot read image")):
        rc, err = run_bundle(base, path, capsys)
        assert rc == 2 and len(err.splitlines()) == 1 and err.startswith(f"error: {what} '{path}'"), err
