"""What every rtml UDF does once in its Python worker, after it is open."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Keep what the worker holds once its UDF is open out of the cycle collector's full passes.

    That is Flink's and Beam's modules, pandas, pyarrow, scikit-learn and the model: ~200k
    tracked objects, which every full collection walks (80-90 ms on the 2-core machine). The
    collector runs one on its own whenever enough survivors pile up, inside a bundle, so the
    bundle, and the Flink chain that waits for it, stop for that long. Frozen objects are never
    collected as cycles, which suits what lives as long as the worker; what is garbage already
    is collected first.
    """
    gc.collect()
    gc.freeze()
