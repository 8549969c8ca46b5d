"""Prediction: a whole scan segmented by sliding windows, streamed, on the scan's own grid.

- :mod:`.settings`: the ``infer:`` config section, the device, the CPU threads.
- :mod:`.windows`: MONAI's window positions and weights.
- :mod:`.streaming`: the slab accumulator and the streamed sliding window (and mirroring).
- :mod:`.network`: the network made ready (head split off; CPU fast path or MONAI's modules).
- :mod:`.cpu_fastpath`: the CPU-only rewrites, fenced behind ``infer.cpu_fastpath``.
- :mod:`.native_grid`: labels mapped back onto the scan's ingested grid.
- :mod:`.postprocess`: background outside the body, small pieces dropped.
"""

from .native_grid import check_native_grid, predict_native
from .network import (
    Segmenter,
    keep_freed_memory,
    predict_labels,
    prepare_network,
    uses_cpu_fast_path,
)
from .postprocess import PostprocessSettings, postprocess_labels
from .settings import InferSettings, resolve_device, synchronise, use_cpu_threads
from .windows import count_windows

__all__ = [
    "InferSettings",
    "PostprocessSettings",
    "Segmenter",
    "check_native_grid",
    "count_windows",
    "keep_freed_memory",
    "postprocess_labels",
    "predict_labels",
    "predict_native",
    "prepare_network",
    "resolve_device",
    "synchronise",
    "use_cpu_threads",
    "uses_cpu_fast_path",
]
