"""The one interface every engine implements: run a padded batch, time it, describe itself, count its kernels.

Engines are context managers (`with open_engine(...) as eng:`), so device buffers and sessions are released
however the block ends. As Polygraphy's runners do, constructing one only checks its arguments and files (cheap,
and every refusal comes before any work); the heavy work — a session, a compiled model, a deserialized plan —
is `activate`, done on entering the context or on first use."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class Engine(ABC):
    name: str = "engine"
    _active: bool = False

    def activate(self) -> None:
        """Load what runs the model (once). Engines whose loading is cheap need not override it."""

    def active(self) -> "Engine":
        """This engine, activated if it was not yet."""
        if not self._active:
            self.activate()
            self._active = True
        return self

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The model's one output as float32 for int64 `input_ids`/`attention_mask`/`token_type_ids`: logits
        [batch, labels] of a classifier, embeddings [batch, dim] of an embedding model."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What ran: engine, version, precision, threads/device — goes into every result JSON."""

    def time(self, feeds: dict[str, np.ndarray], warmup: int, iters: int, cuda_graph: bool = False,
             advance: Any = None) -> np.ndarray:
        """Milliseconds per run after `warmup` untimed runs: wall clock here; GPU engines use CUDA events
        (and may replay a captured CUDA graph)."""
        if cuda_graph:
            from qbert.errors import ConfigError

            raise ConfigError("cuda_graph", cuda_graph, f"replays a CUDA graph on a GPU engine (tensorrt), not "
                              f"{self.name}")
        from qbert.timing import wall_ms

        for _ in range(warmup):
            self.run(feeds)
        return wall_ms(lambda: self.run(feeds), iters, advance)

    def census(self, batch: int = 1, seq: int | None = None) -> dict[str, Any]:
        """GEMM precision census (integer vs float kernels, share of GEMM multiply-accumulates on integer
        kernels at batch×seq); empty where the engine cannot tell."""
        census_shape(batch, seq)
        return {}

    def close(self) -> None:
        """Release sessions and device memory (idempotent)."""

    def __enter__(self) -> "Engine":
        return self.active()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def check_feeds(feeds: Any) -> None:
    """What every engine's run takes: int64-able arrays under the input names, input_ids 2-D [batch, seq]. Checked
    once at the door, so a script passing None or a list gets one ConfigError, not a runtime's own exception."""
    from qbert.errors import ConfigError

    ids = feeds.get("input_ids") if isinstance(feeds, dict) else None
    if not isinstance(ids, np.ndarray) or ids.ndim != 2 or not all(
            isinstance(v, np.ndarray) and v.shape == ids.shape for v in feeds.values()):
        raise ConfigError("feeds", type(feeds).__name__, "must be a dict of equally shaped [batch, seq] numpy "
                          "arrays with input_ids (attention_mask, token_type_ids), like qbert.data.random_feeds")


def longest_sequence(rows: int | None, path: str) -> int:
    """The longest sequence a model embeds (huge if no position table was found): the table's `rows`, less the
    offset RoBERTa-style models number positions from, which the sidecar's model type and pad id tell."""
    from qbert.atomic import sidecar_json
    from qbert.exporter.arch import usable_positions

    if rows is None:
        return 1 << 30
    side = sidecar_json(path)
    try:
        return usable_positions(str(side["model_type"]), rows, int(side.get("pad_token_id") or 0))
    except (ValueError, KeyError, TypeError, AttributeError):  # no sidecar (None) or not one of ours
        return rows


def census_shape(batch: Any, seq: Any, longest: int | None = None) -> tuple[int, int]:
    """The batch × seq a census profiles, checked as bench checks its flags: a census runs the model, so a
    wrong type or size would fail inside the runtime (or be clipped unseen) rather than be named. `seq` None:
    128, or the model's `longest` if shorter; longer than `longest` is refused, as bench refuses it."""
    from qbert.errors import ConfigError, check_range

    check_range("batch", batch, 1)
    check_range("seq", seq, 1, optional=True)
    if longest is None:
        return batch, seq or 128
    if seq is not None and seq > longest:
        raise ConfigError("seq", seq, f"the model takes at most {longest} tokens (its position table)")
    return batch, seq or min(128, longest)
