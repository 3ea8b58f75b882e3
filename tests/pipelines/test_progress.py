"""Long work reports progress: one line per epoch of the QAT fine-tune (`pipelines.export.convert.epoch_progress`)."""
import numpy as np


def test_epoch_progress_prints_one_line_per_epoch():
    from keras_layers import env  # noqa: F401
    import tf_keras as keras

    from pipelines.export.convert import epoch_progress

    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    net.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    lines = []
    net.fit(np.zeros((8, 4), np.float32), np.zeros(8, np.int64), epochs=3, verbose=0,
            callbacks=[epoch_progress("QAT fine-tune", 3, lines.append)])
    assert [l.split(":")[0] for l in lines] == [f"QAT fine-tune epoch {i}/3" for i in (1, 2, 3)]
    assert all("loss " in l and l.endswith(" s)") for l in lines), lines
