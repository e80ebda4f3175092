"""Method auto's speed: candidates of one graph structure share one timing, so the choice among them is made by
faithfulness to FP32, never by which of them the machine happened to run during a slow moment; and a structure's
timing is paired with the fastest's in the same rounds, so the machine's drift between rounds cancels."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qbert.calibration.select import pick, structure_speeds, structure_of
from qbert.timing import p50_and_spread, paired_p50s


def row(name: str, divergence: float) -> dict:
    return dict(name=name, divergence=divergence, flips=0.01, drop_bound_points=0.1, within_budget=True)


def test_same_structure_candidates_share_one_timing_and_divergence_decides():
    rows = [row("minmax", 0.005), row("smoothquant α=0.85", 0.004), row("smoothquant α=1", 0.001),
            row("smoothquant α=1, asymmetric", 0.002), row("peg K=4", 0.0)]
    structures = {"minmax": ("a",), "smoothquant α=0.85": ("s",), "smoothquant α=1": ("s",),
                  "smoothquant α=1, asymmetric": ("s",), "peg K=4": ("p",)}
    timings = {("a",): (10.0, [9.5, 10.5]), ("s",): (10.8, [10.1, 11.9]), ("p",): (14.0, [13.0, 15.0])}
    structure_speeds(rows, structures, timings)
    assert [r["structure"] for r in rows] == [1, 2, 2, 2, 3]
    assert [r["speed_ms_b1"] for r in rows] == [10.0, 10.8, 10.8, 10.8, 14.0]
    assert [r["p50_ms_b1"] for r in rows] == [r["speed_ms_b1"] for r in rows]  # the report shows what the rule read
    assert rows[2]["p50_spread_ms_b1"] == [10.1, 11.9]
    assert pick(rows, lambda r: r["speed_ms_b1"])["name"] == "smoothquant α=1"  # least divergence of the as fast


def test_paired_timing_cancels_the_drift_between_rounds():
    # b is 8 % slower than a in every round; the machine's speed halves and doubles between rounds, and the rounds
    # in which b ran fast are not the rounds in which a did: pooled p50s misplace b
    drift = [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.5]
    rng = np.random.default_rng(0)
    a = [f * 3.0 * (1 + 0.001 * rng.standard_normal(5)) for f in drift]
    b = [f * 3.0 * 1.08 * (1 + 0.001 * rng.standard_normal(5)) for f in drift]
    for r in (1, 3, 5):  # three slow rounds in which b's turn alone fell on a fast moment
        b[r] = b[r] * 0.5
    got = paired_p50s({"a": a, "b": b})
    assert got["b"][0] == p50_and_spread(b)[0]  # the pooled-fastest is the reference: its own p50
    assert abs(got["b"][0] / got["a"][0] - 1.08) < 0.005
    assert abs(p50_and_spread(b)[0] / p50_and_spread(a)[0] - 1.08) > 0.05  # what pooling the rounds would say
    assert got["a"][1] == p50_and_spread(a)[1]  # the spread stays the key's own, so a reader sees the noise


def test_paired_timing_survives_rounds_the_timer_could_not_resolve():
    a = [np.zeros(5)] + [np.full(5, 2.0)] * 4  # one round at 0 ms (a coarse clock), the fastest key
    b = [np.full(5, 3.0)] * 5
    got = paired_p50s({"a": a, "b": b})
    assert got["a"][0] == p50_and_spread(a)[0] and got["b"][0] == 1.5 * got["a"][0]
    zero = paired_p50s({"a": [np.zeros(5)] * 3, "b": [np.ones(5)] * 3})  # nothing to pair: the pooled p50s
    assert zero["a"][0] == 0.0 and zero["b"][0] == 1.0
    assert paired_p50s({"only": b})["only"][0] == 3.0


def test_method_auto_latency_is_the_paired_estimate(monkeypatch):
    from qbert.calibration import select

    samples = {"x": [np.full(3, f) for f in (1.0, 1.0, 3.0)], "y": [np.full(3, f) for f in (1.2, 3.0, 3.3)]}
    monkeypatch.setattr(select, "interleaved", lambda timers, rounds: samples)
    got = select._latency({"x": lambda f: None, "y": lambda f: None}, seq=8, vocab=100, rounds=3, iters=3)
    assert got == paired_p50s(samples) and got["y"][0] != p50_and_spread(samples["y"])[0]


def _qdq(zero_point_type: int, scale: float) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    zp = np.array(0, dtype=np.uint8 if zero_point_type == TensorProto.UINT8 else np.int8)
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s"), numpy_helper.from_array(zp, "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits))


def test_structure_ignores_numbers_but_not_ops_or_integer_types():
    assert structure_of(_qdq(TensorProto.UINT8, 0.1)) == structure_of(_qdq(TensorProto.UINT8, 0.7))
    assert structure_of(_qdq(TensorProto.UINT8, 0.1)) != structure_of(_qdq(TensorProto.INT8, 0.1))  # other kernels
    extra = _qdq(TensorProto.UINT8, 0.1)
    extra.graph.node.append(helper.make_node("Mul", ["y", "s"], ["y2"]))
    assert structure_of(extra) != structure_of(_qdq(TensorProto.UINT8, 0.1))
