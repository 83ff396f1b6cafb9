"""One pool of helper threads per process, for the work that releases the GIL (Pillow, ISA-L, numba).

Decoding and resizing a mammogram split their work across it, so one upload
uses more than one core before the network runs.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

POOL_THREADS = 4
MIN_SPLIT_PIXELS = 1 << 19
"""Work on fewer pixels stays on the calling thread: handing it over would cost more than it saves."""
_pool: tuple[int, ThreadPoolExecutor] | None = None


def helper_pool() -> ThreadPoolExecutor:
    """This process's helper threads; a forked child (e.g. a DataLoader worker) makes its own."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="deepminer-helper"))
    return _pool[1]


def worth_splitting(pixels: int) -> bool:
    """Whether work on ``pixels`` pixels is large enough, and the machine has the cores, for helper threads."""
    return pixels >= MIN_SPLIT_PIXELS and (os.cpu_count() or 1) > 1
