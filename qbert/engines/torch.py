"""PyTorch FP32 reference engine: the Hugging Face model itself, for parity and accuracy baselines."""
from __future__ import annotations

from typing import Any

import numpy as np

from qbert.engines.base import Engine


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
    def label2id(self) -> dict[str, int]:
        """The model's own label names → class ids."""
        return dict(self.model.config.label2id)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        from qbert.exporter.hf import forward_inputs  # DistilBERT takes no token_type_ids

        with torch.inference_mode():
            out = self.model(**forward_inputs(self.model, {k: torch.from_numpy(v) for k, v in feeds.items()})).logits
        return out.float().numpy()

    def describe(self) -> dict[str, Any]:
        import torch

        return {"engine": self.name, "torch": torch.__version__, "model": self.model_spec,
                "threads": torch.get_num_threads(), "high_precision": "fp32"}
