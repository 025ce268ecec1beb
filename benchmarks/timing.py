"""The one timer of the benchmark scripts, shared by `bench_fairseq2.py` and the reference env's `fairseq2_worker.py`
(which imports nothing of this package: this module needs only the standard library)."""

import time


def timed(fn, repeats: int = 1):
    """fn's result and its median time over `repeats` calls (the cheap encode rows repeat: one pass is noisy)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return result, sorted(seconds)[len(seconds) // 2]
