"""Interleaved timing: several things timed in alternating rounds (A, B, C, A, B, C …) rather than one after the
other, so that a shared machine's drift (another job, a frequency change) hits all of them alike and a
difference between them is theirs. Below every layer that times anything (method auto's candidates, reproduce's
rows), so there is one timer, not one per caller."""
from __future__ import annotations

import time
from typing import Any, Callable, Hashable, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)


def interleaved(timers: dict[K, Callable[[], np.ndarray]], rounds: int,
                advance: Callable[..., Any] | None = None) -> dict[K, list[np.ndarray]]:
    """Call every timer once per round, in turn, for `rounds` rounds; each returns the milliseconds of the runs
    it made. Returns, per key, one array per round (`advance(1)` after each round, for a progress bar)."""
    samples: dict[K, list[np.ndarray]] = {k: [] for k in timers}
    for _ in range(rounds):
        for k, timer in timers.items():
            samples[k].append(np.asarray(timer(), dtype=np.float64))
        if advance is not None:
            advance(1)
    return samples


def p50_and_spread(runs: list[np.ndarray]) -> tuple[float, list[float]]:
    """The median over all rounds' runs, and [lowest, highest] per-round median: how far one round's answer
    could have moved, which tells whether two close medians differ at all."""
    per_round = [float(np.median(r)) for r in runs]
    return float(np.median(np.concatenate(runs))), [min(per_round), max(per_round)]


def wall_ms(run: Callable[[], Any], iters: int, advance: Callable[..., Any] | None = None) -> np.ndarray:
    """Milliseconds of each of `iters` calls of `run`, by the wall clock (`advance(1)` after each)."""
    ms = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        run()
        ms[i] = (time.perf_counter() - t0) * 1e3
        if advance is not None:
            advance(1)
    return ms
