"""The one thread on which a client's or a shard's torch work runs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch


def compute_thread(name: str, threads: int) -> ThreadPoolExecutor:
    """A single-thread executor for all of one client's (or one shard's) torch work,
    model construction included, with torch's thread count set on that thread.

    Why one thread, always the same: OpenMP keeps a thread team per calling thread (a
    new thread starts from OMP_NUM_THREADS, which Ray sets to 1), so work spread over an
    actor's pool threads, or a model built on the main thread, creates extra teams. Once
    a process holds more team threads than CPUs, libgomp cuts its spin between parallel
    regions to 100 iterations and every op waits for a futex wake-up: 2-thread steps took
    70 ms instead of 58 (measured with the earlier actors, which did exactly that).
    """
    return ThreadPoolExecutor(1, thread_name_prefix=name, initializer=torch.set_num_threads, initargs=(threads,))
