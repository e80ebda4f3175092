"""High precision for TensorRT: FP16 in the graph's own dtypes, since a strongly typed network takes its
precision from them (TensorRT 11 has no FP16 builder flag; 10.x needs STRONGLY_TYPED)."""
from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def to_fp16(model: Any) -> None:
    """FP16 everywhere that is not INT8, in the graph's own dtypes (TensorRT is strongly typed).

    LayerNormalization keeps its default FP32 statistics (stash_type=1); the attention mask value −10⁴ and
    BERT's activations fit FP16's range. Logits are cast back to FP32 for the caller. The opset is raised to
    19, the first whose QuantizeLinear/DequantizeLinear take FP16 scales.
    """
    from onnx import numpy_helper

    for op in model.opset_import:  # FP16 Q/DQ scales need opset 19 (opset 17 allows only FP32 scales)
        if op.domain in ("", "ai.onnx") and op.version < 19:
            if op.version < 18:
                _reduce_axes_as_inputs(model)
            op.version = 19
    for i, t in enumerate(model.graph.initializer):
        if t.data_type == TensorProto.FLOAT:
            model.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for n in model.graph.node:
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.FLOAT16
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
    for out in model.graph.output:
        if out.type.tensor_type.elem_type == TensorProto.FLOAT:
            half = out.name + ".fp16"
            for n in model.graph.node:
                for i, x in enumerate(n.output):
                    if x == out.name:
                        n.output[i] = half
                for i, x in enumerate(n.input):
                    if x == out.name:
                        n.input[i] = half
            model.graph.node.append(helper.make_node("Cast", [half], [out.name], to=TensorProto.FLOAT,
                                                     name=f"qbert/{out.name}/CastFP32"))
    del model.graph.value_info[:]


REDUCE_OPS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
              "ReduceProd", "ReduceSumSquare")  # ReduceSum took its axes as an input from opset 13 already


def _reduce_axes_as_inputs(model: Any) -> None:
    """Opset 18 moved these reductions' `axes` from an attribute to an input; an embedding model's pooling and
    normalisation use them (ReduceMax, ReduceL2), so raising the opset rewrites them as opset 18 spells them."""
    for n in model.graph.node:
        axes = next((a for a in n.attribute if a.name == "axes"), None) if n.op_type in REDUCE_OPS else None
        if axes is None:
            continue
        name = f"{n.name or n.output[0]}.axes"
        model.graph.initializer.append(numpy_helper.from_array(np.array(list(axes.ints), dtype=np.int64), name))
        n.attribute.remove(axes)
        del n.input[1:]
        n.input.append(name)
