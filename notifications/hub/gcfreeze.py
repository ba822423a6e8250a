"""GC freezing: keep the streams' long-lived objects out of CPython's full collections."""

from __future__ import annotations

import gc
import time

from .. import conf

# Seconds between two full garbage collections of everything; see keep_long_lived_out_of_gc.
GC_THAW_INTERVAL = 600.0
_next_thaw = 0.0


def keep_long_lived_out_of_gc() -> None:
    """Keep CPython's full garbage collections short while thousands of streams are open.

    Each open stream holds a few hundred objects (its request, response, generator and
    Twisted's side), all long-lived. A full collection traverses every one of them, and no
    stream of the process moves until it ends. Freezing them (gc.freeze()) after each session
    check takes them out of the collector's sight, so collections only look at what is newer
    (freeze_new_objects() freezes between checks too, and never thaws).
    Garbage in reference cycles among frozen objects (a stream closed since) waits for the
    thaw: every GC_THAW_INTERVAL seconds everything is unfrozen and collected once.
    """
    global _next_thaw
    if not conf.gc_freeze():
        return
    now = time.monotonic()
    if now >= _next_thaw:
        if _next_thaw:
            gc.unfreeze()
            gc.collect()
        _next_thaw = now + GC_THAW_INTERVAL
    gc.freeze()


def freeze_new_objects() -> None:
    """Freeze what exists now, without the thaw: for the hub's hand-outs.

    A hand-out's rows live until their streams have sent them, long enough to be promoted to
    the oldest generation and traversed by its full collections. Frozen, an object is still
    freed by its reference count; cyclic garbage frozen with it (a closed stream's, an
    exception's traceback) waits for the next thaw, as after a session check. The thaw, a
    full collection of everything, stays with the session checks: here it would hold up the
    rows just handed out.
    """
    if conf.gc_freeze():
        gc.freeze()
