import numpy as np
import pytest

from pipelines import data


def test_digits_splits_are_fixed_disjoint_and_complete():
    x_tr, y_tr, info = data.as_numpy("digits", "train")
    x_va, y_va, _ = data.as_numpy("digits", "validation")
    x_te, y_te, _ = data.as_numpy("digits", "test")
    assert len(y_tr) + len(y_va) + len(y_te) == 1797
    assert info.num_examples == {"train": len(y_tr), "validation": len(y_va), "test": len(y_te)}
    assert info.num_classes == 10 and info.input_shape == (32, 32, 1)
    assert x_tr.dtype == np.float32 and x_tr.shape[1:] == (32, 32, 1)
    # stratified: every class in every split
    assert set(y_va) == set(range(10)) == set(y_te)
    # same call, same split
    x_va2, y_va2, _ = data.as_numpy("digits", "validation")
    np.testing.assert_array_equal(y_va, y_va2)
    np.testing.assert_array_equal(x_va, x_va2)
    # normalised with the train statistics reported in info
    assert abs(float(x_tr.mean())) < 0.05 and 0.75 < float(x_tr.std()) < 1.05  # bilinear upsizing smooths
    assert info.normalization["mean"][0] == pytest.approx(0.3, abs=0.05)


def test_digits_resize_and_channels():
    ds, info = data.load("digits", "validation", image_size=16, batch_size=5, channels=3)
    x, y = next(iter(ds))
    assert x.shape == (5, 16, 16, 3) and info.input_shape == (16, 16, 3)
    assert y.dtype.name == "int32"


def test_augmentation_only_changes_train_images():
    plain, _ = data.load("digits", "train", batch_size=8, shuffle=False, augment=False)
    aug, _ = data.load("digits", "train", batch_size=8, shuffle=False, augment={"crop": 4, "brightness": 0.5})
    (x0, y0), (x1, y1) = next(iter(plain)), next(iter(aug))
    np.testing.assert_array_equal(y0.numpy(), y1.numpy())
    assert not np.allclose(x0.numpy(), x1.numpy())
    val_a, _ = data.load("digits", "validation", batch_size=8, augment=True)
    val_b, _ = data.load("digits", "validation", batch_size=8, augment=False)
    np.testing.assert_array_equal(next(iter(val_a))[0].numpy(), next(iter(val_b))[0].numpy())


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="nosuch"), "name='nosuch'"),
    (dict(name="digits", split="dev"), "split='dev'"),
    (dict(name="digits", image_size=4), "image_size=4"),
    (dict(name="digits", batch_size=0), "batch_size=0"),
    (dict(name="digits", augment=3.0), "augment=3.0"),
    (dict(name="folder:/no/such/dir"), "folder:/no/such/dir"),
    (dict(name="digits", limit=0), "limit=0"),
    (dict(name="digits", limit=-5), "limit=-5"),
    (dict(name="digits", limit=2.5), "limit=2.5"),
])
def test_bad_input_gives_one_line_error(kwargs, match):
    with pytest.raises(data.DataError, match=match) as err:
        data.load(**kwargs)
    assert "\n" not in str(err.value)


def test_limit_trims_the_data_and_the_counts_the_schedules_use():
    from pipelines.training.train import steps_per_epoch

    x, y, info = data.as_numpy("digits", "validation", limit=50)
    assert len(y) == 50
    # every split trimmed alike: the LR schedule reads num_examples["train"] while loading validation too
    assert info.num_examples == {"train": 50, "validation": 50, "test": 50}
    assert steps_per_epoch(info, batch_size=10) == 5
    _, y_all, full = data.as_numpy("digits", "test", limit=10_000)  # a limit above the size keeps all
    assert full.num_examples["test"] == len(y_all) < 10_000


def test_tfds_not_prepared_is_a_clear_error_not_a_download(tmp_path):
    with pytest.raises(data.DataError, match="not prepared") as err:
        data.load("mnist", "train", data_dir=str(tmp_path))
    assert "\n" not in str(err.value)


def test_tfds_missing_data_dir(tmp_path):
    with pytest.raises(data.DataError, match="data_dir"):
        data.load("mnist", "train", data_dir=str(tmp_path / "absent"))


def test_tfds_dataset_through_the_same_path():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        ds, info = data.load("mnist", "train", image_size=32, batch_size=8)
        x, y = next(iter(ds))
        assert x.shape == (8, 32, 32, 1) and x.dtype.name == "float32"
        assert info.num_classes == 10
        val, _ = data.load("mnist", "validation", image_size=32, batch_size=8)  # carved from train
        assert next(iter(val))[0].shape[1:] == (32, 32, 1)


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.RandomState(0)
    for cls in ("cat", "dog", "eel"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.fromarray(rng.randint(0, 255, (12, 10, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    x, y, info = data.as_numpy(f"folder:{tmp_path}", "train", image_size=16)
    assert info.class_names == ("cat", "dog", "eel")
    assert x.shape[1:] == (16, 16, 3) and len(y) == 21
    _, y_va, _ = data.as_numpy(f"folder:{tmp_path}", "validation", image_size=16)
    _, y_te, _ = data.as_numpy(f"folder:{tmp_path}", "test", image_size=16)
    # 10 images a class split 70/15/15 per class: 7 / 2 / 1 of each of the 3 classes
    assert (len(y), len(y_va), len(y_te)) == (21, 6, 3)
    for split in (y, y_va, y_te):
        assert sorted(set(split.tolist())) == [0, 1, 2]


def test_image_folder_needs_classes(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(data.DataError, match="folder:"):
        data.load(f"folder:{tmp_path}")


def _class_folders(root, n=4):
    from PIL import Image

    rng = np.random.RandomState(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.randint(0, 255, (12, 10, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")


def test_folder_refuses_an_undecodable_file_before_training(tmp_path):
    """A text file named .png failed mid-epoch with a traceback; now the dataset is refused up front, naming it."""
    _class_folders(tmp_path)
    (tmp_path / "dog" / "notes.png").write_text("not an image")
    with pytest.raises(data.DataError, match=r"notes\.png"):
        data.load(f"folder:{tmp_path}", "train", image_size=16)


def test_folder_refuses_a_decompression_bomb_from_its_header(tmp_path):
    """A 20000x20000 PNG (a few hundred KB on disk, 1.2 GB decoded) is refused from its header, undecoded."""
    import zlib

    _class_folders(tmp_path)
    w = h = 20000
    raw = zlib.compress(b"".join(b"\x00" + bytes(w) for _ in range(h)), 9)

    def chunk(kind, body):
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0]))
    (tmp_path / "cat" / "bomb.png").write_bytes(png + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    with pytest.raises(data.DataError, match=r"bomb\.png.*(more than|pixels)"):
        data.load(f"folder:{tmp_path}", "train", image_size=16)


def test_folder_refuses_an_empty_class_folder(tmp_path):
    _class_folders(tmp_path)
    (tmp_path / "eel").mkdir()
    with pytest.raises(data.DataError, match=r"class folder .*eel.* has no images"):
        data.load(f"folder:{tmp_path}", "train", image_size=16)
