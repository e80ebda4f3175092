"""PyTorch FP32 reference engine: the Hugging Face model itself, for parity and accuracy baselines."""
from __future__ import annotations

from typing import Any

import numpy as np

from qbert.engines.base import Engine, check_feeds
from qbert.errors import QbertError


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, model: str, threads: int | None = None):
        import torch

        from qbert.exporter.hf import load_classifier

        if threads:
            torch.set_num_threads(threads)
        self.model_spec = model
        self.model, _ = load_classifier(model)

    @property
    def max_length(self) -> int:
        """Tokens per row when no sidecar says: 128, or fewer if the position table is shorter (longer rows
        cannot be embedded)."""
        from qbert.exporter.arch import positions

        return min(128, positions(self.model.config))

    @property
    def label2id(self) -> dict[str, int]:
        """The model's own label names → class ids."""
        return dict(self.model.config.label2id)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        check_feeds(feeds)
        import torch

        from qbert.exporter.hf import forward_inputs  # DistilBERT takes no token_type_ids

        try:
            with torch.inference_mode():
                out = self.model(**forward_inputs(self.model, {k: torch.from_numpy(v) for k, v in feeds.items()}))
        except Exception as e:  # noqa: BLE001 - torch's shape and index errors carry long traces: one line
            shape = "x".join(map(str, feeds["input_ids"].shape))
            text = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise QbertError(f"PyTorch failed running {self.model_spec} on a {shape} batch: {text}") from None
        return out.logits.float().numpy()

    def describe(self) -> dict[str, Any]:
        import torch

        return {"engine": self.name, "torch": torch.__version__, "model": self.model_spec,
                "threads": torch.get_num_threads(), "high_precision": "fp32"}
