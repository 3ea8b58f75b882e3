"""Datasets as `tf.data` pipelines of `(image float32 NHWC, int32 label)`, one path for every source.

    ds, info = load("digits", "train", image_size=32, batch_size=64, augment=True)

Names:
* ``digits`` - scikit-learn's `load_digits` (ships with the package; the embedded default): 1,797
  8x8 grey images, split 70/15/15 into train/validation/test with a fixed seed, resized.
* ``cluttered-digits`` - 32x32 RGB digits made at load time from `load_digits` (below).
* any TFDS name - read with ``download=False`` from ``data_dir`` (``--data-dir``); nothing is fetched.
* ``folder:PATH`` - one sub-folder of images per class; split 70/15/15 with a fixed seed, or taken
  from ``PATH/train``, ``PATH/validation``, ``PATH/test`` when those exist.

``cluttered-digits`` (nothing downloaded or written; deterministic for `CLUTTERED_SEED`): 10,000 train,
2,000 validation and 2,000 test images. The 1,797 source digits are split first (the stratified
``digits`` split), so every split's digits and fragments come only from its own source digits; each split
then draws from its own seeded generator. Per image, each uniformly in its range (`CLUTTER`):
* the digit's 8x8 box drawn 10-28 px wide, rotated up to +-40 degrees, centred at random (kept mostly
  inside the image), bilinear;
* 0-7 fragments: 2-4 x 2-4 source pixels of another digit of the split, boxes 10-20 px, any angle,
  anywhere, in the digit's ink;
* a random background colour, each channel 0-0.6, with a linear brightness ramp (random direction, up to
  +-0.2 from the centre to an edge);
* ink contrast 0.5-1: the ink is the background moved that fraction of the way to white. One polarity
  (light strokes on a darker background), as in the source digits: with white-on-dark and black-on-light
  mixed, a plain CNN stayed at chance for 300 steps and `mobilenet_v2` for about 3 epochs, because a
  stroke feature's gradients from the two polarities cancel (docs/results.md);
* Gaussian pixel noise, sigma 0-0.1.
Difficulty, per example in [0, 1]: `DIFFICULTY_WEIGHTS`-weighted sum of the factors, each scaled to
[0, 1] with 1 its hard end: scale (28 - side) / 18, rotation |angle| / 40, fragments count / 7,
contrast (1 - c) / 0.5, noise sigma / 0.1; weights 0.45 / 0.15 / 0.3 / 0.05 / 0.05 (a logistic fit
of the baseline's validation errors on the factors, rounded). Buckets ``easy`` / ``medium`` / ``hard`` are
cut at `DIFFICULTY_THRESHOLDS`, the train split's terciles (0.425, 0.581). Read them with
`difficulty(name, split, limit)` (in `load(..., shuffle=False)` order), `as_numpy(...,
with_difficulty=True)` (a 4th value) and `difficulty_bucket(values)`; `load` still yields
`(image, label)`. Generating all 14,000 images takes about 6 s on 2 CPU cores, once per process (cached).
What the static baseline reaches on it: docs/results.md.

Images are scaled to [0, 1] then normalised with the dataset's mean/std, which `info.normalization`
reports (the Android app applies the same). Augmentation is TF ops only (random crop after padding,
horizontal flip, brightness) and is switched per recipe.
"""
from __future__ import annotations

import dataclasses
import numbers
import os
import typing
from pathlib import Path

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)

SPLITS = ("train", "validation", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SEED = 1234
# An image is decoded only when its header says at most this many pixels (a 48 MP phone photo passes; a
# 20000x20000 "decompression bomb", 400 MP from a 389 KB PNG, does not): about 300 MB decoded at the bound.
MAX_IMAGE_PIXELS = 50_000_000


class DataError(ValueError):
    """A dataset that cannot be served, with a one-line message saying how to fix it."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    class_names: tuple
    input_shape: tuple  # (H, W, C) after resizing
    normalization: dict  # {"scale": 1/255 or 1/16, "mean": [...], "std": [...]}
    num_examples: dict  # split -> count
    generator_version: int | None = None  # embedded datasets (`GENERATOR_VERSIONS`); None for TFDS and folders

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Augment:
    """Augmentation strengths; zeros switch a transform off."""

    crop: int = 0  # pad by this many pixels, then random-crop back
    flip: bool = False
    brightness: float = 0.0  # max delta, in normalised units

    @classmethod
    def parse(cls, value, image_size):
        if value in (None, False, 0, "none"):
            return cls()
        if value is True or value == "default":
            return cls(crop=max(1, image_size // 8), flip=False, brightness=0.1)
        if isinstance(value, (int, float)):  # a strength in [0, 1]
            if not 0 <= value <= 1:
                raise DataError(f"augment strength must be in [0, 1]; received augment={value!r}")
            return cls(crop=int(round(value * image_size / 4)), flip=False, brightness=0.3 * value)
        if isinstance(value, dict):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise DataError(f"unknown augment field {sorted(unknown)[0]!r}; valid: crop, flip, brightness")
            return cls(**value)
        if isinstance(value, cls):
            return value
        raise DataError(f"augment must be a bool, a strength in [0, 1] or a dict; received augment={value!r}")

    @property
    def active(self):
        return bool(self.crop or self.flip or self.brightness)


def _tf():
    from keras_layers import env  # noqa: F401  (quiet TensorFlow import, Keras 2)
    import tensorflow as tf

    return tf


# ---------------------------------------------------------------- sources -> (images uint8/float, labels)

def _split_indices(labels, seed=SEED, fractions=(0.7, 0.15, 0.15)):
    """Stratified deterministic split of example indices into train/validation/test."""
    import numpy as np

    rng = np.random.RandomState(seed)
    parts = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_train = int(round(len(idx) * fractions[0]))
        n_val = int(round(len(idx) * fractions[1]))
        parts["train"].extend(idx[:n_train])
        parts["validation"].extend(idx[n_train:n_train + n_val])
        parts["test"].extend(idx[n_train + n_val:])
    return {s: np.sort(np.asarray(v, dtype=np.int64)) for s, v in parts.items()}


def _digits():
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[..., None]  # [0, 1], (N, 8, 8, 1)
    labels = digits.target.astype(np.int32)
    parts = _split_indices(labels)
    arrays = {s: (images[i], labels[i]) for s, i in parts.items()}
    names = tuple(str(i) for i in range(10))
    return arrays, names


def open_image(path, formats, max_pixels=MAX_IMAGE_PIXELS, error=None):
    """Open image file `path` reading its header only (Pillow, lazily): a format in `formats` of at most
    `max_pixels` pixels, else one-line `error` (default DataError) naming the file. Nothing is decoded yet:
    the caller decodes (or `verify()`s) the returned image, inside `with`."""
    import struct
    import warnings

    from PIL import Image

    error = error or DataError
    where = str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path, formats=formats)  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow's own bound (89 MP warns, 179 MP refuses) is above ours: the header says more than ours.
        raise error(f"image {where!r} has more than {max_pixels} pixels ({err}); refusing to decode it") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as err:
        raise error(f"cannot read image {where!r}: {err}") from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise error(f"image {where!r} is {width}x{height} = {width * height} pixels, more than the {max_pixels} "
                    "allowed; refusing to decode it")
    return img


FOLDER_FORMATS = ("PNG", "JPEG", "BMP", "GIF")  # what tf.io.decode_image reads
_FOLDER_CHECKED: dict = {}


def _check_images(files, root):
    """Every image of a folder dataset passes `open_image` and Pillow's `verify()` (structure and checksums,
    no pixel decode) before any training starts: a text file named .png or a decompression bomb fails here,
    in one line naming the file, not in the middle of an epoch."""
    import zlib

    bad = []
    for f in files:
        try:
            with open_image(f, FOLDER_FORMATS) as img:
                img.verify()
        except DataError as err:
            bad.append(str(err))
        except (OSError, ValueError, SyntaxError, EOFError, zlib.error) as err:
            bad.append(f"image {f!r} does not decode: {err}")
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DataError(f"data folder:{root}: {bad[0]}{more}; remove or fix it before training")


def _folder(path):
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder:{path} does not exist; give folder:PATH with one sub-folder of images per class")

    def scan(directory):
        classes = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
        files, labels = [], []
        for label, cls in enumerate(classes):
            found = [str(f) for f in sorted((directory / cls).rglob("*")) if f.suffix.lower() in IMAGE_EXTENSIONS]
            if not found:
                raise DataError(f"data folder:{path}: class folder {str(directory / cls)!r} has no images "
                                f"(extensions {', '.join(IMAGE_EXTENSIONS)}); remove it or add images")
            files.extend(found)
            labels.extend([label] * len(found))
        key = (str(directory.resolve()), tuple(files), tuple(os.stat(f).st_mtime_ns for f in files))
        if _FOLDER_CHECKED.get(str(directory.resolve())) != key:
            _check_images(files, path)
            _FOLDER_CHECKED[str(directory.resolve())] = key
        return classes, files, labels

    import numpy as np

    if all((root / s).is_dir() for s in SPLITS):
        found = {s: scan(root / s) for s in SPLITS}
        classes = found["train"][0]
        arrays = {s: (np.array(f), np.array(lab, dtype=np.int32)) for s, (_, f, lab) in found.items()}
    else:
        classes, files, labels = scan(root)
        labels = np.array(labels, dtype=np.int32)
        if not files:
            raise DataError(f"data folder:{path} has no images in class sub-folders (extensions {IMAGE_EXTENSIONS})")
        parts = _split_indices(labels)
        files = np.array(files)
        arrays = {s: (files[i], labels[i]) for s, i in parts.items()}
    if len(classes) < 2:
        raise DataError(f"data folder:{path} needs at least 2 class sub-folders; found {len(classes)}")
    return arrays, tuple(classes)


def _tfds(name, split, data_dir):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as err:  # DatasetNotFoundError and friends
        raise DataError(
            f"unknown dataset name={name!r}: not 'digits', 'folder:PATH' or a TFDS dataset ({type(err).__name__})"
        ) from None
    splits = builder.info.splits
    if split == "validation" and "validation" not in splits:
        tfds_split = "train[90%:]" if "test" in splits else "train[80%:90%]"
    elif split == "train" and "validation" not in splits:
        tfds_split = "train[:90%]" if "test" in splits else "train[:80%]"
    elif split == "test" and "test" not in splits:
        tfds_split = "train[90%:]"
    else:
        tfds_split = split
    try:
        ds = tfds.load(name, split=tfds_split, data_dir=data_dir, download=False, as_supervised=True,
                       shuffle_files=False)
    except AssertionError:  # TFDS' "could not find data in ..." when the dataset was never prepared
        where = data_dir or "~/tensorflow_datasets"
        raise DataError(
            f"TFDS dataset {name!r} is not prepared in data_dir={where!r}; prepare it offline "
            "(`tfds build` on a machine with the source files) and pass --data-dir") from None
    label = builder.info.features["label"]
    names = tuple(label.names) if getattr(label, "names", None) else tuple(str(i) for i in range(label.num_classes))
    try:
        count = builder.info.splits[tfds_split].num_examples
    except Exception:
        count = None
    return ds, names, count


# ---------------------------------------------------------------- cluttered digits (synthesised at load time)

# The version of each embedded dataset's generator, recorded in every run's dataset.json: bump it when the
# images a seed makes change, so that runs made from older images are never taken for runs of these (the
# experiments' `deployed.finished_run` reuses a finished run only of the same version).
# cluttered-digits 2: one ink polarity (light strokes on a darker background).
GENERATOR_VERSIONS = {"digits": 1, "cluttered-digits": 2}


def generator_version(name):
    """The generator version of embedded dataset `name` (`GENERATOR_VERSIONS`); None for other datasets."""
    return GENERATOR_VERSIONS.get(name)


CLUTTERED = "cluttered-digits"
CLUTTERED_SEED = 20240607
CLUTTERED_SIZES = {"train": 10_000, "validation": 2_000, "test": 2_000}
CLUTTERED_IMAGE = 32
# Nuisance ranges, each sampled uniformly per image (module docstring).
CLUTTER = {
    "scale": (10.0, 28.0),  # side in px of the digit's 8x8 box
    "rotation": 40.0,  # degrees, either way
    "fragments": 7,  # 0..7 pieces (2-4 x 2-4 px of an 8x8 source) of other digits of the same split
    "fragment_scale": (10.0, 20.0),  # side in px of a fragment's 8x8 source box
    "background": (0.0, 0.6),  # each channel of the background colour
    "contrast": (0.5, 1.0),  # ink = background moved this fraction of the way to white
    "noise": (0.0, 0.1),  # Gaussian pixel noise sigma, images in [0, 1]
    "gradient": 0.2,  # background brightness ramp: max change from the centre to an edge
}
# difficulty = sum of weight * factor, each factor scaled to [0, 1] (1 = hardest end of its range). The
# weights are a logistic fit of the baseline mobilenet_v2's validation errors on the factors, rounded.
DIFFICULTY_WEIGHTS = {"scale": 0.45, "rotation": 0.15, "fragments": 0.3, "contrast": 0.05, "noise": 0.05}
DIFFICULTY_BUCKETS = ("easy", "medium", "hard")
DIFFICULTY_THRESHOLDS = (0.425, 0.581)  # terciles of the train split's difficulty (default seed), fixed here


class ClutteredSplit(typing.NamedTuple):
    images: object  # (n, 32, 32, 3) uint8
    labels: object  # (n,) int32
    difficulty: object  # (n,) float32 in [0, 1]
    factors: dict  # factor name -> (n,) float32 in [0, 1], as combined into `difficulty`
    sources: object  # (n, 1 + fragments) int64: load_digits index of the digit, then of each fragment (-1: none)


_CLUTTERED_CACHE: dict = {}


def _render(src, centre, side, angle, size):
    """Bilinear-sample 8x8 sources (n, 8, 8) into (n, size, size) float32 layers: each source's box `side`
    px wide, rotated by `angle` radians about `centre` (n, 2) = (row, col) in px."""
    import numpy as np

    n = len(src)
    padded = np.zeros((n, 11, 11), np.float32)  # zero border so samples outside the box read 0
    padded[:, 1:9, 1:9] = src
    grid = np.arange(size, dtype=np.float32) + 0.5
    k = (8.0 / side).astype(np.float32)[:, None, None]  # source px per output px
    dy = (grid[None, :, None] - centre[:, 0, None, None].astype(np.float32)) * k
    dx = (grid[None, None, :] - centre[:, 1, None, None].astype(np.float32)) * k
    cos = np.cos(angle).astype(np.float32)[:, None, None]
    sin = np.sin(angle).astype(np.float32)[:, None, None]
    # output px -> source px (rows v, cols u): rotate back, +4 box centre, +1 border, -0.5 px centres
    v = cos * dy - sin * dx
    u = sin * dy + cos * dx
    for t in (v, u):  # in place: these are the large arrays
        t += 4.5
        np.clip(t, 0.0, 9.0, out=t)
    v0, u0 = v.astype(np.int32), u.astype(np.int32)
    v -= v0  # now the fractions
    u -= u0
    idx = v0 * 11 + u0 + (np.arange(n, dtype=np.int32) * 121)[:, None, None]
    flat = padded.ravel()
    top, right = flat[idx], flat[idx + 1]
    bottom, corner = flat[idx + 11], flat[idx + 12]
    top += (right - top) * u
    bottom += (corner - bottom) * u
    top += (bottom - top) * v
    return top


def _clutter_split(rng, pool, strokes, n, size=CLUTTERED_IMAGE, chunk=2048):
    """`n` images drawn from the source digits `pool` (indices into `strokes`, (N, 8, 8) in [0, 1]): see the
    module docstring. Returns images, difficulty, factors, sources (see `ClutteredSplit`) and the digits."""
    import numpy as np

    c = CLUTTER
    digit = rng.choice(pool, n)
    side = rng.uniform(*c["scale"], n)
    angle = rng.uniform(-1, 1, n) * np.deg2rad(c["rotation"])
    margin = 0.4 * side
    centre = rng.uniform(margin[:, None], size - margin[:, None], (n, 2))
    n_frag = rng.integers(0, c["fragments"] + 1, n)
    frag = np.where(np.arange(c["fragments"]) < n_frag[:, None], rng.choice(pool, (n, c["fragments"])), -1)
    frag_side = rng.uniform(*c["fragment_scale"], (n, c["fragments"]))
    frag_angle = rng.uniform(-np.pi, np.pi, (n, c["fragments"]))
    frag_centre = rng.uniform(2, size - 2, (n, c["fragments"], 2))
    frag_hw = rng.integers((2, 2), (5, 5), (n, c["fragments"], 2))  # kept rows, cols of the 8x8 source
    frag_at = rng.integers(0, 8 - frag_hw + 1)
    background = rng.uniform(*c["background"], (n, 3))
    contrast = rng.uniform(*c["contrast"], n)
    ink = background + contrast[:, None] * (1.0 - background)  # always lighter than the background
    ramp_dir = rng.uniform(-np.pi, np.pi, n)
    ramp = rng.uniform(0, c["gradient"], n)
    noise = rng.uniform(*c["noise"], n)
    noise_seed = rng.integers(2 ** 63)

    images = np.empty((n, size, size, 3), np.uint8)
    grid = (np.arange(size, dtype=np.float32) + 0.5 - size / 2) / (size / 2)
    noise_rng = np.random.default_rng(noise_seed)
    rows, cols = np.arange(8)[:, None], np.arange(8)[None, :]
    for lo in range(0, n, chunk):
        s = slice(lo, min(n, lo + chunk))
        alpha = _render(strokes[digit[s]], centre[s], side[s], angle[s], size)
        for j in range(c["fragments"]):
            sel = np.flatnonzero(frag[s, j] >= 0)
            if not len(sel):
                continue
            g = sel + lo
            (h, w), (r0, c0) = frag_hw[g, j].T, frag_at[g, j].T
            keep = ((rows >= r0[:, None, None]) & (rows < (r0 + h)[:, None, None])
                    & (cols >= c0[:, None, None]) & (cols < (c0 + w)[:, None, None]))
            piece = _render(strokes[frag[g, j]] * keep, frag_centre[g, j], frag_side[g, j], frag_angle[g, j], size)
            np.maximum(alpha[sel], piece, out=piece)
            alpha[sel] = piece
        np.clip(alpha, 0, 1, out=alpha)
        lit = ((np.cos(ramp_dir[s])[:, None, None] * grid[None, :, None]
                + np.sin(ramp_dir[s])[:, None, None] * grid[None, None, :]) * ramp[s][:, None, None]).astype(np.float32)
        img = background[s, None, None, :].astype(np.float32) + lit[..., None]  # (m, size, size, 3)
        img += (ink[s, None, None, :].astype(np.float32) - img) * alpha[..., None]
        img += noise_rng.standard_normal(img.shape, dtype=np.float32) * noise[s, None, None, None].astype(np.float32)
        img *= 255
        img += 0.5
        images[s] = np.clip(img, 0, 255, out=img).astype(np.uint8)

    lo_s, hi_s = c["scale"]
    lo_c, hi_c = c["contrast"]
    factors = {
        "scale": (hi_s - side) / (hi_s - lo_s),
        "rotation": np.abs(angle) / np.deg2rad(c["rotation"]),
        "fragments": n_frag / max(1, c["fragments"]),
        "contrast": (hi_c - contrast) / (hi_c - lo_c),
        "noise": (noise - c["noise"][0]) / (c["noise"][1] - c["noise"][0]),
    }
    factors = {k: np.clip(v, 0, 1).astype(np.float32) for k, v in factors.items()}
    difficulty = sum(DIFFICULTY_WEIGHTS[k] * v for k, v in factors.items()).astype(np.float32)
    sources = np.concatenate([digit[:, None], frag], axis=1).astype(np.int64)
    return images, difficulty, factors, sources, digit


def cluttered_digits(seed=CLUTTERED_SEED, sizes=None):
    """The cluttered-digits splits, generated once per process per (seed, sizes): `{split: ClutteredSplit}`.

    Source digits are first split 70/15/15 (stratified, the `digits` split) so that no split's images,
    fragments included, use another split's source digits; each split then draws from its own
    `np.random.default_rng([seed, split number])`, so its images do not depend on the other splits' sizes.
    """
    import numpy as np
    from sklearn.datasets import load_digits

    sizes = dict(CLUTTERED_SIZES if sizes is None else sizes)
    if sorted(sizes) != sorted(SPLITS) or any(not isinstance(v, int) or v < 1 for v in sizes.values()):
        raise DataError(f"sizes must map {', '.join(SPLITS)} to ints >= 1; received sizes={sizes!r}")
    key = (seed, tuple(sorted(sizes.items())))
    if key not in _CLUTTERED_CACHE:
        digits = load_digits()
        labels = digits.target.astype(np.int32)
        strokes = (digits.images / 16.0).astype(np.float32)
        out = {}
        for i, (split, pool) in enumerate(_split_indices(labels).items()):
            rng = np.random.default_rng([seed, i])
            images, difficulty, factors, sources, digit = _clutter_split(rng, pool, strokes, sizes[split])
            out[split] = ClutteredSplit(images, labels[digit], difficulty, factors, sources)
        _CLUTTERED_CACHE[key] = out
    return _CLUTTERED_CACHE[key]


def difficulty_bucket(difficulty):
    """`easy|medium|hard` for each difficulty value (cut at `DIFFICULTY_THRESHOLDS`)."""
    import numpy as np

    return np.asarray(DIFFICULTY_BUCKETS)[np.digitize(np.asarray(difficulty), DIFFICULTY_THRESHOLDS)]


def difficulty(name, split, limit=None):
    """Per-example difficulty in [0, 1], in the order `load(name, split, shuffle=False, limit=limit)` serves."""
    if name != CLUTTERED:
        raise DataError(f"dataset name={name!r} records no per-example difficulty; only {CLUTTERED!r} does")
    if split not in SPLITS:
        raise DataError(f"unknown split={split!r}; valid: {', '.join(SPLITS)}")
    _check_limit(limit)
    return cluttered_digits()[split].difficulty[:limit].copy()


# ---------------------------------------------------------------- normalisation statistics

_STATS_CACHE: dict = {}


def _channel_stats(images):
    """Per-channel mean/std of images in [0, 1] (uint8 images: of the values / 255, from a histogram)."""
    import numpy as np

    if images.dtype == np.uint8:  # exact, without a float64 copy of the whole split
        values = np.arange(256) / 255.0
        hist = [np.bincount(images[..., c].ravel(), minlength=256) for c in range(images.shape[-1])]
        mean = [float(h @ values / h.sum()) for h in hist]
        std = [float(np.sqrt(h @ (values - m) ** 2 / h.sum())) for h, m in zip(hist, mean)]
    else:
        flat = images.reshape(-1, images.shape[-1]).astype(np.float64)
        mean, std = flat.mean(0), flat.std(0)
    return [round(float(v), 6) for v in mean], [round(max(float(v), 1e-3), 6) for v in std]


# ---------------------------------------------------------------- public API

def _check_limit(limit):
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1):
        raise DataError(f"limit must be an int >= 1 or None; received limit={limit!r}")


def mixup_batch(images, labels, alpha, num_classes):
    """Mixup (Zhang et al., ICLR 2018) of one batch: ``lam ~ Beta(alpha, alpha)``, each image mixed with the
    image of a random permutation of the batch, ``lam * x + (1 - lam) * x[perm]``, and the labels likewise as
    soft labels ``lam * onehot(y) + (1 - lam) * onehot(y[perm])`` (float, (batch, num_classes)). Returns
    (images, soft labels); the recipes' losses take soft labels (`recipes.losses.cross_entropy`)."""
    tf = _tf()
    a = tf.random.gamma([], alpha)
    b = tf.random.gamma([], alpha)
    lam = a / (a + b)  # Beta(alpha, alpha) as a ratio of two Gamma(alpha) draws
    perm = tf.random.shuffle(tf.range(tf.shape(images)[0]))
    onehot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes)
    mixed = lam * images + (1.0 - lam) * tf.gather(images, perm)
    return mixed, lam * onehot + (1.0 - lam) * tf.gather(onehot, perm)


def load(name="digits", split="train", image_size=32, batch_size=64, augment=False, data_dir=None,
         shuffle=None, channels=None, repeat=False, limit=None, drop_remainder=False, mixup=0.0):
    """Return `(dataset, DatasetInfo)` for `split` of dataset `name` (see module docstring).

    `image_size` is an int or (H, W); `channels` forces 1 or 3 channels; `shuffle` defaults to True for
    the train split; `limit` (an int >= 1 or None) keeps only the first N examples of each split
    (smoke tests), and `info.num_examples` reports those trimmed counts (the schedules are planned on them).
    `drop_remainder=True` serves only full batches (a static batch size, as XLA-compiled steps need).
    `mixup=alpha` (> 0, train split only) serves Mixup batches with soft labels (`mixup_batch`).
    """
    tf = _tf()
    if split not in SPLITS:
        raise DataError(f"unknown split={split!r}; valid: {', '.join(SPLITS)}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or any(not isinstance(s, int) or s < 8 for s in size):
        raise DataError(f"image_size must be an int >= 8 or (H, W); received image_size={image_size!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive int; received batch_size={batch_size!r}")
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1, 3 or None; received channels={channels!r}")
    _check_limit(limit)
    if not isinstance(drop_remainder, bool):
        raise DataError(f"drop_remainder must be a bool; received drop_remainder={drop_remainder!r}")
    aug = Augment.parse(augment, size[0])
    if isinstance(mixup, bool) or not isinstance(mixup, (int, float)) or not 0 <= mixup <= 10:
        raise DataError(f"mixup must be a Beta alpha in [0, 10] (0 = off); received mixup={mixup!r}")
    shuffle = split == "train" if shuffle is None else shuffle

    def to_unit(img, y):  # uint8 images -> [0, 1]
        return tf.cast(img, tf.float32) / 255.0, tf.cast(y, tf.int32)

    if name in ("digits", CLUTTERED):  # in-memory arrays: [0, 1] float (digits) or uint8 (cluttered)
        if name == "digits":
            arrays, class_names = _digits()
        else:
            arrays = {s: (part.images, part.labels) for s, part in cluttered_digits().items()}
            class_names = tuple(str(i) for i in range(10))
        images, labels = arrays[split]
        native_c = images.shape[-1]
        if name not in _STATS_CACHE:
            _STATS_CACHE[name] = _channel_stats(arrays["train"][0])
        mean, std = _STATS_CACHE[name]
        counts = {s: len(a[1]) for s, a in arrays.items()}
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        if images.dtype.name == "uint8":
            ds = ds.map(to_unit, num_parallel_calls=tf.data.AUTOTUNE)
    elif isinstance(name, str) and name.startswith("folder:"):
        path = name[len("folder:"):]
        arrays, class_names = _folder(path)
        files, labels = arrays[split]
        counts = {s: len(a[1]) for s, a in arrays.items()}
        native_c = 3
        mean, std = [0.5] * 3, [0.25] * 3

        def read(f, y):
            img = tf.io.decode_image(tf.io.read_file(f), channels=3, expand_animations=False)
            return tf.cast(img, tf.float32) / 255.0, y

        ds = tf.data.Dataset.from_tensor_slices((files, labels)).map(read, num_parallel_calls=tf.data.AUTOTUNE)
    elif isinstance(name, str) and name and not name.startswith(("folder", "/")) and ":" not in name:
        if data_dir is not None and not Path(data_dir).expanduser().is_dir():
            raise DataError(f"data_dir={data_dir!r} does not exist; pass the folder that holds the prepared TFDS data")
        raw, class_names, count = _tfds(name, split, data_dir)
        spec = raw.element_spec[0]
        native_c = spec.shape[-1] or 3
        counts = {split: count}
        mean, std = [0.5] * native_c, [0.25] * native_c
        ds = raw.map(to_unit, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        raise DataError(f"unknown dataset name={name!r}; use 'digits', '{CLUTTERED}', a TFDS name, or 'folder:PATH'")

    if limit is not None:
        counts = {s: None if n is None else min(int(limit), n) for s, n in counts.items()}
    out_c = channels or native_c
    if out_c != native_c:
        mean, std = (mean * out_c)[:out_c], (std * out_c)[:out_c]
    info = DatasetInfo(
        name=name, num_classes=len(class_names), class_names=tuple(class_names),
        input_shape=(size[0], size[1], out_c),
        normalization={"input_range": [0.0, 1.0], "mean": list(mean), "std": list(std)},
        num_examples=counts, generator_version=generator_version(name),
    )
    mean_t = tf.constant(mean, tf.float32)
    std_t = tf.constant(std, tf.float32)

    def prepare(img, y):
        img = tf.image.resize(img, size, method="bilinear")
        if out_c == 3 and native_c == 1:
            img = tf.image.grayscale_to_rgb(img)
        elif out_c == 1 and native_c == 3:
            img = tf.image.rgb_to_grayscale(img)
        img = tf.ensure_shape(img, (size[0], size[1], out_c))
        return (img - mean_t) / std_t, tf.cast(y, tf.int32)

    def augment_fn(img, y):
        if aug.crop:
            img = tf.pad(img, [[aug.crop, aug.crop], [aug.crop, aug.crop], [0, 0]], mode="SYMMETRIC")
            img = tf.image.random_crop(img, (size[0], size[1], out_c))
        if aug.flip:
            img = tf.image.random_flip_left_right(img)
        if aug.brightness:
            img = img + tf.random.uniform([], -aug.brightness, aug.brightness)
        return img, y

    if limit is not None:
        ds = ds.take(int(limit))
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if shuffle:
        ds = ds.shuffle(4096, seed=SEED, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if aug.active and split == "train":
        ds = ds.map(augment_fn, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if mixup and split == "train":
        alpha, classes = float(mixup), info.num_classes
        ds = ds.map(lambda x, y: mixup_batch(x, y, alpha, classes), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE), info


def as_numpy(name="digits", split="validation", image_size=32, limit=None, with_difficulty=False, **kwargs):
    """The whole split as `(images, labels, info)` NumPy arrays (evaluation, parity checks, calibration).

    `with_difficulty=True` appends each example's difficulty (`difficulty()`; `cluttered-digits` only).
    """
    import numpy as np

    ds, info = load(name, split, image_size=image_size, batch_size=256, augment=False, shuffle=False,
                    limit=limit, **kwargs)
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if with_difficulty:
        return np.concatenate(xs), np.concatenate(ys), info, difficulty(name, split, limit=limit)
    return np.concatenate(xs), np.concatenate(ys), info


def default_data_dir():
    """`--data-dir` default: $TFDS_DATA_DIR or ~/tensorflow_datasets (TFDS' own default)."""
    return os.environ.get("TFDS_DATA_DIR")
