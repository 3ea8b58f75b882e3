"""Datasets as `tf.data` pipelines of `(image float32 NHWC, int32 label)`, one path for every source.

    ds, info = load("digits", "train", image_size=32, batch_size=64, augment=True)

Names:
* ``digits`` - scikit-learn's `load_digits` (ships with the package; the embedded default): 1,797
  8x8 grey images, split 70/15/15 into train/validation/test with a fixed seed, resized.
* any TFDS name - read with ``download=False`` from ``data_dir`` (``--data-dir``); nothing is fetched.
* ``folder:PATH`` - one sub-folder of images per class; split 70/15/15 with a fixed seed, or taken
  from ``PATH/train``, ``PATH/validation``, ``PATH/test`` when those exist.

Images are scaled to [0, 1] then normalised with the dataset's mean/std, which `info.normalization`
reports (the Android app applies the same). Augmentation is TF ops only (random crop after padding,
horizontal flip, brightness) and is switched per recipe.
"""
from __future__ import annotations

import dataclasses
import numbers
import os
from pathlib import Path

import pipelines  # noqa: F401  (TF_USE_LEGACY_KERAS)

SPLITS = ("train", "validation", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SEED = 1234


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
    from keras_layers import _env  # noqa: F401  (quiet TensorFlow import, Keras 2)
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


def _folder(path):
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder:{path} does not exist; give folder:PATH with one sub-folder of images per class")

    def scan(directory):
        classes = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
        files, labels = [], []
        for label, cls in enumerate(classes):
            for f in sorted((directory / cls).rglob("*")):
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    files.append(str(f))
                    labels.append(label)
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


# ---------------------------------------------------------------- normalisation statistics

_STATS_CACHE: dict = {}


def _channel_stats(images):
    import numpy as np

    flat = images.reshape(-1, images.shape[-1]).astype(np.float64)
    return [round(float(v), 6) for v in flat.mean(0)], [round(max(float(v), 1e-3), 6) for v in flat.std(0)]


# ---------------------------------------------------------------- public API

def load(name="digits", split="train", image_size=32, batch_size=64, augment=False, data_dir=None,
         shuffle=None, channels=None, repeat=False, limit=None):
    """Return `(dataset, DatasetInfo)` for `split` of dataset `name` (see module docstring).

    `image_size` is an int or (H, W); `channels` forces 1 or 3 channels; `shuffle` defaults to True for
    the train split; `limit` (an int >= 1 or None) keeps only the first N examples of each split
    (smoke tests), and `info.num_examples` reports those trimmed counts (the schedules are planned on them).
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
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1):
        raise DataError(f"limit must be an int >= 1 or None; received limit={limit!r}")
    aug = Augment.parse(augment, size[0])
    shuffle = split == "train" if shuffle is None else shuffle

    if name == "digits":
        arrays, class_names = _digits()
        images, labels = arrays[split]
        native_c = 1
        if "digits" not in _STATS_CACHE:
            _STATS_CACHE["digits"] = _channel_stats(arrays["train"][0])
        mean, std = _STATS_CACHE["digits"]
        counts = {s: len(a[1]) for s, a in arrays.items()}
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
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

        def scale(img, y):
            return tf.cast(img, tf.float32) / 255.0, tf.cast(y, tf.int32)

        ds = raw.map(scale, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        raise DataError(f"unknown dataset name={name!r}; use 'digits', a TFDS name, or 'folder:PATH'")

    if limit is not None:
        counts = {s: None if n is None else min(int(limit), n) for s, n in counts.items()}
    out_c = channels or native_c
    if out_c != native_c:
        mean, std = (mean * out_c)[:out_c], (std * out_c)[:out_c]
    info = DatasetInfo(
        name=name, num_classes=len(class_names), class_names=tuple(class_names),
        input_shape=(size[0], size[1], out_c),
        normalization={"input_range": [0.0, 1.0], "mean": list(mean), "std": list(std)},
        num_examples=counts,
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
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return ds, info


def as_numpy(name="digits", split="validation", image_size=32, limit=None, **kwargs):
    """The whole split as `(images, labels)` NumPy arrays (evaluation, parity checks, calibration)."""
    import numpy as np

    ds, info = load(name, split, image_size=image_size, batch_size=256, augment=False, shuffle=False,
                    limit=limit, **kwargs)
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys), info


def default_data_dir():
    """`--data-dir` default: $TFDS_DATA_DIR or ~/tensorflow_datasets (TFDS' own default)."""
    return os.environ.get("TFDS_DATA_DIR")
