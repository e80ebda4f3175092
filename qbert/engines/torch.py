"""PyTorch FP32 reference engine: the Hugging Face model itself, for parity and accuracy baselines. An embedding
model runs its own forward, then the pooling (and normalisation) its ONNX was exported with."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qbert.engines.base import Engine, check_feeds
from qbert.errors import QbertError
from qbert.exporter.pooling import Pooling


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, model: str, threads: int | None = None, pooling: Pooling | None = None):
        """`pooling`: run `model` as that embedding model (an ONNX's sidecar says how it was exported); without
        it, a sentence-transformers folder runs with its own pooling and anything else as a classifier."""
        import torch

        from qbert.exporter.hf import classifier_config, encoder_config
        from qbert.exporter.pooling import read_sentence_transformers

        if threads:
            torch.set_num_threads(threads)
        self.model_spec = model
        self.pooling = pooling or read_sentence_transformers(model, "model")
        self.declared_length = self.pooling.max_seq_length if self.pooling else None
        if self.pooling is not None and self.pooling.transformer:
            model = str(Path(model).expanduser() / self.pooling.transformer)
        self.hf_spec = model  # the Hugging Face folder or id loaded (its tokenizer's too)
        self.config = classifier_config(model) if self.pooling is None else encoder_config(model)  # checked here
        self.task = "classification" if self.pooling is None else "embedding"

    def activate(self) -> None:
        from qbert.exporter.hf import load_classifier, load_encoder

        self._model, _ = load_classifier(self.hf_spec) if self.pooling is None else load_encoder(self.hf_spec)

    @property
    def model(self) -> Any:
        """The loaded Hugging Face model (loaded on first use)."""
        return self.active()._model

    @property
    def max_length(self) -> int:
        """Tokens per row when no sidecar says: 128, or fewer if the position table is shorter (longer rows
        cannot be embedded)."""
        from qbert.exporter.arch import positions

        return min(self.declared_length or 128, positions(self.config))

    @property
    def label2id(self) -> dict[str, int]:
        """The model's own label names → class ids (none for an embedding model)."""
        return dict(self.config.label2id) if self.pooling is None else {}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        check_feeds(feeds)
        import torch

        from qbert.exporter.hf import forward_inputs  # DistilBERT takes no token_type_ids
        from qbert.exporter.pooling import embed

        try:
            with torch.inference_mode():
                out = self.model(**forward_inputs(self.model, {k: torch.from_numpy(v) for k, v in feeds.items()}))
                if self.pooling is not None:
                    return embed(out.last_hidden_state, torch.from_numpy(feeds["attention_mask"]),
                                 self.pooling).float().numpy()
        except Exception as e:  # noqa: BLE001 - torch's shape and index errors carry long traces: one line
            shape = "x".join(map(str, feeds["input_ids"].shape))
            text = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise QbertError(f"PyTorch failed running {self.model_spec} on a {shape} batch: {text}") from None
        return out.logits.float().numpy()

    def describe(self) -> dict[str, Any]:
        import torch

        return {"engine": self.name, "torch": torch.__version__, "model": self.model_spec,
                "threads": torch.get_num_threads(), "high_precision": "fp32",
                **({"pooling": self.pooling.describe()} if self.pooling else {})}
