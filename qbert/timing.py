"""Interleaved timing: several things timed in alternating rounds (A, B, C, then B, C, A or another order …)
rather than one after the other, so that a shared machine's drift (another job, a frequency change) hits all of
them alike and a difference between them is theirs. Below every layer that times anything (method auto's
candidates, reproduce's rows), so there is one timer, not one per caller.

Between one thing's turn and the next the timer pauses (SETTLE_S). A runtime's worker threads keep spinning for
a while after a run — each ONNX Runtime session and each OpenVINO compiled model has its own pool — and on a
machine with few cores the next thing timed shares the cores with them, so whichever came after the heaviest
spinner looked slow. Each round after the first runs in its own (fixed) shuffled order too, so that what one turn
leaves behind does not always fall on the same key. The measurements behind both, and the pause's length, are in
docs/guide/method-auto.md ("A pause between turns")."""
from __future__ import annotations

import random
import time
from typing import Any, Callable, Hashable, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)
SETTLE_S = 0.05  # seconds between turns: the previous runtime's threads stop spinning (module docstring)


def interleaved(timers: dict[K, Callable[[], np.ndarray]], rounds: int,
                advance: Callable[..., Any] | None = None, settle: float = SETTLE_S) -> dict[K, list[np.ndarray]]:
    """Call every timer once per round, in turn (each round after the first in a fixed shuffled order), for
    `rounds` rounds, pausing `settle` seconds before each turn; each returns the milliseconds of the runs it made.
    Returns, per key, one array per round (`advance(1)` after each round, for a progress bar)."""
    samples: dict[K, list[np.ndarray]] = {k: [] for k in timers}
    keys = list(timers)
    for r in range(rounds):
        # the first round in the given order, each later one in its own fixed shuffle: whatever a turn leaves
        # behind falls on different keys from round to round (a rotation would keep every key's predecessor)
        order = keys if r == 0 else random.Random(r).sample(keys, len(keys))
        for k in order:
            time.sleep(settle)
            samples[k].append(np.asarray(timers[k](), dtype=np.float64))
        if advance is not None:
            advance(1)
    return samples


def p50_and_spread(runs: list[np.ndarray]) -> tuple[float, list[float]]:
    """The median over all rounds' runs, and [lowest, highest] per-round median: how far one round's answer
    could have moved, which tells whether two close medians differ at all."""
    per_round = [float(np.median(r)) for r in runs]
    return float(np.median(np.concatenate(runs))), [min(per_round), max(per_round)]


def paired_p50s(runs: dict[K, list[np.ndarray]]) -> dict[K, tuple[float, list[float]]]:
    """Per key, p50 ms relative to the fastest key timed in the same rounds, and its [lowest, highest] per-round
    median (p50_and_spread): the median over rounds of the key's round median ÷ the fastest's round median, times
    the fastest's p50 over all rounds. A round the machine ran slow in slows every key in it, so the ratio inside a
    round keeps the difference between keys that pooling all rounds blurs with the drift between them."""
    pooled = {k: p50_and_spread(r) for k, r in runs.items()}
    per_round = {k: np.array([np.median(x) for x in r]) for k, r in runs.items()}
    ref = min(pooled, key=lambda k: pooled[k][0])
    usable = np.isfinite(per_round[ref]) & (per_round[ref] > 0)  # a round the timer could not resolve pairs nothing

    def paired(k: K) -> float:
        ratios = per_round[k][usable] / per_round[ref][usable]
        return float(np.median(ratios)) * pooled[ref][0] if k != ref and ratios.size else pooled[k][0]

    return {k: (paired(k), pooled[k][1]) for k in runs}


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
