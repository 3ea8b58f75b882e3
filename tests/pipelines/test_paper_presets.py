"""The papers' presets (`--recipe-config preset=paper`, `--model-config preset=paper`) and the distinctive
piece of each paper's recipe, tested at the small-tensor level where possible (docs/papers.md)."""
import json

import numpy as np
import pytest

from keras_layers import models
from pipelines.training import recipes
from pipelines.training.config import TrainConfig

FAMILIES = {  # model -> its recipe
    "condconv_mobilenet_v2": "condconv",
    "basisnet_mobilenet_v3": "basisnet",
    "slimmable_mobilenet_v1": "slimmable",
    "ds_mobilenet_v1": "ds_net",
    "multi_exit_net": "multi_exit",
}


# ---------------------------------------------------------------- the one preset mechanism

@pytest.mark.parametrize("name,expected", [
    ("standard", {}),
    ("condconv", {"label_smoothing": 0.0, "weight_decay": 0.0, "augment": 0.0, "router_warmup": 0.0}),
    ("slimmable", {"rule": "all", "distill": 0.0}),
    ("multi_exit", {"distill": True, "kd_t_squared": False, "isc_phase": "phase2", "phase_lr": "step",
                    "phase2_train": "last", "phase1_fraction": 0.625, "weight_decay": 1e-4}),
    ("ds_net", {"ema_warmup": False, "ieb": "ieb", "sgs_strategy": "try_best", "complexity_weight": 0.5}),
    ("basisnet", {"basis_dropout": 0.1, "weight_decay": 4e-5, "kd_weight": 0.0, "preview_weight": 1.0}),
])
def test_paper_preset_resolves_to_the_papers_values(name, expected):
    recipe = recipes.get(name, preset="paper")
    assert recipe.preset == "paper"
    for field, value in expected.items():
        assert getattr(recipe, field) == value, field
    default = recipes.get(name)
    assert default.preset == "default"


def test_explicit_fields_win_over_the_preset_and_unknown_presets_fail():
    assert recipes.get("slimmable", preset="paper", rule="sandwich").rule == "sandwich"
    assert recipes.get("slimmable", preset="paper").rule == "all"
    with pytest.raises(ValueError, match=r"^preset must be one of default, paper; received preset='papers'$"):
        recipes.get("ds_net", preset="papers")
    with pytest.raises(ValueError, match="preset"):
        models.build("mobilenet_v2", (16, 16, 3), 10, preset="nope")


def test_basisnet_paper_preset_distills_only_with_a_teacher(tmp_path):
    teacher = tmp_path / "t.keras"
    teacher.write_text("x")
    assert recipes.get("basisnet", preset="paper", teacher=str(teacher)).kd_weight == 0.5
    assert recipes.get("basisnet", preset="paper").kd_weight == 0.0


def test_model_presets_resolve_and_config_json_records_them():
    assert models.resolve_config("condconv_mobilenet_v2", {"preset": "paper"})["cond_blocks"] == 6
    assert models.resolve_config("ds_mobilenet_v1", {"preset": "paper", "gate_after": 3})["gate_after"] == 3
    assert models.resolve_config("mobilenet_v2", {"preset": "paper"}) == {"preset": "paper"}
    assert "preset" in models.config_fields("mobilenet_v2")
    cfg = TrainConfig(model="ds_mobilenet_v1", model_config={"preset": "paper"},
                      recipe_config={"preset": "paper", "sgs_weight": 2.0}).validate()
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["model_config"]["width_multipliers"] == "paper" and d["model_config"]["front_width"] == 0.5
    assert d["recipe_config"]["ema_warmup"] is False and d["recipe_config"]["sgs_weight"] == 2.0
    assert TrainConfig.from_dict(d).recipe_obj().to_dict() == cfg.recipe_obj().to_dict()
    plain = TrainConfig(model="mobilenet_v2").to_dict()
    assert plain["recipe_config"] == {} and plain["model_config"] == {}


TINY = {  # the cheap sizes of tests/pipelines/test_every_model_learns.py: tracing, not training, is the cost
    "condconv_mobilenet_v2": ["num_experts=2", "width_multiplier=0.25", "depth_multiplier=0.25", "last_channels=64"],
    "basisnet_mobilenet_v3": ["width_multiplier=0.25", "last_channels=64", "head_channels=64",
                              "preview_channels=32", "preview_blocks=2"],
    "slimmable_mobilenet_v1": ["width_multipliers=[0.5,1.0]", "depth_multiplier=0.1"],
    "ds_mobilenet_v1": ["width_multipliers=[0.5,1.0]", "depth_multiplier=0.1", "gate_after=3"],
    "multi_exit_net": ["num_exits=2", "width_multiplier=0.25", "depth_multiplier=0.25", "last_channels=32"],
}


# `make test` runs the command for one family (the path is the same for all: the recipe is what differs, and each
# recipe's paper pieces have their own tests below); `make test-extended` runs it for every family.
IN_MAKE_TEST = "multi_exit_net"


@pytest.mark.slow
@pytest.mark.parametrize("model", [pytest.param(m, marks=() if m == IN_MAKE_TEST else pytest.mark.extended)
                                   for m in sorted(FAMILIES)])
def test_train_command_runs_every_family_with_the_paper_preset(model, tmp_path):
    from pipelines.cli import main

    main(["train", "--model", model, "--recipe-config", "preset=paper", "--epochs", "1", "--limit", "64",
          "--image-size", "16", "--batch-size", "32", "--out", str(tmp_path), "--run-name", "r", "--no-tracking",
          "--model-config", *TINY[model]])
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["recipe"] == FAMILIES[model] and config["recipe_config"]["preset"] == "paper"
    assert (tmp_path / "r" / "model.keras").exists()


# ---------------------------------------------------------------- CondConv: CC-MobileNetV2 placement

def test_condconv_paper_placement_last_six_blocks_and_the_classifier():
    from keras_layers.condconv import CondRouting, CondDense
    from keras_layers.models.condconv_mobilenet_v2 import cond_block_flags

    full = cond_block_flags(1.0, cond_blocks=6)
    assert len(full) == 17 and full == [False] * 11 + [True] * 6
    # depth 0.5: 1 of the two 96-channel blocks, both 160-channel blocks, the 320 block
    half = cond_block_flags(0.5, cond_blocks=6)
    assert len(half) == 11 and half == [False] * 7 + [True] * 4
    assert cond_block_flags(0.5, cond_stages=3) == [False] * 6 + [True] * 5  # the default: whole stages
    net = models.build("condconv_mobilenet_v2", (16, 16, 3), 10, preset="paper", width_multiplier=0.25,
                       last_channels=64, num_experts=2)
    routers = [l.name for l in net.layers if isinstance(l, CondRouting)]
    assert routers == [f"block{i}_routing" for i in range(7, 11)]
    assert isinstance(net.get_layer("head_logits"), CondDense)


# ---------------------------------------------------------------- Slimmable: Algorithm 1

def test_slimmable_algorithm1_trains_every_width_with_one_optimizer_step():
    from keras_layers.slimmable import SwitchableBatchNormalization
    from pipelines.training.recipes.base import TrainingModel
    import tf_keras as keras

    net = models.build("slimmable_mobilenet_v1", (16, 16, 3), 10, depth_multiplier=0.1)
    model = TrainingModel(net, recipes.get("slimmable", preset="paper"))
    model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)  # the same step, without tracing
    bn = next(l for l in net.layers if isinstance(l, SwitchableBatchNormalization))
    before = [m.numpy().copy() for m in bn.moving_means]
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
    logs = model.train_on_batch(x, np.arange(8) % 10, return_dict=True)
    assert int(model.optimizer.iterations.numpy()) == 1  # gradients of all widths summed, ONE step
    moved = [not np.allclose(b, m.numpy()) for b, m in zip(before, bn.moving_means)]
    assert all(moved), "every width ran in training mode in this step"
    assert {"w0_25_accuracy", "w0_5_accuracy", "w0_75_accuracy", "w1_accuracy"} <= set(logs)


# ---------------------------------------------------------------- IMTA

def _np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_imta_paper_loss_is_eq7_8_without_t_squared():
    from pipelines.training.recipes.multi_exit import MultiExit  # noqa: F401

    rng = np.random.default_rng(1)
    z = [rng.normal(size=(4, 5)).astype("float32") for _ in range(3)]
    y = np.array([0, 1, 2, 3])
    T, a = 3.0, 0.5
    recipe = recipes.get("multi_exit", preset="paper")
    total, _, _ = recipe.loss_terms(z, y, training=False, kd_on=1.0)

    def ce(logits):
        return -_np_log_softmax(logits)[np.arange(4), y].mean()

    def kld(student):
        p_t = np.exp(_np_log_softmax(z[-1] / T))
        return (p_t * (_np_log_softmax(z[-1] / T) - _np_log_softmax(student / T))).sum(-1).mean()

    expected = sum(a * ce(zi) + (1 - a) * kld(zi) for zi in z[:-1]) + ce(z[-1])
    assert np.isclose(float(total), expected, rtol=1e-5)
    default = recipes.get("multi_exit")  # the project's T^2 factor
    total_t2, _, _ = default.loss_terms(z, y, training=False, kd_on=1.0)
    expected_t2 = sum(a * ce(zi) + (1 - a) * T * T * kld(zi) for zi in z[:-1]) + ce(z[-1])
    assert np.isclose(float(total_t2), expected_t2, rtol=1e-5)


def test_imta_isc_only_in_phase2_scores_the_network_without_isc():
    import tensorflow as tf
    from pipelines.training.recipes.base import TrainingModel

    small = dict(num_exits=3, width_multiplier=0.25, depth_multiplier=0.25, last_channels=32)
    with_isc = models.build("multi_exit_net", (16, 16, 3), 10, **small)
    without = models.build("multi_exit_net", (16, 16, 3), 10, inline_collaboration=False, **small)
    for layer in without.layers:
        layer.set_weights(with_isc.get_layer(layer.name).get_weights())
    recipe = recipes.get("multi_exit", preset="paper")
    TrainingModel(with_isc, recipe)  # setup
    x = tf.random.normal((4, 16, 16, 3), seed=0)
    names = ["exit_0", "exit_1", "exit_2"]
    out, ref = with_isc(x), without(x)
    recipe.kd_on.assign(0.0)  # phase 1: the outputs without ISC
    own = recipe.effective_logits(names, [out[n] for n in names])
    for n, o in zip(names, own):
        np.testing.assert_allclose(o.numpy(), ref[n].numpy(), atol=1e-5)
    recipe.kd_on.assign(1.0)  # phase 2: ISC on
    isc = recipe.effective_logits(names, [out[n] for n in names])
    np.testing.assert_allclose(isc[2].numpy(), out["exit_2"].numpy())
    assert not np.allclose(isc[2].numpy(), ref["exit_2"].numpy())
    # phase 2 trains only the last layer of each classifier
    recipe.heads_only = True
    names_trained = sorted(v.name for v in recipe.trainable_variables(type("M", (), {"net": with_isc})()))
    assert names_trained == sorted(f"exit_{i}/{w}:0" for i in range(3) for w in ("kernel", "bias"))


def test_imta_learning_rate_restarts_between_the_phases():
    from pipelines.training.recipes.multi_exit import PhaseSchedule

    step = PhaseSchedule(0.1, phase1_steps=100, phase2_steps=40, shape="step")
    lrs = [float(step(s)) for s in (0, 49, 50, 75, 99, 100, 119, 120, 130, 139)]
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.001, 0.001, 0.1, 0.1, 0.01, 0.001, 0.001], rtol=1e-6)
    cosine = PhaseSchedule(0.1, phase1_steps=100, phase2_steps=40, shape="cosine")
    assert float(cosine(99)) < 0.002 and np.isclose(float(cosine(100)), 0.1)


# ---------------------------------------------------------------- DS-Net

def test_ds_net_sgs_give_up_vs_try_best_targets():
    from pipelines.training.recipes.ds_net import sgs_targets

    y = np.array([0, 1, 2])
    slim = np.eye(3, dtype="float32")[[0, 0, 0]]  # right only on example 0 (easy)
    wide = np.eye(3, dtype="float32")[[0, 1, 0]]  # example 1: dependent, example 2: hard
    try_best, easy = sgs_targets(slim, y, 3, wide, "try_best")
    give_up, _ = sgs_targets(slim, y, 3, wide, "give_up")
    assert try_best.numpy().tolist() == [0, 3, 3] and give_up.numpy().tolist() == [0, 3, 0]
    assert easy.numpy().tolist() == [True, False, False]


def test_ds_net_paper_width_space_and_restricted_routing():
    from keras_layers.models.ds_mobilenet_v1 import PAPER_WIDTHS, gate_layer, paper_widths
    from pipelines.training.recipes.ds_net import restrict_gate

    assert len(PAPER_WIDTHS) == 14 and PAPER_WIDTHS[0] == 0.35 and PAPER_WIDTHS[-1] == 1.0
    assert paper_widths([512, 1024]) == PAPER_WIDTHS  # wide layers: every ratio is its own path
    assert paper_widths([8]) == (1.0,)  # one channel group: one path
    net = models.build("ds_mobilenet_v1", (16, 16, 3), 10, preset="paper")
    gate = gate_layer(net)
    widths = gate.width_multipliers
    assert len(widths) > 4 and widths[-1] == 1.0 and widths[0] >= 0.35
    widest = restrict_gate(gate, 0.5)
    assert widths[widest] <= 0.5 < widths[widest + 1]
    scores, _ = gate.scores_and_attention(np.random.default_rng(0).normal(size=(16, 4, 4, gate.channels_in))
                                          .astype("float32"))
    assert int(np.argmax(scores.numpy(), -1).max()) <= widest


def _offset_policy_by_brute_force(scores, correct, madds, widest, offset):
    """(accuracy, average MAdds) of argmax(scores + offset on the widest choice), one image at a time."""
    acc = cost = 0.0
    for s, c in zip(scores, correct):
        shifted = s.astype(np.float64).copy()
        shifted[widest] += offset
        k = int(np.argmax(shifted))
        acc, cost = acc + c[k], cost + madds[k]
    return acc / len(scores), cost / len(scores)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ds_net_widest_offset_is_the_cheapest_policy_at_the_widest_accuracy(seed):
    from pipelines.training.recipes.ds_net import widest_offset

    rng = np.random.default_rng(seed)
    n, madds = 60, np.array([10.0, 20.0, 40.0, 80.0])
    scores = rng.normal(size=(n, 4)).astype("float32")
    scores[:, 0] += 1.5  # a gate that prefers the slimmest, as the collapsed ones do
    wide_right = rng.random(n) < 0.8
    correct = np.stack([wide_right & (rng.random(n) < 0.85), wide_right & (rng.random(n) < 0.9),
                        wide_right & (rng.random(n) < 0.95), wide_right], axis=1)
    correct[scores[:, 0] < 1.0, 0] = False  # low slimmest scores mark the images the slimmest gets wrong
    cal = widest_offset(scores, correct, madds, widest=3, tolerance=0.02)
    got = _offset_policy_by_brute_force(scores, correct, madds, 3, cal["offset"])
    assert got == pytest.approx((cal["accuracy"], cal["madds"]))  # the offset deploys the reported policy
    assert sum(cal["fractions"]) == pytest.approx(1.0, abs=2e-3)
    target = correct[:, 3].mean() - 0.02
    assert cal["target"] == pytest.approx(target)
    # every policy of the family (one offset between each pair of sorted margins, and beyond both ends)
    margins = np.sort(np.max(scores[:, :3], 1).astype(np.float64) - scores[:, 3])
    offsets = np.concatenate([[margins[0] - 1], (margins[:-1] + margins[1:]) / 2, [margins[-1] + 1]])
    policies = [_offset_policy_by_brute_force(scores, correct, madds, 3, o) for o in offsets]
    feasible = [p for p in policies if p[0] >= target - 1e-12]
    assert cal["reached"] and feasible
    assert cal["madds"] == pytest.approx(min(c for _, c in feasible))  # no cheaper policy reaches the target
    assert cal["accuracy"] >= target


def test_ds_net_widest_offset_when_nothing_reaches_and_the_try_best_shares():
    from pipelines.training.recipes.ds_net import try_best_shares, widest_offset

    scores = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    correct = np.array([[True, True], [False, True], [True, False]])  # image 2: only the slimmest is right
    cal = widest_offset(scores, correct, [1.0, 4.0], widest=1, tolerance=0.0)  # the widest: 2 of 3 right
    assert cal["reached"] and cal["accuracy"] == pytest.approx(2 / 3) and cal["fractions"] == [1.0, 0.0]
    assert cal["madds"] == 1.0 and cal["offset"] < -1  # all to the slimmest: as accurate as the widest, cheaper
    cal = widest_offset(scores, correct, [1.0, 4.0], widest=1, tolerance=-0.2)  # above the widest's accuracy
    assert cal["reached"] and cal["accuracy"] == 1.0 and cal["fractions"] == [0.667, 0.333]
    assert cal["madds"] == pytest.approx(2.0) and -1 < cal["offset"] < 2  # image 1 alone goes to the widest
    # an accuracy target above every policy: the most accurate one, reached False
    cal = widest_offset(scores, correct, [1.0, 4.0], widest=1, tolerance=-0.5)
    assert not cal["reached"] and cal["accuracy"] == 1.0
    shares = try_best_shares(correct, widest=1)
    assert shares == pytest.approx({"slimmest_target": 2 / 3, "needs_widest": 1 / 3, "oracle_accuracy": 1.0})


def test_ds_net_widest_offset_goes_into_the_exported_gate_bias():
    from keras_layers.models.ds_mobilenet_v1 import export_front, gate_layer
    from pipelines.training.recipes.ds_net import apply_widest_offset, restrict_gate, widest_allowed

    net = models.build("ds_mobilenet_v1", (16, 16, 3), 10, width_multipliers=(0.25, 0.5, 0.75, 1.0))
    gate = gate_layer(net)
    assert widest_allowed(gate) == 3
    x = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype("float32")
    before = export_front(net)(x)["gate_scores"].numpy()
    apply_widest_offset(gate, 2.5)
    after = export_front(net)(x)["gate_scores"].numpy()
    np.testing.assert_allclose(after - before, np.tile([0, 0, 0, 2.5], (4, 1)), atol=1e-5)
    assert restrict_gate(gate, 0.5) == 1 and widest_allowed(gate) == 1  # restricted: the offset moves to 0.5
    apply_widest_offset(gate, 1.0)
    assert gate.b2.numpy()[1] == pytest.approx(1.0) and gate.b2.numpy()[3] < -1e3


def test_ds_net_ieb_ablation_without_ema_teacher_and_constant_momentum():
    import tensorflow as tf
    import tf_keras as keras
    from pipelines.training.recipes.base import TrainingModel
    from pipelines.training.recipes.ds_net import ema_update

    t, s = tf.Variable([0.0]), tf.Variable([1.0])
    step = tf.Variable(0, dtype=tf.int64)
    ema_update([t], [s], 0.9, step, warmup=False)
    assert np.isclose(t.numpy()[0], 0.1)  # the paper's Eq. 3 from step 0 (warm-up would give 0.9)
    net = models.build("ds_mobilenet_v1", (16, 16, 3), 10, width_multipliers=(0.5, 0.75, 1.0),
                       depth_multiplier=0.1, gate_after=3, gate_hidden=8)
    model = TrainingModel(net, recipes.get("ds_net", ieb="inplace", stage1_fraction=1.0))
    assert not hasattr(model, "ema_teacher")
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
    logs = model.train_on_batch(x, np.arange(8) % 10, return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["ieb_slimmest"] > 0


def test_ds_net_paper_gate_learning_rate_restarts_and_decays_0_9x_per_epoch():
    import tf_keras as keras
    from pipelines.training.recipes.ds_net import GateDecay
    from pipelines.training.recipes.schedules import EpochDecay

    cosine = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=100, alpha=0.01)
    schedule = EpochDecay(cosine, 0.1, start_step=60, steps_per_epoch=10, decay=0.9)
    for step in (0, 30, 59):  # Stage I: the run's schedule
        assert np.isclose(float(schedule(step)), float(cosine(step)))
    for step, want in ((60, 0.1), (69, 0.1), (70, 0.09), (85, 0.081), (99, 0.1 * 0.9 ** 3)):
        assert np.isclose(float(schedule(step)), want), step
    assert recipes.get("ds_net", preset="paper").gate_lr_decay == 0.9
    paper = recipes.get("ds_net", preset="paper", recal_batches=0).callbacks(None, 10, 8)
    decays = [c for c in paper if isinstance(c, GateDecay)]
    assert len(decays) == 1 and decays[0].start_step == 60 and decays[0].decay == 0.9  # Stage II from epoch 6
    gate_only = recipes.get("ds_net", preset="paper", stage1_fraction=0.0).callbacks(None, 10, 4)
    assert [c.start_step for c in gate_only] == [0]
    assert not any(isinstance(c, GateDecay) for c in recipes.get("ds_net", recal_batches=0).callbacks(None, 10, 8))
    # installed over the optimizer's schedule when training starts
    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    net.compile(optimizer=keras.optimizers.SGD(cosine), loss="mse")
    decays[0].set_model(net)
    decays[0].on_train_begin()
    assert np.isclose(float(net.optimizer._learning_rate(75)), 0.09)
    with pytest.raises(ValueError, match="gate_lr_decay=1.5"):
        recipes.get("ds_net", gate_lr_decay=1.5)


# ---------------------------------------------------------------- BasisNet: one-hot model selection

def test_basisnet_one_hot_selection_freezes_the_preview_and_selects_one_basis():
    import tensorflow as tf
    import tf_keras as keras
    from keras_layers.models.basisnet_mobilenet_v3 import stages
    from pipelines.training.recipes.base import TrainingModel

    net = models.build("basisnet_mobilenet_v3", (16, 16, 3), 10, width_multiplier=0.25, last_channels=32,
                       head_channels=32, preview_channels=16, preview_blocks=2, num_bases=3)
    recipe = recipes.get("basisnet", preset="paper", selection_fraction=0.5)
    model = TrainingModel(net, recipe)
    assert recipe.selection_epoch(4) == 2 and recipe.final_stage_start(4) == 2
    recipe.enter_selection(model)  # in a run: the recipe's callback, inside fit
    # compiled after the switch: outside fit, Keras restores the trainable flags of compile time
    model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
    preview, specialist = stages(net)
    before_p = [w.numpy().copy() for w in preview.weights]
    before_s = [w.numpy().copy() for w in specialist.trainable_weights]
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
    model.train_on_batch(x, np.arange(8) % 10)
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before_p, preview.weights))  # frozen, BN too
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before_s, specialist.trainable_weights))
    alpha = net(tf.constant(x), training=False)["coefficients"].numpy()
    assert set(np.unique(alpha)) <= {0.0, 1.0} and np.all(alpha.sum(-1) == 1.0)  # one basis per layer


def test_basisnet_paper_model_is_mobilenet_v3_large_shaped():
    config = models.resolve_config("basisnet_mobilenet_v3", {"preset": "paper"})
    assert config["spec"] == "large" and config["num_bases"] == 16 and config["last_channels"] == 960
    net = models.build("mobilenet_v3", (16, 16, 3), 10, spec="large", width_multiplier=0.25, last_channels=32,
                       head_channels=32)
    assert len([l for l in net.layers if l.name.endswith("_project_conv")]) == 15  # MobileNetV3-Large, Table 1


def test_ds_net_stage1_on_labels_has_no_teacher_and_sums_each_widths_cross_entropy():
    import tensorflow as tf
    import tf_keras as keras
    from pipelines.training.recipes.base import TrainingModel
    from pipelines.training.recipes.ds_net import run_width

    keras.utils.set_random_seed(0)
    net = models.build("ds_mobilenet_v1", (16, 16, 3), 10, width_multipliers=(0.5, 0.75, 1.0),
                       depth_multiplier=0.1, gate_after=3, gate_hidden=8)
    recipe = recipes.get("ds_net", ieb="labels", stage1_fraction=1.0, num_random=1)
    model = TrainingModel(net, recipe)
    assert not hasattr(model, "ema_teacher")
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
    y = np.arange(8) % 10

    def ce(logits):  # NumPy cross-entropy of the labels
        z = logits - logits.max(-1, keepdims=True)
        return float(-(z - np.log(np.exp(z).sum(-1, keepdims=True)))[np.arange(8), y].mean())

    # BN in training mode: the reference runs each width in training mode too, like the step
    want = {w: ce(run_width(net, tf.constant(x), w, True).numpy()) for w in (0.5, 0.75, 1.0)}
    out = recipe.compute(model, tf.constant(x), tf.constant(y), True)
    np.testing.assert_allclose(float(out.logs["ce"]), want[1.0], rtol=1e-4)
    np.testing.assert_allclose(float(out.logs["ieb_slimmest"]), want[0.5], rtol=1e-4)
    np.testing.assert_allclose(float(out.logs["ieb_random"]), want[0.75], rtol=1e-4)  # the one middle width
    np.testing.assert_allclose(float(out.loss), sum(want.values()), rtol=1e-4)
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    with pytest.raises(ValueError, match="ieb='soft'"):
        recipes.get("ds_net", ieb="soft")
