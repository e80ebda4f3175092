"""Method auto's speed: candidates of one graph structure share one speed, so the choice among them is made by
flips, never by which of them the machine happened to run during a slow moment."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qbert.calibration.select import pick, shared_speeds, structure_of


def row(name: str, ms: float, flips: float) -> dict:
    return dict(name=name, p50_ms_b1=ms, flips=flips, drop_bound_points=0.1, within_budget=True)


def test_same_structure_candidates_share_their_median_speed_and_flips_decide():
    # the faithful candidate's turns fell on a slow moment (+30 %): timed alone it would be out of the 10 % tie
    rows = [row("minmax", 10.0, 0.05), row("smoothquant α=0.85", 10.5, 0.06), row("smoothquant α=1", 13.0, 0.01),
            row("smoothquant α=1, asymmetric", 10.8, 0.02), row("peg K=4", 14.0, 0.0)]
    speed = lambda r: r["speed_ms_b1"]  # noqa: E731
    for r in rows:
        r["speed_ms_b1"] = r["p50_ms_b1"]
    assert pick(rows, speed)["name"] == "smoothquant α=1, asymmetric"  # own p50s: the slow turn decides
    structures = {"minmax": ("a",), "smoothquant α=0.85": ("s",), "smoothquant α=1": ("s",),
                  "smoothquant α=1, asymmetric": ("s",), "peg K=4": ("p",)}
    shared_speeds(rows, structures)
    assert [r["structure"] for r in rows] == [1, 2, 2, 2, 3]
    assert [r["speed_ms_b1"] for r in rows] == [10.0, 10.8, 10.8, 10.8, 14.0]  # the median of each structure
    assert pick(rows, speed)["name"] == "smoothquant α=1"  # fewest flips of the equally fast
    assert rows[2]["p50_ms_b1"] == 13.0  # its own timing is kept for the report


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
