"""Slimmable / DS-Net recipes against hand-computed losses, BN recalibration, export to TFLite."""
import json

import numpy as np
import pytest

from keras_layers import env  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from keras_layers.models import build
from keras_layers.models import ds_mobilenet_v1 as ds
from keras_layers.slimmable import SwitchableBatchNormalization, set_width
from pipelines.training import recipes
from pipelines.training.bn_recalibration import recalibrate_bn
from pipelines.training.recipes.base import TrainingModel
from pipelines.training.recipes.ds_net import complexity_loss, sgs_loss
from tests.keras_layers.test_slimmable_models import randomize

SHAPE = (8, 8, 1)
rng = np.random.default_rng(0)


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_ce(labels, logits):
    return float(np.mean(-np.log(np_softmax(logits)[np.arange(len(labels)), labels])))


def np_soft_ce(logits, target):
    return float(np.mean(-(target * np.log(np_softmax(logits))).sum(-1)))


def np_kl(student, teacher):
    p = np_softmax(teacher)
    return float(np.mean((p * (np.log(p) - np.log(np_softmax(student)))).sum(-1)))


@pytest.fixture()
def batch():
    return rng.normal(size=(6, *SHAPE)).astype("float32"), rng.integers(0, 10, 6).astype("int32")


def logits_at(net, x, w, training):
    set_width(net, w)
    out = net(x, training=training)
    return (out["logits"] if isinstance(out, dict) else out).numpy()


def test_all_widths_loss_is_the_sum_of_each_width(batch):
    x, y = batch
    net = build("slimmable_mobilenet_v1", SHAPE, 10)
    model = TrainingModel(net, recipes.get("slimmable", rule="all"))
    out = model.recipe.compute(model, x, y, training=True)
    expected = sum(np_ce(y, logits_at(net, x, w, True)) for w in (0.25, 0.5, 0.75, 1.0))
    assert float(out.loss) == pytest.approx(expected, rel=1e-4)
    assert set(out.predictions) == {"logits", "w0_25", "w0_5", "w0_75", "w1"}


def test_sandwich_loss_with_inplace_distillation(batch):
    x, y = batch
    widths = (0.25, 0.5, 1.0)
    net = build("slimmable_mobilenet_v1", SHAPE, 10, width_multipliers=widths)
    model = TrainingModel(net, recipes.get("slimmable", rule="sandwich", num_random=1, distill=0.75))
    out = model.recipe.compute(model, x, y, training=True)
    big = logits_at(net, x, 1.0, True)

    def student(w):
        s = logits_at(net, x, w, True)
        return 0.25 * np_ce(y, s) + 0.75 * np_kl(s, big)

    assert float(out.loss) == pytest.approx(np_ce(y, big) + student(0.5) + student(0.25), rel=1e-4)


def test_ieb_stage1_loss(batch):
    x, y = batch
    widths = (0.25, 0.5, 1.0)
    net = build("ds_mobilenet_v1", SHAPE, 10, width_multipliers=widths, gate_after=3)
    model = TrainingModel(net, recipes.get("ds_net", stage1_fraction=1.0, num_random=1))
    teacher = model.ema_teacher
    for v in teacher.weights:  # a teacher that differs from the online network
        v.assign(v + rng.normal(0, 0.05, v.shape).astype("float32") * (0 if "variance" in v.name else 1))
    out = model.recipe.compute(model, x, y, training=True)
    t_big = np_softmax(logits_at(teacher, x, 1.0, False))
    t_mid = np_softmax(logits_at(teacher, x, 0.5, False))
    expected = (np_ce(y, logits_at(net, x, 1.0, True)) + np_soft_ce(logits_at(net, x, 0.5, True), t_big)
                + np_soft_ce(logits_at(net, x, 0.25, True), (t_big + t_mid) / 2))
    assert float(out.loss) == pytest.approx(expected, rel=1e-4)


def test_ema_update_with_warmup(batch):
    net = build("ds_mobilenet_v1", SHAPE, 10, gate_after=3)
    model = TrainingModel(net, recipes.get("ds_net", stage1_fraction=1.0, ema_decay=0.98))
    teacher_before = [v.numpy().copy() for v in model.ema_teacher.weights]
    for v in net.trainable_weights:
        v.assign(v + 1.0)
    model.recipe.after_step(model)  # step 0: decay min(0.98, 1/10) = 0.1
    for t0, t, s in zip(teacher_before, model.ema_teacher.weights, net.weights):
        np.testing.assert_allclose(t.numpy(), 0.1 * t0 + 0.9 * s.numpy(), atol=1e-5)
    assert int(model.ema_step.numpy()) == 1


def test_stage2_losses_by_hand():
    choice = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], "float32")
    table = np.array([10.0, 20.0, 40.0])
    cplx, madds = complexity_loss(choice, table, 40.0)
    assert float(cplx) == pytest.approx(np.mean((np.array([10, 40, 20]) / 40.0) ** 2))
    np.testing.assert_allclose(madds.numpy(), [10, 40, 20])
    scores = rng.normal(size=(4, 3)).astype("float32")
    slim_logits = np.array([[5, 0], [0, 5], [5, 0], [0, 5]], "float32")
    labels = np.array([0, 0, 1, 1])  # slimmest right on examples 0 and 3 -> easy
    sgs, easy = sgs_loss(scores, slim_logits, labels)
    target = np.array([0, 2, 2, 0])
    assert float(sgs) == pytest.approx(np_ce(target, scores), rel=1e-5)
    assert float(easy) == 0.5


def test_stage2_trains_only_the_gate_and_combines_the_losses(batch):
    x, y = batch
    net = build("ds_mobilenet_v1", SHAPE, 10, gate_after=3)
    recipe = recipes.get("ds_net", stage1_fraction=0.0, cls_weight=2.0, complexity_weight=0.25, sgs_weight=3.0,
                         target_madds=0.5, temperature=0.5)
    model = TrainingModel(net, recipe)
    gate = ds.gate_layer(net)
    assert recipe.stage == 2 and gate.temperature == 0.5
    assert [v.name for v in recipe.trainable_variables(model)] == [gate.w2.name, gate.b2.name]
    assert all(not l.trainable for l in net.layers if l is not gate)
    out = recipe.compute(model, x, y, training=True)
    logs = {k: float(v) for k, v in out.logs.items()}
    assert float(out.loss) == pytest.approx(2.0 * logs["cls"] + 0.25 * logs["cplx"] + 3.0 * logs["sgs"], rel=1e-5)
    table = ds.choice_madds(net, SHAPE)
    assert table[0] / table[-1] <= logs["madds_fraction"] <= 1.0
    # the gate's choice reaches the loss: gradients for the slimming head
    with tf.GradientTape() as tape:
        loss = recipe.compute(model, x, y, training=True).loss
    grads = tape.gradient(loss, recipe.trainable_variables(model))
    assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)


@pytest.mark.parametrize("name,field,value", [
    ("slimmable", "rule", "zigzag"), ("slimmable", "distill", 1.5), ("slimmable", "num_random", -1),
    ("ds_net", "temperature", 0.0), ("ds_net", "target_madds", 0.0), ("ds_net", "ema_decay", 1.0),
    ("ds_net", "stage1_fraction", 2.0), ("ds_net", "complexity_weight", -1.0),
])
def test_bad_recipe_fields(name, field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        recipes.get(name, **{field: value})


def test_default_recipes():
    assert recipes.for_model("slimmable_mobilenet_v1") == "slimmable"
    assert recipes.for_model("ds_mobilenet_v1") == "ds_net"


def test_bn_recalibration_changes_only_the_chosen_width():
    net = build("slimmable_mobilenet_v1", SHAPE, 10)
    batches = [rng.normal(2.0, 1.5, size=(8, *SHAPE)).astype("float32") for _ in range(3)]
    bns = [l for l in net.layers if isinstance(l, SwitchableBatchNormalization)]
    before = {v.name: v.numpy().copy() for v in net.weights}
    assert recalibrate_bn(net, batches + batches, 0.5, num_batches=3) == 3
    changed = {v.name for v in net.weights if not np.array_equal(before[v.name], v.numpy())}
    slot = {v.name for l in bns for v in (l.moving_means[1], l.moving_variances[1])}
    assert changed == slot
    # exact average of the batch statistics of the 3 batches (first BN: after the stem conv)
    stem = net.get_layer("stem_conv")
    feats = [stem(b, width=0.5).numpy() for b in batches]
    np.testing.assert_allclose(bns[0].moving_means[1].numpy(), np.mean([f.mean((0, 1, 2)) for f in feats], 0),
                               atol=1e-5)
    np.testing.assert_allclose(bns[0].moving_variances[1].numpy(), np.mean([f.var((0, 1, 2)) for f in feats], 0),
                               rtol=1e-4)
    with pytest.raises(ValueError, match="width=0.3"):
        recalibrate_bn(net, batches, 0.3)


def test_bn_recalibration_of_a_ds_net_leaves_the_front_alone():
    net = build("ds_mobilenet_v1", SHAPE, 10, gate_after=3)
    plain = [l for l in net.layers if type(l) is keras.layers.BatchNormalization]
    stats = [l.moving_mean.numpy().copy() for l in plain]
    recalibrate_bn(net, [rng.normal(size=(4, *SHAPE)).astype("float32")], 0.25, num_batches=1)
    for l, s in zip(plain, stats):
        np.testing.assert_array_equal(l.moving_mean.numpy(), s)
    assert all(l.trainable for l in plain)  # restored after recalibration


def test_export_a_slimmable_width_as_a_plain_bundle(tmp_path):
    """One width of a slimmable net is a plain bundle of the narrow network. (A DS-Net's bundle, front + gate
    and one back per width: tests/pipelines/test_export_families.py.)"""
    from keras_layers.models.slimmable_mobilenet_v1 import export_width
    from pipelines import export
    from pipelines.export.bundle import Bundle

    x = rng.normal(size=(3, *SHAPE)).astype("float32")
    dataset = {"name": "noise", "input_shape": list(SHAPE), "num_classes": 10}
    options = export.ExportOptions(parity_images=3, latency_runs=2)
    quiet = lambda *_: None  # noqa: E731
    net = randomize(build("slimmable_mobilenet_v1", SHAPE, 10))
    slim = export.export_net(export_width(net, 0.5), tmp_path / "slim", options, dataset, (x, np.zeros(3, int)),
                             log=quiet)
    assert slim["kind"] == "plain"
    set_width(net, 0.5)
    ref = net(x, training=False).numpy()
    preds = Bundle.load(tmp_path / "slim").predict(x)
    np.testing.assert_allclose(np.stack([p.logits for p in preds]), ref, atol=1e-4)
    assert [p.index for p in preds] == list(ref.argmax(-1))
    assert np.abs(ref).max() > 1e-2  # a meaningful comparison


def switchable_stats(net, width):
    from pipelines.training.bn_recalibration import switchable_bn_layers

    return [v.numpy().copy() for layer in switchable_bn_layers(net) for v in layer.slot_variables(width)[-2:]]


def test_ds_net_trains_both_stages_in_one_fit_with_bn_recalibration_between(tmp_path, monkeypatch):
    """One `train` runs Stage I, recalibrates BN of every width at the switch (as the DS-Net experiment does
    between its two fits), then Stage II (supernet frozen: the recalibrated statistics are the final ones)."""
    from pipelines.training import bn_recalibration
    from pipelines.training.train import TrainConfig, train

    calls, real = [], bn_recalibration.recalibrate_bn

    def spy(net, batches, width, num_batches=20, verbose=False):
        before = switchable_stats(net, width)
        seen = real(net, batches, width, num_batches=num_batches, verbose=verbose)
        calls.append({"width": width, "seen": seen, "before": before, "after": switchable_stats(net, width)})
        return seen

    monkeypatch.setattr(bn_recalibration, "recalibrate_bn", spy)
    cfg = TrainConfig(model="ds_mobilenet_v1", image_size=8, epochs=2,
                      model_config={"gate_after": 3, "width_multipliers": [0.5, 1.0], "depth_multiplier": 0.1},
                      batch_size=16, limit=64, out=str(tmp_path),
                      recipe_config={"stage1_fraction": 0.5, "recal_batches": 3})
    metrics, run_dir, net = train(cfg, verbose=0)
    history = json.loads((run_dir / "history.json").read_text())
    assert history["ieb_slimmest"][0] > 0 and history["ieb_slimmest"][1] == 0  # Stage I, then Stage II
    assert history["sgs"][0] == 0 and history["sgs"][1] > 0
    assert [(c["width"], c["seen"]) for c in calls] == [(0.5, 3), (1.0, 3)]
    for c in calls:
        changed = max(float(np.max(np.abs(a - b))) for a, b in zip(c["before"], c["after"]))
        assert changed > 1e-3, c["width"]  # recomputed, not the statistics collected in Stage I
        for final, recalibrated in zip(switchable_stats(net, c["width"]), c["after"]):
            np.testing.assert_allclose(final, recalibrated, rtol=0, atol=1e-6)
    assert metrics["best_epoch"] == 2  # chosen among the Stage II epochs: the gated network's accuracy
    loaded = keras.models.load_model(run_dir / "model.keras")
    assert loaded(np.zeros((1, 8, 8, 1), "float32"))["gate_choice"].shape == (1, 2)


def test_ds_net_switch_needs_training_batches_to_recalibrate():
    net = build("ds_mobilenet_v1", SHAPE, 10, width_multipliers=(0.5, 1.0), gate_after=3, depth_multiplier=0.1)
    model = TrainingModel(net, recipes.get("ds_net", stage1_fraction=0.5))
    with pytest.raises(ValueError, match="train_data"):
        model.recipe.callbacks(model, 2, 2)
    assert len(model.recipe.callbacks(model, 2, 2, train_data=[])) == 1
    assert len(recipes.get("ds_net", stage1_fraction=0.5, recal_batches=0).callbacks(model, 2, 2)) == 1
    with pytest.raises(ValueError, match="recal_batches=-1"):
        recipes.get("ds_net", recal_batches=-1)
