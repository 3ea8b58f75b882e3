"""`cluttered-digits`: the generator (determinism, disjoint sources, difficulty) and its `load` path."""
import json

import numpy as np
import pytest

from pipelines import data

SMALL = {"train": 300, "validation": 60, "test": 60}


@pytest.fixture(scope="module")
def full():
    return data.cluttered_digits()  # generated once per process (cached), as train/validation loads share it


def _fresh(monkeypatch, **kwargs):
    monkeypatch.setattr(data, "_CLUTTERED_CACHE", {})
    return data.cluttered_digits(**kwargs)


def test_same_seed_same_arrays_other_seed_other_arrays(monkeypatch):
    a = _fresh(monkeypatch, seed=7, sizes=SMALL)
    b = _fresh(monkeypatch, seed=7, sizes=SMALL)
    for split in data.SPLITS:
        np.testing.assert_array_equal(a[split].images, b[split].images)
        np.testing.assert_array_equal(a[split].labels, b[split].labels)
        np.testing.assert_array_equal(a[split].difficulty, b[split].difficulty)
    c = _fresh(monkeypatch, seed=8, sizes=SMALL)
    assert not np.array_equal(a["train"].images, c["train"].images)
    assert not np.array_equal(a["test"].difficulty, c["test"].difficulty)
    # a split does not depend on the other splits' sizes
    d = _fresh(monkeypatch, seed=7, sizes={**SMALL, "train": 100})
    np.testing.assert_array_equal(a["test"].images, d["test"].images)


def test_full_splits_sizes_ranges_and_disjoint_source_digits(full):
    from sklearn.datasets import load_digits

    pools = data._split_indices(load_digits().target)
    used = {}
    for split, minimum in (("train", 10_000), ("validation", 2_000), ("test", 2_000)):
        part = full[split]
        n = len(part.labels)
        assert n >= minimum
        assert part.images.shape == (n, 32, 32, 3) and part.images.dtype == np.uint8
        assert part.labels.dtype == np.int32 and set(part.labels) == set(range(10))
        assert part.sources.shape == (n, 1 + data.CLUTTER["fragments"])
        assert part.difficulty.shape == (n,) and 0 <= part.difficulty.min() and part.difficulty.max() <= 1
        assert all(0 <= f.min() and f.max() <= 1 for f in part.factors.values())
        used[split] = set(part.sources[part.sources >= 0].tolist())  # the digit and every fragment
        assert used[split] <= set(pools[split].tolist())
    assert not used["train"] & used["validation"]
    assert not used["train"] & used["test"]
    assert not used["validation"] & used["test"]
    images = full["train"].images
    assert images.min() == 0 and images.max() == 255 and 60 < images.mean() < 130


def test_ink_is_always_lighter_than_the_background(monkeypatch):
    """One polarity: light strokes on a darker coloured background. With white-on-dark and black-on-light
    mixed, a feature's gradient for one polarity cancels the other's: a plain CNN stayed at chance for 300
    steps (11%) and reached 83% with the polarity made one (the cause of the baseline's slow start)."""
    monkeypatch.setitem(data.CLUTTER, "noise", (0.0, 0.0))  # no noise, no ramp, no fragments: bg + digit only
    monkeypatch.setitem(data.CLUTTER, "gradient", 0.0)
    monkeypatch.setitem(data.CLUTTER, "fragments", 0)
    part = _fresh(monkeypatch, seed=3, sizes=SMALL)["train"]
    x = part.images.astype(np.int16)
    flat = x.reshape(len(x), -1, 3)
    corner = x[:, 0, 0, :]  # some images' digit reaches the corner: take each image's commonest colour
    background = np.array([np.unique(f, axis=0, return_counts=True)[0][np.argmax(
        np.unique(f, axis=0, return_counts=True)[1])] for f in flat])
    assert (corner == background).mean() > 0.9
    lighter = (flat >= background[:, None, :] - 1).all(axis=(1, 2))  # every pixel: bg or towards white
    assert lighter.all(), f"{(~lighter).sum()} of {len(x)} images have ink darker than their background"
    assert (background <= 0.6 * 255 + 1).all()
    strongest = (flat.sum(-1) - background.sum(-1)[:, None]).max(1)  # the ink is visible in every image
    assert (strongest > 0.5 * 0.4 * 255).all()


def test_buckets_are_train_terciles(full):
    train = full["train"].difficulty
    np.testing.assert_allclose(np.quantile(train, [1 / 3, 2 / 3]), data.DIFFICULTY_THRESHOLDS, atol=0.005)
    buckets = data.difficulty_bucket(train)
    shares = [np.mean(buckets == b) for b in data.DIFFICULTY_BUCKETS]
    assert all(0.3 < s < 0.37 for s in shares), shares
    assert list(data.difficulty_bucket([0.0, 0.5 * sum(data.DIFFICULTY_THRESHOLDS), 1.0])) == ["easy", "medium", "hard"]


def _centred_ink(images, out=16, span=2.2):
    """Cheap position/scale-free features: each pixel's distance from the image's median colour, resampled
    to `out` x `out` around the ink's centre of mass, `span` ink radii either way (moment normalisation)."""
    from scipy import ndimage

    x = images.astype(np.float32) / 255.0
    ink = np.abs(x - np.median(x, axis=(1, 2), keepdims=True)).sum(-1)
    ink /= ink.max((1, 2), keepdims=True) + 1e-6
    w = np.clip(ink - 0.3, 0, None)  # the strongest strokes place the window
    mass = w.sum((1, 2)) + 1e-6
    yy, xx = np.mgrid[:32, :32].astype(np.float32)
    cy, cx = (w * yy).sum((1, 2)) / mass, (w * xx).sum((1, 2)) / mass
    radius = np.sqrt((w * ((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2)).sum((1, 2)) / mass / 2) + 1
    t = np.linspace(-span, span, out)
    rows = (cy[:, None] + radius[:, None] * t)[:, :, None]
    cols = (cx[:, None] + radius[:, None] * t)[:, None, :]
    n, rows, cols = np.broadcast_arrays(np.arange(len(x))[:, None, None], rows, cols)
    return ndimage.map_coordinates(ink, [n.ravel(), rows.ravel(), cols.ravel()], order=1).reshape(len(x), -1)


def test_hard_bucket_is_harder_for_a_linear_classifier(full):
    from sklearn.linear_model import RidgeClassifier

    train, test = full["train"], full["test"]
    clf = RidgeClassifier().fit(_centred_ink(train.images), train.labels)
    right = clf.predict(_centred_ink(test.images)) == test.labels
    buckets = data.difficulty_bucket(test.difficulty)
    acc = {b: right[buckets == b].mean() for b in data.DIFFICULTY_BUCKETS}
    assert acc["easy"] > acc["medium"] > acc["hard"] and acc["easy"] - acc["hard"] > 0.15, acc


def test_load_serves_the_generated_split(full):
    ds, info = data.load(data.CLUTTERED, "validation", batch_size=16)
    x, y = next(iter(ds))
    assert x.shape == (16, 32, 32, 3) and x.dtype.name == "float32" and y.dtype.name == "int32"
    assert info.num_examples == {s: len(full[s].labels) for s in data.SPLITS}
    assert info.class_names == tuple("0123456789") and info.input_shape == (32, 32, 3)
    assert len(json.dumps(info.to_dict())) < 1000  # no per-example data in the info (it goes in every bundle)
    mean, std = np.array(info.normalization["mean"]), np.array(info.normalization["std"])
    np.testing.assert_allclose(mean, (full["train"].images / 255.0).mean((0, 1, 2)), atol=1e-4)
    # as_numpy: same order as the generator, the difficulty as a 4th value only when asked for
    images, labels, _, difficulty = data.as_numpy(data.CLUTTERED, "test", limit=40, with_difficulty=True)
    np.testing.assert_array_equal(labels, full["test"].labels[:40])
    np.testing.assert_allclose(images, (full["test"].images[:40] / 255.0 - mean) / std, atol=1e-4)
    np.testing.assert_array_equal(difficulty, full["test"].difficulty[:40])
    np.testing.assert_array_equal(difficulty, data.difficulty(data.CLUTTERED, "test", limit=40))
    assert len(data.as_numpy(data.CLUTTERED, "test", limit=4)) == 3
    small, info16 = data.load(data.CLUTTERED, "test", image_size=16, batch_size=4, channels=1, limit=8)
    assert next(iter(small))[0].shape == (4, 16, 16, 1) and info16.num_examples["test"] == 8


def test_difficulty_is_only_recorded_for_cluttered_digits():
    with pytest.raises(data.DataError, match="name='digits'"):
        data.difficulty("digits", "test")
    with pytest.raises(data.DataError, match="split='dev'"):
        data.difficulty(data.CLUTTERED, "dev")
    with pytest.raises(data.DataError, match="limit=0"):
        data.difficulty(data.CLUTTERED, "test", limit=0)
    with pytest.raises(data.DataError, match="sizes="):
        data.cluttered_digits(sizes={"train": 10, "test": 10})
