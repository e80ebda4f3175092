"""The one interface every engine implements: run a padded batch, describe itself, count its kernels."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class Engine(ABC):
    name: str = "engine"

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Logits [batch, labels] as float32 for int64 `input_ids`/`attention_mask`/`token_type_ids`."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What ran: engine, version, precision, threads/device — goes into every result JSON."""

    def census(self, batch: int = 1, seq: int = 128) -> dict[str, Any]:
        """GEMM precision census (integer vs float kernels, share of GEMM multiply-accumulates on integer
        kernels at batch×seq); empty where the engine cannot tell."""
        return {}

    def close(self) -> None:
        pass
