"""The benchmarks' one timer: best-of-``repeats`` wall time, variants interleaved (imported by the scripts beside it)."""
from __future__ import annotations

import time
from typing import Callable


def timed(fns: dict, repeats: int, sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Best-of-``repeats`` wall time of each function, runs interleaved (A B C A B C ...) after one warm-up
    each, so load from other processes on a shared CPU hits every variant alike; ``sync`` (e.g. a CUDA
    synchronize) runs before the clock starts and before it stops."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[key].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}
