"""The one interleaved timer: turns alternate in an order shuffled every later round, each round's runs are kept
apart, and every turn starts only after the pause that lets the previous runtime's worker threads stop spinning."""
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
    order = "".join(n for n, _ in calls)
    assert order[:3] == "abc" and all(sorted(order[i:i + 3]) == list("abc") for i in (3, 6, 9)) and ticks == [1] * 4
    gaps = np.diff([t for _, t in calls])
    assert gaps.min() >= SETTLE_S * 0.95, gaps  # (sleep may wake a hair early on some clocks)
    assert [r.tolist() for r in out["b"]] == [[5.0, 6.0]] * 4
    assert p50_and_spread(out["a"]) == (1.5, [1.5, 1.5])


def test_no_key_always_follows_the_same_one():
    """With more keys than rounds a rotation keeps each key's predecessor; the shuffled rounds do not (and stay
    the same from run to run)."""
    keys = "ABCDEFGH"
    def orders() -> list[str]:
        calls: list[str] = []
        interleaved({k: (lambda k=k: calls.append(k) or [1.0]) for k in keys}, rounds=5, settle=0)
        return ["".join(calls[i:i + len(keys)]) for i in range(0, len(calls), len(keys))]
    rounds = orders()
    assert rounds == orders() and rounds[0] == keys and all(sorted(r) == list(keys) for r in rounds)
    for k in keys[1:]:
        before = {r[r.index(k) - 1] if r.index(k) else None for r in rounds}
        assert len(before) > 1, (k, rounds)
    assert interleaved({}, rounds=3) == {}


def test_settle_can_be_set_per_call():
    calls: list[float] = []
    interleaved({"a": lambda: calls.append(time.perf_counter()) or [1.0],
                 "b": lambda: calls.append(time.perf_counter()) or [1.0]}, rounds=2, settle=0.2)
    assert np.diff(calls).min() >= 0.19
