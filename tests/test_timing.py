"""The one interleaved timer: turns alternate in an order rotated every round, each round's runs are kept apart,
and every turn starts only after the pause that lets the previous runtime's worker threads stop spinning."""
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
    out = interleaved({"a": timer("a", 1.0), "b": timer("b", 5.0), "c": timer("c", 5.0)}, rounds=4,
                      advance=ticks.append)
    # every key once a round, each round's order rotated so that no key always follows the same one
    assert "".join(n for n, _ in calls) == "abc" "bca" "cab" "abc" and ticks == [1, 1, 1, 1]
    gaps = np.diff([t for _, t in calls])
    assert gaps.min() >= SETTLE_S * 0.95, gaps  # (sleep may wake a hair early on some clocks)
    assert [r.tolist() for r in out["b"]] == [[5.0, 6.0]] * 4
    assert p50_and_spread(out["a"]) == (1.5, [1.5, 1.5])


def test_settle_can_be_set_per_call():
    calls: list[float] = []
    interleaved({"a": lambda: calls.append(time.perf_counter()) or [1.0],
                 "b": lambda: calls.append(time.perf_counter()) or [1.0]}, rounds=2, settle=0.2)
    assert np.diff(calls).min() >= 0.19
