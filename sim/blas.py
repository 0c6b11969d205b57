"""Pin the BLAS thread count of the running process for a block of code.

Training and evaluation run many small matrix products. On a machine shared with RTL
simulations (and with ``pytest -n 2``), a multi-threaded OpenBLAS spin-waits for cores it
does not get and runs an order of magnitude slower; one thread per process is both faster
there and independent of the machine's core count (so trained weights do not depend on
it). numpy has no API for this, so :func:`blas_threads` calls OpenBLAS's own
``*_set_num_threads`` entry point of the library numpy loaded. With another BLAS, or none
found, it does nothing (and :func:`blas_thread_count` returns ``None``).
"""

from __future__ import annotations

import contextlib
import ctypes
import re

import numpy as np  # noqa: F401  (loads the BLAS library this module looks for)

__all__ = ["blas_threads", "blas_thread_count"]

_API = None


def _openblas():
    """(get, set) functions of the loaded OpenBLAS, or None."""
    global _API
    if _API is not None:
        return _API or None
    _API = False
    try:
        with open("/proc/self/maps") as handle:
            paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so[\w.]*)", handle.read())))
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in (
                ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                ("openblas_get_num_threads", "openblas_set_num_threads")):
            if hasattr(lib, get_name) and hasattr(lib, set_name):
                get_fn, set_fn = getattr(lib, get_name), getattr(lib, set_name)
                get_fn.restype, get_fn.argtypes = ctypes.c_int, []
                set_fn.restype, set_fn.argtypes = None, [ctypes.c_int]
                _API = (get_fn, set_fn)
                return _API
    return None


def blas_thread_count() -> int | None:
    api = _openblas()
    return int(api[0]()) if api else None


@contextlib.contextmanager
def blas_threads(n: int = 1):
    """Run the block with ``n`` BLAS threads, restoring the previous count afterwards."""
    api = _openblas()
    if not api:
        yield
        return
    before = int(api[0]())
    api[1](int(n))
    try:
        yield
    finally:
        api[1](before)
