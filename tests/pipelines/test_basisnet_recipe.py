import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from pipelines.experiments import basisnet as ev
from pipelines.training import recipes
from pipelines.training.recipes.base import TrainingModel
from pipelines.training.recipes.basisnet import (EpsilonMixing, EpsilonSchedule, drop_bases, load_teacher, mix_uniform,
                                        random_drop_bases)

from tests.pipelines.basisnet_toys import SHAPE, toy_basisnet

L = keras.layers


def np_ce(labels, logits, smoothing=0.0):
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    target = np.eye(logits.shape[-1])[labels] * (1 - smoothing) + smoothing / logits.shape[-1]
    return float(-(target * logp).sum(-1).mean())


def np_kd(student, teacher, t):
    def logsm(z):
        z = z / t
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    pt = np.exp(logsm(teacher))
    return float(t * t * (pt * (logsm(teacher) - logsm(student))).sum(-1).mean())


@pytest.fixture(scope="module")
def batch():
    rs = np.random.RandomState(0)
    return rs.randn(6, *SHAPE).astype("float32"), rs.randint(0, 3, 6).astype("int32")


# -- coefficient transforms and the epsilon schedule ---------------------------------------------------
def test_mix_uniform_hand_values():
    alpha = tf.constant([[0.7, 0.2, 0.1]])
    np.testing.assert_allclose(mix_uniform(alpha, 0.5).numpy(), [[0.5 / 3 + 0.35, 0.5 / 3 + 0.1, 0.5 / 3 + 0.05]],
                               rtol=1e-6)
    np.testing.assert_allclose(mix_uniform(alpha, 1.0).numpy(), [[1 / 3] * 3], rtol=1e-6)
    np.testing.assert_allclose(mix_uniform(alpha, 0.0).numpy(), alpha.numpy())


def test_drop_bases_hand_values():
    alpha = tf.constant([[[0.5, 0.3, 0.2], [0.6, 0.4, 0.0]]])
    keep = tf.constant([[[1, 0, 1], [0, 0, 1]]])
    out = drop_bases(alpha, keep).numpy()
    np.testing.assert_allclose(out[0, 0], [0.5 / 0.7, 0.0, 0.2 / 0.7], rtol=1e-6)  # renormalised to the old total
    np.testing.assert_allclose(out[0, 1], [0.6, 0.4, 0.0])  # only zero weight kept: unchanged
    sig = tf.constant([[0.8, 0.4]])  # sigmoid coefficients keep their (non-unit) total
    np.testing.assert_allclose(drop_bases(sig, tf.constant([[0, 1]])).numpy(), [[0.0, 1.2]], rtol=1e-6)


def test_random_drop_bases_keeps_totals_and_drops_about_the_rate():
    alpha = tf.nn.softmax(tf.random.stateless_normal((2000, 2, 4), seed=(1, 2)))
    assert random_drop_bases(alpha, 0.0) is alpha
    out = random_drop_bases(alpha, 0.5, seed=3).numpy()
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)
    zero = (out == 0).mean()
    assert 0.4 < zero < 0.5  # 0.5 dropped, minus the rows where everything would have been


def test_epsilon_schedule_values():
    s = EpsilonSchedule(10)
    np.testing.assert_allclose([float(s(i)) for i in (0, 2, 5, 10, 11, 1000)], [1.0, 0.8, 0.5, 0.0, 0.0, 0.0],
                               atol=1e-7)
    assert float(EpsilonSchedule(0)(0)) == 0.0  # off
    var = tf.Variable(0.0)
    cb = EpsilonMixing(var, fraction=0.25, steps_per_epoch=4, epochs=10)
    cb.on_train_begin()
    assert float(var.numpy()) == 10.0
    assert float(EpsilonSchedule(var)(4)) == pytest.approx(0.6)


# -- losses --------------------------------------------------------------------------------------------
def test_inference_loss_is_ce_plus_lambda_ce(batch):
    x, y = batch
    net = toy_basisnet()
    recipe = recipes.get("basisnet", preview_weight=0.3, label_smoothing=0.1, basis_dropout=0.5)
    model = TrainingModel(net, recipe)
    out = recipe.compute(model, x, y, training=False)  # no smoothing, mixing or dropout in evaluation
    ref = net(x)
    expected = np_ce(y, ref["logits"].numpy()) + 0.3 * np_ce(y, ref["preview_logits"].numpy())
    assert float(out.loss) == pytest.approx(expected, rel=1e-5)
    assert set(out.predictions) == {"logits", "preview_logits"}


def test_training_loss_uses_mixed_coefficients_and_label_smoothing(batch):
    x, y = batch
    net = toy_basisnet()
    recipe = recipes.get("basisnet", preview_weight=0.5, label_smoothing=0.1, epsilon_fraction=0.5)
    model = TrainingModel(net, recipe)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    for cb in recipe.callbacks(model, steps_per_epoch=10, epochs=2):  # decay over 10 steps; at step 0 eps = 1
        cb.on_train_begin()
    out = recipe.compute(model, x, y, training=True)
    preview, specialist = net.get_layer("preview"), net.get_layer("specialist")
    uniform = np.full((6, 2, 3), 1 / 3, "float32")
    logits = specialist([x, uniform]).numpy()
    expected = np_ce(y, logits, 0.1) + 0.5 * np_ce(y, preview(x)["preview_logits"].numpy(), 0.1)
    assert float(out.loss) == pytest.approx(expected, rel=1e-5)
    assert float(out.logs["epsilon"]) == 1.0
    model.optimizer.iterations.assign(5)  # half way: eps = 0.5
    out = recipe.compute(model, x, y, training=True)
    alpha = preview(x)["coefficients"].numpy()
    logits = specialist([x, 0.5 / 3 + 0.5 * alpha]).numpy()
    assert float(out.logs["ce"]) == pytest.approx(np_ce(y, logits, 0.1), rel=1e-5)


def teacher_model(classes=3):
    image = keras.Input(SHAPE, name="image")
    return keras.Model(image, L.Dense(classes)(L.Flatten()(image)), name="teacher")


def test_distillation_hand_values_and_no_gradient_to_the_teacher(batch):
    x, y = batch
    net, teacher = toy_basisnet(), teacher_model()
    before = [w.copy() for w in teacher.get_weights()]
    recipe = recipes.get("basisnet", teacher=teacher, kd_weight=0.4, kd_temperature=2.0, epsilon_fraction=0.0,
                         preview_weight=1.0)
    model = TrainingModel(net, recipe)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    t = teacher(x).numpy()
    ref = net(x)
    expected = sum(0.6 * np_ce(y, ref[k].numpy()) + 0.4 * np_kd(ref[k].numpy(), t, 2.0)
                   for k in ("logits", "preview_logits"))
    with tf.GradientTape(persistent=True) as tape:
        out = recipe.compute(model, x, y, training=True)
    assert float(out.loss) == pytest.approx(expected, rel=1e-5)
    assert all(g is None for g in tape.gradient(out.loss, teacher.weights))
    assert all(g is not None for g in tape.gradient(out.loss, net.trainable_variables))
    teacher_ids = {id(v) for v in teacher.weights}
    assert not teacher_ids & {id(v) for v in recipe.trainable_variables(model)}
    model.train_step((tf.constant(x), tf.constant(y)))
    for a, b in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_load_teacher_from_file_and_run_dir(tmp_path, batch):
    x, _ = batch
    teacher = teacher_model()
    (tmp_path / "run").mkdir()
    teacher.save(tmp_path / "run" / "model.keras")
    for source in (str(tmp_path / "run" / "model.keras"), str(tmp_path / "run")):
        loaded = load_teacher(source)
        assert not loaded.trainable
        np.testing.assert_allclose(loaded(x).numpy(), teacher(x).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="teacher="):
        load_teacher(str(tmp_path / "missing.keras"))


@pytest.mark.parametrize("field,value", [
    ("preview_weight", -1.0), ("basis_dropout", 1.5), ("epsilon_fraction", 2.0), ("kd_weight", 1.5),
    ("kd_temperature", 0.0), ("label_smoothing", 0.9), ("weight_decay", -1.0),
])
def test_bad_recipe_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        recipes.get("basisnet", **{field: value})


def test_kd_needs_a_teacher_and_recipe_is_the_default():
    with pytest.raises(ValueError, match="teacher=''"):
        recipes.get("basisnet", kd_weight=0.5)
    assert recipes.for_model("basisnet_mobilenet_v3") == "basisnet"
    with pytest.raises(ValueError, match="not a BasisNet"):
        TrainingModel(teacher_model(), recipes.get("basisnet"))


# -- early termination and disturbance -----------------------------------------------------------------
def constructed():
    """6 examples: the preview is confident (0.95) and right on 0-2, confident and wrong on 3, unsure (0.6)
    and wrong on 4, unsure and right on 5; the specialist is right everywhere except example 5."""
    preview = np.array([[0.95, 0.05], [0.05, 0.95], [0.95, 0.05], [0.95, 0.05], [0.4, 0.6], [0.4, 0.6]])
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.9, 0.1]])
    labels = np.array([0, 1, 0, 1, 0, 1])
    return {"preview_probs": preview, "probs": probs}, labels, {"preview": 10.0, "full": 110.0}


def test_threshold_sweep_on_a_constructed_example():
    outputs, labels, madds = constructed()
    table = ev.early_termination(outputs, labels, madds, thresholds=[0.0, 0.5, 0.9, 1.0])
    assert table["reference_accuracy"] == pytest.approx(5 / 6)
    assert table["preview_accuracy"] == pytest.approx(4 / 6)
    # t=0 and t=0.5: the preview answers all (max prob >= 0.6 everywhere); t=0.9: examples 0-3; t=1: none
    np.testing.assert_allclose(table["stopped"], [1.0, 1.0, 4 / 6, 0.0])
    np.testing.assert_allclose(table["accuracy"], [4 / 6, 4 / 6, 4 / 6, 5 / 6])
    np.testing.assert_allclose(table["madds"], [10.0, 10.0, 10 + (2 / 6) * 100, 110.0])


def test_pick_threshold_respects_the_allowed_drop():
    # all labels 0; the specialist is always right; the preview is right at 0.95 (x2), wrong at 0.7 and 0.6
    labels = np.zeros(4, int)
    outputs = {"probs": np.array([[0.9, 0.1]] * 4),
               "preview_probs": np.array([[0.95, 0.05], [0.95, 0.05], [0.3, 0.7], [0.4, 0.6]])}
    madds = {"preview": 10.0, "full": 110.0}
    table = ev.early_termination(outputs, labels, madds, thresholds=[0.0, 0.65, 0.9, 1.0])
    np.testing.assert_allclose(table["accuracy"], [0.5, 0.75, 1.0, 1.0])
    best = ev.pick_threshold(table, max_drop=0.0)  # t=0.9: half stop early at no accuracy cost
    assert best["threshold"] == 0.9 and best["accuracy_drop"] == pytest.approx(0.0)
    assert best["madds"] == pytest.approx(10 + 0.5 * 100) and best["madds_saving"] == pytest.approx(1 - 60 / 110)
    mid = ev.pick_threshold(table, max_drop=0.25)  # one mistake allowed -> t=0.65, 3 of 4 stop
    assert mid["threshold"] == 0.65 and mid["madds"] == pytest.approx(35.0)
    loose = ev.pick_threshold(table, max_drop=0.5)
    assert loose["threshold"] == 0.0 and loose["madds"] == pytest.approx(10.0)
    at = ev.apply_threshold(outputs, labels, madds, 0.9)
    assert at["stopped"] == pytest.approx(0.5) and at["reference_accuracy"] == pytest.approx(1.0)


def test_pick_threshold_keeps_a_minimum_share_on_the_specialist():
    """The demo's bug: when the preview is as accurate as the full BasisNet (digits after a few epochs), the
    paper's rule picks 0.00 and the specialist never runs on the phone; the export's rule (`min_past`) takes
    the cheapest threshold that still sends at least that share of the images on to the specialist."""
    labels = np.zeros(10, int)
    conf = np.array([0.52, 0.63, 0.68, 0.73, 0.78, 0.83, 0.88, 0.93, 0.97, 0.99])
    outputs = {"probs": np.array([[0.9, 0.1]] * 10), "preview_probs": np.stack([conf, 1 - conf], axis=1)}
    madds = {"preview": 10.0, "full": 110.0}
    table = ev.early_termination(outputs, labels, madds)
    paper = ev.pick_threshold(table)
    assert paper["threshold"] == 0.0 and paper["stopped"] == 1.0  # everything stops at the preview
    deployed = ev.pick_threshold(table, min_past=0.1)
    assert deployed["threshold"] == pytest.approx(0.55) and deployed["stopped"] == pytest.approx(0.9)
    assert deployed["madds"] == pytest.approx(20.0) and deployed["accuracy"] == 1.0
    assert ev.pick_threshold(table, min_past=0.3)["stopped"] == pytest.approx(0.7)
    # the preview wrong on its least confident image: 0.5 points allowed keeps 10% on, 0 points keeps it right
    outputs["preview_probs"][0] = [0.48, 0.52]
    table = ev.early_termination(outputs, labels, madds)
    assert ev.pick_threshold(table, max_drop=0.0, min_past=0.1)["threshold"] == pytest.approx(0.55)
    with pytest.raises(ValueError, match="min_past=1.5"):
        ev.pick_threshold(table, min_past=1.5)


def brute_force_pick(conf, preview_ok, final_ok, madds, max_drop, min_past):
    """The cheapest stop set within `max_drop` of the full net among those sending >= `min_past` on, tried at
    every threshold 0, each confidence and 1 + (plain loops; ties to the more accurate): (stopped, accuracy)."""
    best = None
    for t in [0.0, *conf, 1.0 + 1e-9]:
        stop = conf >= t
        acc = np.where(stop, preview_ok, final_ok).mean()
        cost = madds["preview"] + (1 - stop.mean()) * (madds["full"] - madds["preview"])
        if 1 - stop.mean() >= min_past - 1e-12 and acc >= final_ok.mean() - max_drop - 1e-12:
            if best is None or (cost, -acc) < (best[0], -best[2]):
                best = (cost, stop.mean(), acc)
    return best[1], best[2]


def test_select_tries_every_stop_set_not_only_the_grid():
    """A trained preview's confidences crowd between 0.9 and 1.0, where the grid steps by 0.05: the examples'
    own confidences are tried too, so the pick is the brute-force optimum (more images stop than at any grid
    threshold within the drop) and its threshold sits midway between two examples' confidences."""
    rng = np.random.RandomState(3)
    n = 400
    conf = np.clip(1 - rng.exponential(0.06, n), 0.5, 0.99999)
    preview_ok = rng.rand(n) < conf ** 4          # the more confident, the likelier right
    final_ok = preview_ok | (rng.rand(n) < 0.5)    # the specialist fixes half of the preview's mistakes
    labels = np.zeros(n, int)
    outputs = {"preview_probs": np.stack([np.where(preview_ok, conf, 1 - conf), np.where(preview_ok, 1 - conf, conf)], 1),
               "probs": np.stack([final_ok, ~final_ok], 1).astype(float) * 0.8 + 0.1}
    madds = {"preview": 10.0, "full": 110.0}
    for max_drop, min_past in ((0.005, 0.0), (0.0, 0.1), (0.02, 0.1)):
        picked = ev.select(outputs, labels, madds, max_drop, min_past)
        stopped, accuracy = brute_force_pick(conf, preview_ok, final_ok, madds, max_drop, min_past)
        assert (picked["stopped"], picked["accuracy"]) == pytest.approx((stopped, accuracy))
        assert picked["reference_accuracy"] == pytest.approx(final_ok.mean())
        assert not np.isin(picked["threshold"], conf)  # midway between two confidences, not on one
        again = ev.apply_threshold(outputs, labels, madds, picked["threshold"])
        assert (again["stopped"], again["accuracy"]) == pytest.approx((stopped, accuracy))
    grid = ev.pick_threshold(ev.early_termination(outputs, labels, madds), 0.005)
    assert ev.select(outputs, labels, madds, 0.005)["stopped"] > grid["stopped"]  # the grid alone stops fewer


def test_fine_thresholds_cap_the_candidates_at_quantiles():
    from pipelines.export.families.basisnet import DEFAULT_THRESHOLDS, fine_thresholds

    conf = np.linspace(0.3, 1.0, 50)
    assert set(conf) | set(DEFAULT_THRESHOLDS) == set(fine_thresholds(conf))
    many = np.random.RandomState(0).rand(5000)
    cands = fine_thresholds(many, levels=101)
    assert len(cands) <= 101 + len(DEFAULT_THRESHOLDS) and cands.min() >= 0 and cands.max() <= 1


@pytest.mark.parametrize("value", [1.5, -0.1])
def test_threshold_outside_unit_interval(value):
    outputs, labels, madds = constructed()
    with pytest.raises(ValueError, match=f"threshold={value!r}"):
        ev.early_termination(outputs, labels, madds, thresholds=[0.5, value])
    with pytest.raises(ValueError, match=f"threshold={value!r}"):
        ev.apply_threshold(outputs, labels, madds, value)
    with pytest.raises(ValueError, match="max_drop=2"):
        ev.pick_threshold(ev.early_termination(outputs, labels, madds, [0.5]), max_drop=2)


def test_disturbed_coefficients():
    alpha = np.array([[[0.7, 0.2, 0.1]], [[0.1, 0.1, 0.8]], [[0.3, 0.4, 0.3]]], "float32")
    np.testing.assert_array_equal(ev.disturbed_coefficients(alpha, "top1")[:, 0], np.eye(3)[[0, 2, 1]])
    np.testing.assert_allclose(ev.disturbed_coefficients(alpha, "mean")[1, 0], alpha.mean(0)[0])
    np.testing.assert_allclose(ev.disturbed_coefficients(alpha, "uniform"), np.full((3, 1, 3), 1 / 3))
    shuffled = ev.disturbed_coefficients(alpha, "shuffled", seed=1)
    assert sorted(map(tuple, shuffled[:, 0])) == sorted(map(tuple, alpha[:, 0]))
    with pytest.raises(ValueError, match="disturbance='noise'"):
        ev.disturbed_coefficients(alpha, "noise")


def test_disturbance_and_predict_on_a_net(batch):
    x, y = batch
    net = toy_basisnet()
    result = ev.disturbance(net, x, y)
    assert set(result) == set(ev.DISTURBANCES)
    out = ev.predict(net, x, batch_size=4)
    assert result["predicted"] == pytest.approx(float((out["probs"].argmax(-1) == y).mean()))
    np.testing.assert_allclose(out["preview_probs"].sum(-1), 1.0)
    assert out["coefficients"].shape == (6, 2, 3)


def test_train_end_to_end_logs_both_accuracies(tmp_path):
    import json

    from pipelines.training.train import TrainConfig, train

    cfg = TrainConfig(model="basisnet_mobilenet_v3", epochs=2, batch_size=32, limit=64, out=str(tmp_path),
                      run_name="b", model_config={"num_bases": 2, "width_multiplier": 0.25, "head_channels": 64,
                                                  "last_channels": 64, "preview_blocks": 2},
                      recipe_config={"basis_dropout": 0.2, "epsilon_fraction": 0.5})
    metrics, run_dir, net = train(cfg, verbose=0)
    history = json.loads((run_dir / "history.json").read_text())
    assert {"accuracy", "preview_logits_accuracy", "val_preview_logits_accuracy", "epsilon"} <= set(history)
    # eps decays over half of the planned steps; `limit` trims the split sizes the schedules read, so a
    # limited run plans on the 2 steps per epoch it runs and its schedules finish (eps reaches 0)
    from pipelines import data
    from pipelines.training.train import steps_per_epoch

    planned = steps_per_epoch(data.load("digits", "train", batch_size=32, limit=64)[1], 32)

    def expected(steps_per_epoch):  # per-epoch means of eps over the 2 steps of each epoch
        decay = round(0.5 * steps_per_epoch * 2)
        return [np.mean([max(0.0, 1 - s / decay) for s in steps]) for steps in ((0, 1), (2, 3))]

    assert planned == 2 and expected(planned) == [0.75, 0.0]
    np.testing.assert_allclose(history["epsilon"], expected(planned), atol=1e-6)
    assert metrics["madds"] == ev.stage_madds(net, (32, 32, 1))["full"]

