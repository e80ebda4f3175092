"""Opening qbert artefacts (ONNX + sidecar) with checks that turn bad files into one-line errors."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from qbert.atomic import content_checksum, read_json, require_file, sha256_onnx, sidecar_path, write_json
from qbert.errors import QbertError
from qbert.data import INPUT_NAMES

TASKS = ("classification", "embedding")  # output `logits` [batch, labels] or `embeddings` [batch, dim]
POOLINGS = ("mean", "cls", "max", "mean-sqrt-len")  # how an embedding model turns token states into one vector

def load_onnx(path: Path | str, expect: str | None = None) -> Any:
    """Load and sanity-check an ONNX model; `expect` = "fp32" or "qdq" rejects the other kind."""
    import onnx

    path = require_file(path, "ONNX file")
    if path.suffix == ".xml":
        raise QbertError(f"{path} is an OpenVINO IR, not an ONNX: of qbert's engines only openvino runs it (and "
                         "scores it beside the qbert FP32 export it came from)")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError and friends
        raise QbertError(f"{path} is not a readable ONNX model ({e.__class__.__name__}); "
                         "re-run qbert export") from None
    if not model.graph.node:
        raise QbertError(f"{path} is not a readable ONNX model (no graph nodes); re-run qbert export")
    inputs = {i.name for i in model.graph.input}
    missing = [n for n in INPUT_NAMES if n not in inputs]
    if missing:
        raise QbertError(f"{path} lacks inputs {missing}; export it with `qbert export`")
    is_qdq = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    if expect == "fp32" and is_qdq:
        raise QbertError(f"{path} is already quantized (has QuantizeLinear); pass the FP32 ONNX from qbert export")
    if expect == "qdq" and not is_qdq:
        raise QbertError(f"{path} has no Q/DQ nodes; run qbert calibrate first")
    return model


class _Sidecar:
    """JSON in and out for the sidecar dataclasses: the right `format`, every required field; unknown keys are
    ignored (a newer qbert may add some)."""

    NOT_OURS: ClassVar[str]
    INCOMPLETE: ClassVar[str]

    @classmethod
    def from_json(cls, data: Any, where: str) -> Any:
        fmt = next(f.default for f in fields(cls) if f.name == "format")
        if not isinstance(data, dict) or data.get("format") != fmt:
            raise QbertError(cls.NOT_OURS.format(where=where))
        if "checksum" in data and data["checksum"] != content_checksum(data):  # sidecars before it carry none
            raise QbertError(f"{where} was edited after qbert wrote it (its checksum differs): its fields (labels, "
                             "tokenizer, source) may no longer describe the model; re-run the command that wrote "
                             "it, or remove its \"checksum\" field to use the edit as it is")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError:
            raise QbertError(cls.INCOMPLETE.format(where=where)) from None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {**data, "checksum": content_checksum(data)}


@dataclass
class ModelMeta(_Sidecar):
    """The sidecar `<model>.onnx.json`: what later commands need to know about a qbert ONNX without loading it.
    Written by `export` and `quantize`, read by `load_meta` — nowhere else."""

    source_model: str  # as the user typed it: a hub id or a folder, perhaps relative to where export ran
    tokenizer: str
    model_type: str
    label2id: dict[str, int]
    hidden_size: int
    vocab_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    sha256: str | None = None  # of the ONNX (and its external data): a changed file is refused
    pad_token_id: int = 0
    max_length: int = 128
    opset: int = 17
    kind: str = "fp32"  # fp32 | qdq
    parity: dict[str, Any] | None = None
    source_fingerprint: str | None = None  # of the model folder, so caches can tell a changed model
    source_path: str | None = None  # a local model folder's absolute path (None: a hub id; older sidecars: None)
    source_files: dict[str, str] | None = None  # its files' sha256 by name, to say which changed
    seconds: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    fp32_onnx: str | None = None  # qdq: the FP32 ONNX it was quantized from
    quantization: dict[str, Any] | None = None  # qdq: method, placement, target, census of quantized GEMMs
    task: str = "classification"  # classification (output `logits`) | embedding (output `embeddings`)
    pooling: str | None = None  # embedding: one of POOLINGS, attention-mask aware
    normalize: bool = False  # embedding: L2-normalised in the graph
    dim: int | None = None  # embedding: the output's width
    format: str = "qbert-onnx"

    NOT_OURS: ClassVar[str] = "{where} is not a qbert sidecar"
    INCOMPLETE: ClassVar[str] = "{where} is an incomplete qbert sidecar; re-run qbert export"

    def check(self, where: str) -> "ModelMeta":
        """Values later commands rely on (a hand-edited sidecar must not give a quiet wrong answer)."""
        def bad(name: str) -> QbertError:
            return QbertError(f"{where}: {name}={getattr(self, name)!r} is not valid; re-run the qbert command "
                              "that wrote it")

        def is_int(v: Any, low: int, high: int = 2**40) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high

        for name in ("hidden_size", "vocab_size", "num_layers", "num_heads", "intermediate_size"):
            if not is_int(getattr(self, name), 1):
                raise bad(name)
        if not is_int(self.max_length, 2, 1_000_000):
            raise bad("max_length")
        if not is_int(self.pad_token_id, 0, self.vocab_size - 1):
            raise bad("pad_token_id")
        ids = list(self.label2id.values()) if isinstance(self.label2id, dict) else None
        if ids is None or not all(isinstance(k, str) for k in self.label2id) or \
                sorted(i if is_int(i, 0) else -1 for i in ids) != list(range(len(ids))):
            raise bad("label2id")
        if self.task not in TASKS:
            raise bad("task")
        if self.task == "embedding" and (self.pooling not in POOLINGS or not isinstance(self.normalize, bool)
                                         or not is_int(self.dim, 1)):
            raise bad("pooling" if self.pooling not in POOLINGS else "normalize"
                      if not isinstance(self.normalize, bool) else "dim")
        if self.kind not in ("fp32", "qdq") or not isinstance(self.quantization, (dict, type(None))):
            raise bad("kind" if self.kind not in ("fp32", "qdq") else "quantization")
        for name, kind in (("source_model", str), ("tokenizer", str), ("source_path", (str, type(None))),
                           ("source_files", (dict, type(None)))):
            if not isinstance(getattr(self, name), kind):
                raise bad(name)
        return self

    @property
    def output(self) -> str:
        """The graph's one output: `embeddings` for an embedding model, `logits` for a classifier."""
        return "embeddings" if self.task == "embedding" else "logits"

    def write(self, onnx_path: Path | str, stage: Any = None) -> None:
        write_json(sidecar_path(onnx_path), self.to_json(), stage)


@dataclass
class PlanMeta(_Sidecar):
    """The sidecar `<plan>.json` of a TensorRT plan: the cache key and everything that shaped the plan."""

    onnx: str
    onnx_sha256: str
    backend: str  # tensorrt | tensorrt-rtx
    version: str
    trt_major: int
    sm: int  # target compute capability (86 = SM86)
    profile: list[list[int]]  # (batch, seq) min / opt / max
    opt_level: int
    hw_compat: bool
    cache_key: str
    plan_sha256: str
    plan_bytes: int
    target: str
    build_seconds: float = 0.0
    device: str | None = None  # the GPU in hand at build time, if any
    strongly_typed: bool = True
    cache_hit: bool = False
    format: str = "qbert-plan"

    NOT_OURS: ClassVar[str] = "{where} is not a qbert engine sidecar; rebuild with qbert build"
    INCOMPLETE: ClassVar[str] = "{where} is from an older qbert; rebuild with qbert build"


def load_meta(onnx_path: Path | str, verify: bool = True) -> ModelMeta:
    """The sidecar written next to every ONNX qbert produces; with `verify`, the ONNX (and its external data)
    must still be the file the sidecar describes."""
    require_file(onnx_path, "ONNX file")
    side = sidecar_path(onnx_path)
    if not side.is_file():
        raise QbertError(f"no sidecar {side} next to the ONNX; produce the ONNX with `qbert export`")
    meta = ModelMeta.from_json(read_json(side, "sidecar"), str(side)).check(str(side))
    if verify and meta.sha256 and sha256_onnx(onnx_path) != meta.sha256:
        raise QbertError(f"{onnx_path} does not match its sidecar {side.name} (sha256 differs): it was changed "
                         "after qbert wrote it; re-run the command that made it")
    return meta


def load_plan_meta(plan: Path | str) -> PlanMeta:
    """The sidecar of a TensorRT plan (format only; `check_plan` also checks the plan against it)."""
    side = sidecar_path(plan)
    if not side.is_file():
        raise QbertError(f"{plan} has no qbert sidecar ({side.name}); it is foreign or incomplete — "
                         "rebuild with qbert build")
    return PlanMeta.from_json(read_json(side, "engine sidecar"), str(side))
