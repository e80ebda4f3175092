"""Deployment targets: what one calibration recipe is emitted as, for which runtime, and how method `auto` prices
a candidate's speed there. One table, so a target's rules live in one place (emit, select and the CLI read it).

Each target also says which engines refuse or misread its artefacts, which high precisions it can run and why
TensorRT cannot build it: no other module tests a target's name.

- `ort-cpu`: UINT8 activations with zero point 128 (the symmetric grid shifted, what ONNX Runtime's fast x86
  U8S8 kernels want), FP32 elsewhere; candidates timed here on ONNX Runtime.
- `trt`: INT8 activations, zero point 0, FP16 elsewhere (TensorRT's strongly typed networks take the precision
  from the ONNX dtypes); no GPU to time on, so candidates are priced by their INT8 GEMM and Q/DQ counts.
- `openvino`: INT8 activations, zero point 0, FP32 elsewhere. OpenVINO's low-precision transformations fuse
  each attention block (Q·Kᵀ, softmax, P·V) into one INT8 subgraph only with signed symmetric activations; with
  ORT's UINT8 form its CPU plugin ran both attention MatMuls in f32 (the fixture: 36 of 50 GEMMs INT8, 94.7 % of
  GEMM MACs; INT8: 48 of 50, 99.99 %, the two left being the pooler and classifier qbert keeps in FP32). Candidates
  are scored and timed on OpenVINO itself. The embedding sums (`emb.sum1`, `emb.sum2`, quantized under the `full`
  placement) stay FP32 here: only an Add and the embedding LayerNorm read them, so OpenVINO keeps their Q/DQ as a
  float FakeQuantize no kernel absorbs, and with them OpenVINO 2026.4 failed to compile some `full` graphs
  (constant folding of a Convert: the fixture's minmax `full` at 512 samples; the same graph without those two
  Q/DQ pairs compiles). The pooler and classifier run in INT8 here too (`int8_heads`): with them, every GEMM of
  the graph is an INT8 FullyConnected in OpenVINO's compiled model, as in NNCF's. Elsewhere they stay in high
  precision (`head.<n>` sites of the recipe are not emitted).

Asymmetric grids (grids.py; a recipe calibrated with `asymmetric`): `ort-cpu` emits each as UINT8 with its own
zero point (ONNX Runtime's U8S8 kernels take any zero point at the same cost); `openvino` on the inputs of
FullyConnected layers only (UINT8 with a zero point, as NNCF's mixed preset quantizes them), the attention
MatMuls' inputs keeping the signed symmetric form its attention fusion needs; `trt` runs symmetric INT8 only and
refuses them.
"""
from __future__ import annotations

from dataclasses import dataclass

from qbert.errors import QbertError


@dataclass(frozen=True)
class Target:
    name: str
    activations: str  # int8 (zero point 0) | uint8 (zero point 128)
    high_precision: str  # default dtype of everything not INT8: fp16 | fp32
    engine: str  # the engine kind that runs what this target emits
    judged_on: str  # the target whose emission --method auto scores (and times, where `timed`)
    timed: bool  # --method auto times candidates here; else counts INT8 GEMMs and Q/DQ pairs
    summary: str
    float_sites: tuple[str, ...] = ()  # site keys left unquantized here whatever the recipe says
    int8_heads: bool = False  # the pooler/classifier GEMMs (`head.<n>` sites) in INT8 too; else high precision
    runtime: str = ""  # the runtime, as a table names it (method auto's speed column)
    high_precisions: tuple[str, ...] = ("fp32",)  # what `high_precision` may be: FP16 only where a runtime runs it
    refused_by: tuple[str, ...] = ()  # engine kinds that refuse this target's artefacts (another target's form)
    misread_by: tuple[str, ...] = ()  # engine kinds that run them, but measure neither this target nor their own
    why_not_tensorrt: str = ""  # why a TensorRT build refuses this target's artefacts ("" where it builds them)
    grid_roles: tuple[str, ...] | None = ()  # site roles emitted on an asymmetric grid: None every role, () none
    fuses_attention: bool = False  # its runtime runs Q·Kᵀ, softmax and P·V as one INT8 block even with P·V's
    # inputs left unquantized in the graph (OpenVINO's census of such a graph: every GEMM INT8, attention fused)

    @property
    def takes_grids(self) -> bool:
        return self.grid_roles is None or bool(self.grid_roles)

    def takes_grid(self, role: str) -> bool:
        """Whether a site of this role is emitted on its asymmetric grid (where the recipe has one)."""
        return self.grid_roles is None or role in self.grid_roles

    @property
    def zero_point(self) -> int:
        return 0 if self.activations == "int8" else 128

    @property
    def activation_label(self) -> str:
        """The activation type as tables write it."""
        return "U8" if self.activations == "uint8" else "S8"


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("ort-cpu", "uint8", "fp32", "ort-cpu", "ort-cpu", True, "U8 activations, FP32 elsewhere",
           runtime="ORT CPU", why_not_tensorrt="U8 activations, zero point 128, which TensorRT cannot run",
           grid_roles=None),
    Target("trt", "int8", "fp16", "tensorrt", "ort-cpu", False, "S8 activations, FP16 elsewhere",
           runtime="TensorRT", high_precisions=("fp16", "fp32"), misread_by=("ort-cpu", "openvino")),
    Target("openvino", "int8", "fp32", "openvino", "openvino", True, "S8 activations, FP32 elsewhere",
           float_sites=("emb.sum1", "emb.sum2"), int8_heads=True, runtime="OpenVINO CPU, f32",
           refused_by=("ort-cpu",), grid_roles=("emb.ln", "emb.proj", "context", "x", "a", "z", "head"),
           fuses_attention=True,
           why_not_tensorrt="FP32 high precision, not the FP16 a strongly typed TensorRT network runs"),
)}


def target(name: str) -> Target:
    if name not in TARGETS:
        raise QbertError(f"target {name!r}: choose one of {', '.join(TARGETS)}")
    return TARGETS[name]
