"""Give the current thread its Python name in the kernel too (ps, top, /proc/<pid>/task/*/comm).

Python 3.11 names threads for Python only; operators (and tests) looking from outside the process
see every thread as `python3`. Linux takes 15 bytes of name.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

_PR_SET_NAME = 15


def name_native_thread() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_NAME, threading.current_thread().name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass  # a name is a convenience: never a reason to fail
