"""`compare-bundles`: bundles measured side by side on the same images, interleaved, checked against each
bundle run alone (hand-built bundles of two kinds), and its refusals before anything runs."""
import json

import numpy as np
import pytest

from pipelines.experiments import compare
from pipelines.export.bundle import Bundle
from tests import bundle_fixtures as bf


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    bf.plain(root / "plain")
    bf.basisnet(root / "basisnet", 0.55)
    return root


def test_compare_interleaves_rounds_and_reports_each_bundle_as_it_runs_alone(bundles):
    names = [str(bundles / "plain"), str(bundles / "basisnet")]
    loaded = [Bundle.load(n) for n in names]
    x = bf.images(12)
    y = np.arange(12) % bf.CLASSES
    lines = []
    result = compare.compare_bundles(loaded, names, x, y, rounds=3, log=lines.append)
    # every bundle once per round, the first bundle of a round rotating
    assert [l.split(": ")[1].split()[0] for l in lines] == [names[0], names[1], names[1], names[0], names[0],
                                                            names[1]]
    assert result["test_images"] == 12 and result["rounds"] == 3 and result["machine"]["cores"] >= 1
    for name, b, row in zip(names, loaded, result["bundles"]):
        alone = b.predict(x)  # the same predictions, stages and MAdds as the bundle run alone
        assert row["name"] == name and row["kind"] == b.kind
        assert row["accuracy"] == pytest.approx(np.mean([p.index == t for p, t in zip(alone, y)]))
        assert row["avg_madds"] == pytest.approx(np.mean([p.madds for p in alone]))
        shares = {s: np.mean([p.stopped_at == s for p in alone]) for s in b.spec["stages"]}
        assert row["stage_share"] == pytest.approx(shares)
        assert len(row["round_ms"]) == 3 and all(v > 0 for v in row["round_ms"])
        assert 0 < row["avg_tflite_ms"] <= row["avg_latency_ms"]
        # per image the median over the rounds: the mean of medians lies inside the rounds' range (+ noise)
        assert min(row["round_ms"]) * 0.5 <= row["avg_latency_ms"] <= max(row["round_ms"]) * 2
    first, second = result["bundles"]
    assert first["ratio"] == 1.0 and second["ratio"] == pytest.approx(second["avg_latency_ms"] / first["avg_latency_ms"])
    table = compare.format_table({"data": "test", **result})
    assert table.count("\n| ") == 3 and "x first" in table and "interleaved" in table


def test_compare_refuses_bundles_of_different_input_shapes_or_classes(bundles, tmp_path):
    other = tmp_path / "other"
    bf.write_bundle(other, {"kind": "plain", "stages": {"main": {"file": "model.tflite"}}},
                    {"model.tflite": (bundles / "plain" / "model.tflite").read_bytes()})
    spec = json.loads((other / "model.json").read_text())
    spec["input"]["shape"] = [1, 16, 16, 3]
    (other / "model.json").write_text(json.dumps(spec))
    names = [str(bundles / "plain"), str(other)]
    with pytest.raises(ValueError, match=r"^bundles: .*other takes input shape \(16, 16, 3\) but .*plain takes"):
        compare.test_split([Bundle.load(n) for n in names], names, "digits")
    # the data's images are (8, 8, 1) at this size: refused, naming the data
    with pytest.raises(ValueError, match=r"^data: digits gives images of shape \(8, 8, 1\) but the bundles take"):
        compare.test_split([Bundle.load(bundles / "plain")] * 2, names[:1] * 2, "digits")
    with pytest.raises(ValueError, match=r"rounds must be an int >= 1; received rounds=0"):
        compare.compare_bundles([], [], bf.images(2), np.zeros(2), rounds=0)


def test_compare_bundles_command_refuses_bad_input_before_running(cli, bundles, tmp_path):
    plain = str(bundles / "plain")
    assert "at least two" in cli("compare-bundles", plain).error_line()
    assert "listed twice" in cli("compare-bundles", plain, plain).error_line()
    line = cli("compare-bundles", plain, str(tmp_path / "nosuch")).error_line()
    assert "bundles: no such folder" in line and "nosuch" in line
    line = cli("compare-bundles", plain, str(bundles / "basisnet"), "--rounds", "0").error_line()
    assert "rounds must be >= 1; received rounds=0" in line
    line = cli("compare-bundles", plain, str(bundles / "basisnet"), "--block", "0").error_line()
    assert "block must be >= 1; received block=0" in line
    line = cli("compare-bundles", plain, str(bundles / "basisnet"), "--json", str(tmp_path / "no" / "r.json")).error_line()
    assert line.startswith("error: json: the folder of") and "r.json" in line
    # the hand-built bundles name no dataset: --data is asked for, naming the field
    line = cli("compare-bundles", plain, str(bundles / "basisnet")).error_line()
    assert "data: the first bundle's model.json names no dataset" in line


def known_cost_samples():
    """Per-image times made from 0.02 ms + 0.015 ms per M MAdds + 0.01 ms a stage (+ noise), as two bundles of
    one network that keep different exits would give them."""
    rng = np.random.RandomState(0)
    three = (np.array([1.0e6, 2.6e6, 4.2e6]), np.array([1, 2, 3]))   # exits 1, 2, 3
    two = (np.array([2.4e6, 4.0e6]), np.array([1, 2]))               # exits 2, 3 (exit 1's head not run)
    samples = []
    for madds, stages in (three, two):
        pick = rng.randint(0, len(madds), 500)
        ms = 0.02 + 0.015 * madds[pick] / 1e6 + 0.01 * stages[pick] + rng.normal(0, 0.002, 500)
        samples.append((ms, madds[pick], stages[pick].astype(float)))
    return samples


def test_stage_cost_fit_recovers_a_known_stage_cost():
    """`known_cost_samples`: the fit returns its costs, a stage = 0.67 M MAdds."""
    samples = known_cost_samples()
    fit = compare.stage_cost_fit(samples)
    assert fit["images"] == 1000 and fit["bundles"] == 2 and fit["paths"] == 5
    assert fit["ms_per_stage"] == pytest.approx(0.01, abs=5e-4)
    assert fit["ms_per_m_madds"] == pytest.approx(0.015, abs=5e-4)
    assert fit["stage_madds"] == pytest.approx(0.01 / 0.015 * 1e6, rel=0.1) and fit["r2"] > 0.9
    # one bundle of two exits: 2 paths cannot separate a stage from its MAdds
    assert compare.stage_cost_fit([samples[1]]) is None and compare.stage_cost_fit([]) is None


def test_compare_feeds_the_fit_each_multi_exit_image_s_time_madds_and_stages(tmp_path, monkeypatch):
    bf.multi_exit(tmp_path / "me", 0.3)
    bf.plain(tmp_path / "plain")
    names = [str(tmp_path / "plain"), str(tmp_path / "me")]
    loaded = [Bundle.load(n) for n in names]
    x = bf.images(10)
    seen = []
    monkeypatch.setattr(compare, "stage_cost_fit", lambda samples: seen.append(samples) or "fit")
    result = compare.compare_bundles(loaded, names, x, np.zeros(10, int), rounds=2, log=lambda m: None)
    # the hand-built bundle names no network (weights_sha256): it is a network of its own
    assert result["stage_costs"] == [{"network": f"unknown ({names[1]})", "bundle_names": [names[1]], "fit": "fit"}]
    ((ms, madds, stages),) = seen[0]  # the plain bundle gives no MAdds per stage: left out
    alone = loaded[1].predict(x)
    np.testing.assert_array_equal(stages, [1 + (p.stopped_at == "exit_1") for p in alone])
    np.testing.assert_array_equal(madds, [p.madds for p in alone])
    assert set(madds.tolist()) <= {300, 800} and len(ms) == 10 and (ms > 0).all()


def test_the_stage_cost_is_fitted_per_network_never_across_two(tmp_path, monkeypatch):
    """Bundles of one trained network (one weights_sha256 in model.json) are fitted together, another
    network's apart: their speeds per MAdd differ, and a fit over both would read that as a stage's cost."""
    import shutil

    bf.multi_exit(tmp_path / "a1", 0.3)
    for name in ("a2", "b"):  # the same files, told apart by model.json alone
        shutil.copytree(tmp_path / "a1", tmp_path / name)
    for name, network, threshold in (("a1", "aa", 0.3), ("a2", "aa", 0.9), ("b", "bb", 0.5)):
        spec = json.loads((tmp_path / name / "model.json").read_text())
        (tmp_path / name / "model.json").write_text(json.dumps({**spec, "weights_sha256": network,
                                                                "threshold": threshold}))
    names = [str(tmp_path / n) for n in ("a1", "b", "a2")]
    seen, real_fit = [], compare.stage_cost_fit
    monkeypatch.setattr(compare, "stage_cost_fit", lambda samples: seen.append(samples) or len(samples))
    result = compare.compare_bundles([Bundle.load(n) for n in names], names, bf.images(6), np.zeros(6, int),
                                     rounds=1, log=lambda m: None)
    assert result["stage_costs"] == [{"network": "aa", "bundle_names": [names[0], names[2]], "fit": 2},
                                     {"network": "bb", "bundle_names": [names[1]], "fit": 1}]
    assert [len(s) for s in seen] == [2, 1]
    # the table: a line per network, the fitted one in MAdds, the other saying why it has none
    fitted = real_fit(known_cost_samples())
    result["stage_costs"] = [{"network": "a" * 64, "bundle_names": names[::2], "fit": fitted},
                             {"network": "b" * 64, "bundle_names": names[1:2], "fit": None}]
    lines = compare.format_table({"data": "test", **result}).splitlines()
    assert any(l.startswith(f"stage cost of network {'a' * 12}, fitted over 1000 images of its 2") and
               f"{fitted['stage_madds'] / 1e6:.2f} M MAdds" in l for l in lines)
    assert any(l.startswith(f"stage cost of network {'b' * 12}: not fitted") for l in lines)


class FakeBundle:
    """A bundle whose call takes 1 ms, or 2 ms during a slow spell of the shared clock `calls` (a list that
    every fake appends to): the machine, not the bundle, is slow then."""

    kind, labels = "plain", []
    spec = {"stages": {"main": {}}}

    def __init__(self, name, calls, slow):
        self.name, self.calls, self.slow = name, calls, slow

    def predict_one(self, image):
        from types import SimpleNamespace

        self.calls.append((self.name, int(image[0, 0, 0])))
        ms = 2.0 if self.slow[0] <= len(self.calls) < self.slow[1] else 1.0
        return SimpleNamespace(index=0, stopped_at="main", madds=None, time_ms=ms, tflite_ms=ms)


def test_blocks_rotate_through_the_bundles_with_a_warm_up_after_each_switch():
    calls = []
    fakes = [FakeBundle("a", calls, (0, 0)), FakeBundle("b", calls, (0, 0))]
    x = np.arange(5, dtype="float32").reshape(5, 1, 1, 1) * np.ones((1, 2, 2, 1), "float32")
    compare.compare_bundles(fakes, ["a", "b"], x, np.zeros(5, int), rounds=2, block=2, log=lambda m: None)
    want = [("a", 0), ("b", 0)]  # the first call of each bundle: XNNPACK's weight packing
    for r in range(2):
        for i_block, start in enumerate((0, 2, 4)):
            for name in (("a", "b") if (r + i_block) % 2 == 0 else ("b", "a")):
                want += [(name, start)] + [(name, j) for j in range(start, min(start + 2, 5))]
    assert calls == want


def test_a_slow_spell_falls_on_every_bundle_alike():
    """Two identical bundles and a slow spell that covers about one bundle's whole pass: run in passes (one
    block of all the images) the bundle caught in it looks 30-50% slower; interleaved in blocks of 10 they
    tie within a few percent."""
    x = np.zeros((200, 2, 2, 1), "float32")
    ratios = {}
    for block in (200, 10):
        calls = []
        fakes = [FakeBundle("a", calls, (250, 450)), FakeBundle("b", calls, (250, 450))]
        result = compare.compare_bundles(fakes, ["a", "b"], x, np.zeros(200, int), rounds=1, block=block,
                                         log=lambda m: None)
        ratios[block] = result["bundles"][1]["ratio"]
    assert ratios[200] > 1.3 and ratios[10] == pytest.approx(1.0, abs=0.06), ratios
    with pytest.raises(ValueError, match=r"block must be an int >= 1; received block=0"):
        compare.compare_bundles([], [], x, np.zeros(200), block=0)
