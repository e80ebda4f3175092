"""The one interleaved timer: turns alternate, each round's runs are kept apart, and every turn starts only after
the pause that lets the previous runtime's worker threads stop spinning."""
from __future__ import annotations

import time

import numpy as np

from qbert.timing import SETTLE_S, interleaved, p50_and_spread


def test_turns_alternate_and_each_starts_after_the_settle_pause():
    calls: list[tuple[str, float]] = []

    def timer(name: str, ms: float):
        def run() -> np.ndarray:
            calls.append((name, time.perf_counter()))
            return np.array([ms, ms + 1.0])
        return run

    ticks = []
    out = interleaved({"a": timer("a", 1.0), "b": timer("b", 5.0)}, rounds=3, advance=ticks.append)
    assert [n for n, _ in calls] == ["a", "b"] * 3 and ticks == [1, 1, 1]
    gaps = np.diff([t for _, t in calls])
    assert gaps.min() >= SETTLE_S * 0.95, gaps  # (sleep may wake a hair early on some clocks)
    assert [r.tolist() for r in out["b"]] == [[5.0, 6.0]] * 3
    assert p50_and_spread(out["a"]) == (1.5, [1.5, 1.5])


def test_settle_can_be_set_per_call():
    calls: list[float] = []
    interleaved({"a": lambda: calls.append(time.perf_counter()) or [1.0],
                 "b": lambda: calls.append(time.perf_counter()) or [1.0]}, rounds=2, settle=0.2)
    assert np.diff(calls).min() >= 0.19
