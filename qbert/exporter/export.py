"""HF sequence classifier or sentence-embedding encoder → clean ONNX (opset ≥ 17, one LayerNormalization per
LayerNorm), parity-checked. A classifier outputs `logits`; an embedding model (a sentence-transformers folder, or an
encoder with a pooling argument) outputs `embeddings` [batch, dim], its pooling and normalisation in the graph.

The model is traced as arch.py's canonical encoder, which builds the additive attention mask itself
((1 − mask) · −10⁴, FP16-safe), so the graph carries none of the SDPA/mask-building junk
(IsNaN/Where/GatherND chains) that HF's mask utilities export to, and every architecture gets BERT's names. MatMul weights are renamed after the
module they belong to (`layer.3.output.dense.weight`), which is what calibration recipes refer to.
"""
from __future__ import annotations

import contextlib
import io
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from qbert._version import __version__
from qbert.artifacts import ModelMeta
from qbert.atomic import Staged, save_onnx, sidecar_json, staged, staged_sha256_onnx, write_errors_as
from qbert.errors import ConfigError, QbertError
from qbert.exporter.arch import positions as arch_positions, sizes
from qbert.exporter.pooling import Pooling, embed, read_sentence_transformers, resolve
from qbert.output_checks import check_outputs, output_folder, sidecar_kind
from qbert.data import INPUT_NAMES

MAX_OPSET = 20  # torch.onnx's TorchScript exporter
MAX_UNKNOWN = 0.8  # share of the parity sentences' words a tokenizer may map to its unknown token

# Sentence pairs of varied length for the parity check (padding is exercised by batching them).
PARITY_PAIRS = [
    ("What is the capital of France?", "Paris is the capital and most populous city of France."),
    ("When was the bridge built?", "Construction of the bridge began in 1933 and it opened to traffic four "
     "years later, after a long debate about its colour, cost and the safety of the workers who built it."),
    ("Who wrote it?", "Nobody knows."),
    ("How many moons does Mars have?", "Mars has two small moons, Phobos and Deimos, which may be captured "
     "asteroids."),
]


def parity_feeds(tokenizer: Any, max_length: int = 128, pairs: bool = True) -> dict[str, np.ndarray]:
    """The parity sentences as pairs (a classifier's input) or each on its own (an embedding model's)."""
    texts = ([q for q, _ in PARITY_PAIRS], [s for _, s in PARITY_PAIRS]) if pairs else \
        ([t for pair in PARITY_PAIRS for t in pair],)
    enc = tokenizer(*texts, truncation=True, max_length=max_length, padding=True, return_tensors="np")
    feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    feeds["token_type_ids"] = enc.get("token_type_ids", np.zeros_like(feeds["input_ids"])).astype(np.int64)
    return feeds


def unknown_share(tokenizer: Any, feeds: dict[str, np.ndarray]) -> float:
    """Of the parity sentences' tokens (special tokens aside), the share that became the unknown token. A folder
    whose vocabulary files are gone still loads (transformers builds a tokenizer of special tokens alone) and
    passes parity, since PyTorch and ONNX see the same ids — every word an [UNK]; a real vocabulary, even the
    test suite's toy one, leaves well under half of these words unknown."""
    unk = tokenizer.unk_token_id
    if unk is None:  # byte-level BPE: no word is unknown
        return 0.0
    ids = feeds["input_ids"][feeds["attention_mask"] == 1]
    words = ids[~np.isin(ids, [i for i in tokenizer.all_special_ids if i != unk])]
    return float((words == unk).mean()) if words.size else 1.0


def _rename_weights(model: Any) -> None:
    """Give MatMul weight initializers module names: `/layer.0/attention/self/query/MatMul` → `layer.0.attention.self.query.weight`."""
    inits = {t.name: t for t in model.graph.initializer}
    renames: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in inits:
            scope = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
            if scope and node.input[1] not in renames and scope + ".weight" not in inits:
                renames[node.input[1]] = scope + ".weight"
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    for old, new in renames.items():
        inits[old].name = new


def _share_identical_initializers(model: Any) -> None:
    """One initializer per distinct weight. The tracer writes a transposed copy of a Linear's weight per call, so
    ALBERT's one shared layer became one copy per depth (12× the file); byte-identical tensors are merged."""
    import hashlib

    from onnx import numpy_helper

    first: dict[tuple[int, tuple[int, ...], str], str] = {}
    alias: dict[str, str] = {}
    for t in model.graph.initializer:
        key = (t.data_type, tuple(t.dims), hashlib.sha256(numpy_helper.to_array(t).tobytes()).hexdigest())
        if key in first:
            alias[t.name] = first[key]
        else:
            first[key] = t.name
    if not alias:
        return
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    kept = [t for t in model.graph.initializer if t.name not in alias]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def _declare_all_inputs(model: Any) -> None:
    """Every qbert ONNX takes the same three inputs; the tracer drops one the model ignores (DistilBERT has no
    token types), so it is declared again, unused — engines and data loaders then need no per-model feeds."""
    from onnx import TensorProto, helper

    have = [i.name for i in model.graph.input]
    for pos, name in enumerate(INPUT_NAMES):
        if name not in have:
            model.graph.input.insert(pos, helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"]))
            have.insert(pos, name)


def what_to_export(model_spec: str, pooling: str | None = None, normalize: bool = False) -> Pooling | None:
    """The embedding computation to trace (None: a classifier, with its head). A classifier given a pooling is
    refused: its head makes its output. Errors name the arguments as export does."""
    from qbert.exporter.hf import check_classifier, is_classifier, load_config

    config = load_config(encoder_folder(model_spec, read_sentence_transformers(model_spec)), "model_spec")
    if is_classifier(config) and (pooling is not None or normalize):
        field, value = ("pooling", pooling) if pooling is not None else ("normalize", normalize)
        raise ConfigError(field, value, f"{model_spec} is a sequence classifier (architectures="
                          f"{config.architectures}): it is exported with its head, as logits; drop {{{field}}}",
                          **{field: value})
    embedding = resolve(model_spec, pooling, normalize)
    if embedding is None:
        check_classifier(config, model_spec, "model_spec", embedding_hint=True)
    return embedding


def encoder_folder(model_spec: str, embedding: Pooling | None) -> str:
    """Where the Hugging Face model is: the folder itself, or a sentence-transformers folder's Transformer
    subfolder."""
    if embedding is None or not embedding.transformer:
        return model_spec
    return str(Path(model_spec).expanduser() / embedding.transformer)


def export(model_spec: str, out: Path | str, opset: int = 17, tolerance: float = 1e-4,
           max_length: int | None = None, pooling: str | None = None, normalize: bool = False) -> ModelMeta:
    """Export, simplify, check parity, then atomically write `out` and its sidecar. Returns the sidecar.
    `pooling`/`normalize`: export a plain encoder as a sentence-embedding model (a sentence-transformers folder
    declares its own)."""
    import onnx
    import onnxruntime as ort
    import onnxscript.optimizer
    import torch

    from qbert.exporter.arch import canonical
    from qbert.exporter.hf import load_classifier, load_encoder

    out = Path(out)
    if opset < 17:
        raise ConfigError("opset", opset, "needs ≥ 17 for the fused LayerNormalization op")
    if opset > MAX_OPSET:
        raise ConfigError("opset", opset, f"the TorchScript exporter writes at most opset {MAX_OPSET}")
    check_outputs({"out": out}, {"model_spec": Path(model_spec).expanduser()}, kinds={"out": "onnx"})
    _check_not_another_models_export(out, model_spec)
    t0 = time.perf_counter()
    embedding = what_to_export(model_spec, pooling, normalize)
    hf_spec = encoder_folder(model_spec, embedding)
    model, tokenizer = load_classifier(model_spec, "model_spec") if embedding is None else \
        load_encoder(hf_spec, "model_spec")
    if embedding is not None and embedding.dim is not None and embedding.dim != model.config.hidden_size:
        raise ConfigError("model_spec", model_spec, f"its Pooling config pools {embedding.dim}-wide token "
                          f"embeddings, but the encoder's hidden size is {model.config.hidden_size}; restore the "
                          "Pooling config from the original checkpoint")
    positions = arch_positions(model.config)  # longer inputs cannot be embedded
    if max_length is not None and not 2 <= max_length <= positions:
        raise ConfigError("max_length", max_length, f"must be in [2, {positions}] (the model's position table)")
    # a sentence-transformers model truncates where its sentence_bert_config.json says; others at 128 tokens
    max_length = max_length or min((embedding and embedding.max_seq_length) or 128, positions)
    output = "logits" if embedding is None else "embeddings"
    feeds = parity_feeds(tokenizer, max_length, pairs=embedding is None)
    unknown = unknown_share(tokenizer, parity_feeds(tokenizer, 128, pairs=embedding is None))  # whole sentences
    if unknown > MAX_UNKNOWN:
        raise ConfigError("model_spec", model_spec, f"its tokenizer maps {unknown:.0%} of the words of English "
                          f"test sentences to its unknown token {tokenizer.unk_token}, so it has no usable "
                          "vocabulary (vocab.txt / tokenizer.json missing?); restore the tokenizer files from the "
                          "original checkpoint")
    types = getattr(model.config, "type_vocab_size", None)
    if types is not None and "token_type_embeddings" in dict(model.base_model.embeddings.named_children()) \
            and int(feeds["token_type_ids"].max()) >= types:
        raise ConfigError("model_spec", model_spec, f"its tokenizer marks sentence pairs with token type "
                          f"{int(feeds['token_type_ids'].max())}, but the model has type_vocab_size={types}; "
                          "pair them with a tokenizer that emits no token types, or fix the config")
    wrapper = canonical(model, embedding)
    args = tuple(torch.from_numpy(feeds[k]) for k in INPUT_NAMES)
    dyn = {k: {0: "batch", 1: "sequence"} for k in INPUT_NAMES}
    dyn[output] = {0: "batch"}
    with write_errors_as(out), output_folder(out.resolve().parent), \
            tempfile.TemporaryDirectory(prefix=".qbert-export-", dir=out.resolve().parent) as work:
        raw = Path(work) / "raw.onnx"  # large models: torch writes external data beside it, in `work`
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter is deliberate: it names nodes by module path and gives a cleaner
            # BERT graph than the dynamo exporter (which leaves Dropout and mask-building nodes).
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(wrapper, args, str(raw), input_names=list(INPUT_NAMES), output_names=[output],
                              dynamic_axes=dyn, opset_version=opset, do_constant_folding=True, dynamo=False)
            reference = _reference(model, feeds, embedding)
        with contextlib.redirect_stdout(io.StringIO()):  # some onnxscript versions print rewrite counts
            graph = onnxscript.optimizer.optimize(onnx.load(str(raw)))
        _share_identical_initializers(graph)
        _rename_weights(graph)
        _declare_all_inputs(graph)
        graph.producer_name, graph.producer_version = "qbert", __version__
        checked = Path(work) / "model.onnx"
        scratch = Staged()  # not staged(): a full disk here is reported as writing `out`, the file the user named
        save_onnx(graph, checked, scratch)
        scratch.commit()
        onnx.checker.check_model(str(checked), full_check=True)  # by path: works past protobuf's 2 GB
        got = ort.InferenceSession(str(checked), providers=["CPUExecutionProvider"]).run([output], feeds)[0]
        max_diff = float(np.abs(got - reference).max())
        if not max_diff <= tolerance:
            what = "logit" if embedding is None else "embedding"
            raise QbertError(f"parity check failed: max |Δ{what}| = {max_diff:.3g} > {tolerance:g} "
                             "(raise {tolerance} only if you know why)", tolerance=tolerance)
        cfg = model.config
        with staged() as stage:  # the ONNX and its sidecar appear together or not at all
            save_onnx(onnx.load(str(checked)), out, stage)
            parity = {"max_abs_logit_diff": max_diff, "tolerance": tolerance, "rows": len(feeds["input_ids"])}
            if embedding is not None:
                parity = {"max_abs_embedding_diff": max_diff, "min_cosine": _min_cosine(got, reference),
                          "tolerance": tolerance, "rows": len(feeds["input_ids"])}
            meta = _sidecar(model_spec, cfg, tokenizer, max_length, opset, parity,
                            sha256=staged_sha256_onnx(stage, out), seconds=time.perf_counter() - t0,
                            hf_spec=hf_spec, embedding=embedding)
            meta.write(out, stage)
    return meta


def _reference(model: Any, feeds: dict[str, np.ndarray], embedding: Pooling | None) -> np.ndarray:
    """The model's own output on the parity rows: its forward's logits, or its last hidden states pooled (and
    normalised) as sentence-transformers computes them."""
    import torch

    from qbert.exporter.hf import forward_inputs

    out = model(**forward_inputs(model, {k: torch.from_numpy(v) for k, v in feeds.items()}))
    if embedding is None:
        return out.logits.numpy()
    return embed(out.last_hidden_state, torch.from_numpy(feeds["attention_mask"]), embedding).numpy()


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)).min())


def _check_not_another_models_export(out: Path, model_spec: str) -> None:
    """`out` may hold an earlier export of this same model (re-exporting refreshes it), never another model's:
    quantized models and recipes name that file as their FP32 source and would silently point at other weights."""
    if sidecar_kind(out) != "fp32":
        return
    old = sidecar_json(out) or {}
    local = Path(model_spec).expanduser()
    now = str(local.resolve()) if local.is_dir() else model_spec
    was = old.get("source_path") or old.get("source_model")
    if was and was != now:
        raise ConfigError("out", out, f"holds the FP32 export of {was}, which quantized models and recipes name as "
                          f"their source; exporting {model_spec} over it would leave them pointing at other "
                          "weights: choose another path, or delete that export (and its sidecar) first")


def _sidecar(model_spec: str, cfg: Any, tokenizer: Any, max_length: int, opset: int, parity: dict[str, Any],
             sha256: str, seconds: float, hf_spec: str | None = None, embedding: Pooling | None = None) -> ModelMeta:
    """What later commands need to know about an exported model, without loading it. A local source is recorded
    by its absolute path and file hashes beside what was typed, so evaluating with engine torch finds that very
    folder from anywhere and can tell when its files changed. `hf_spec`: where the Hugging Face model is, when
    not `model_spec` itself (a sentence-transformers folder's Transformer subfolder)."""
    from qbert.exporter.provenance import file_hashes, fingerprint_of, model_files

    local = Path(hf_spec or model_spec).expanduser()
    folder = local.resolve() if local.is_dir() else None
    hashes = file_hashes(folder) if folder is not None else None
    return ModelMeta(
        source_model=model_spec, tokenizer=str(local.resolve()) if local.exists() else model_spec,
        source_path=str(folder) if folder is not None else None,
        source_files=model_files(hashes) if hashes is not None else None,
        model_type=cfg.model_type,
        label2id={} if embedding else {str(k): int(v) for k, v in cfg.label2id.items()},
        vocab_size=cfg.vocab_size, **sizes(cfg),
        pad_token_id=int(tokenizer.pad_token_id or 0), max_length=max_length, opset=opset, parity=parity,
        sha256=sha256, source_fingerprint=fingerprint_of(hashes) if hashes is not None else
        model_fingerprint(model_spec), seconds=round(seconds, 2),
        versions=versions(), **({} if embedding is None else {
            "task": "embedding", "pooling": embedding.mode, "normalize": embedding.normalize,
            "dim": int(cfg.hidden_size)}))


def model_fingerprint(model_spec: str) -> str:
    """sha256 over a local model folder's files (config, weights, tokenizer), so a cache can tell a changed
    model at the same path; a hub id is its own fingerprint."""
    import hashlib

    from qbert.exporter.provenance import file_hashes, fingerprint_of

    folder = Path(model_spec).expanduser()
    if not folder.is_dir():
        return hashlib.sha256(model_spec.encode()).hexdigest()
    return fingerprint_of(file_hashes(folder))


def versions() -> dict[str, str]:
    """Versions of everything that can change the numbers (recorded in every sidecar and recipe)."""
    import importlib.metadata as md

    out = {"qbert": __version__, "python": platform.python_version()}
    for pkg in ("torch", "transformers", "tokenizers", "onnx", "onnxruntime", "onnxscript", "numpy", "tensorrt",
                "tensorrt_rtx", "openvino"):
        try:
            out[pkg] = md.version(pkg.replace("_", "-"))
        except md.PackageNotFoundError:
            pass
    return out
