"""How a long-running frame process keeps its memory: freed frame buffers stay in the process (glibc), and the
objects alive at startup stay out of the cyclic collector's full passes.

Every matted frame allocates and frees arrays of 1-4 MB: the decoded RGB frame, alpha, the foreground, the
background plate, the composite, the encoder's frame. glibc serves blocks above its mmap threshold with a fresh
``mmap`` and unmaps them on ``free``, so each frame faults every page of them in again (about 0.25 ms a MB).
Measured at 1280x720 in process: compositing onto green 11.3 -> 3.0 ms. Fixed thresholds keep freed blocks in the
heap for the next frame, at the price of a heap that does not shrink (the working set of a few frames).

Process-wide, so only the long-running processes that matte frames call it (``cuematte serve``, ``virtualcam``,
``bench``); a no-op where there is no glibc, or where the user set the thresholds themselves
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or their ``GLIBC_TUNABLES``).

A full pass of Python's cyclic collector walks every tracked object and holds the GIL throughout, so every
session's frames wait for it. After startup the process holds some 75,000 objects (modules, the loaded model, the
app) that live as long as it does; freezing them leaves the service's full pass after a closed session (the one
that frees its aiortc objects) to the few thousand objects that came later: measured in ``bench --webrtc``,
44-88 ms -> 1-14 ms on a slow host. Frozen objects are still freed by reference counting; only a cycle among
them would stay.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
MMAP_THRESHOLD = 32 << 20  # glibc's largest accepted value on 64-bit: a 1080p float32 alpha is 8 MB
TRIM_THRESHOLD = 256 << 20  # free heap kept at the top before it is returned to the kernel


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for frame-sized buffers. True when they were set."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if ("MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ
            or "glibc.malloc.mmap_threshold" in tunables or "glibc.malloc.trim_threshold" in tunables):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not done:
        log.info("mallopt refused the frame-buffer thresholds; frames keep glibc's defaults")
    return done


def freeze_startup_heap() -> int:
    """Move every object alive now out of the collector's generations (``gc.freeze``), after collecting what is
    already garbage. Call once the model and the app are loaded; returns the number of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def unfreeze_heap() -> None:
    """Hand the frozen objects back to the collector (a measurement ending inside a longer-lived process)."""
    gc.unfreeze()
