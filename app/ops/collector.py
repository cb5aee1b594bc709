"""The cyclic garbage collector of a serving process, settled once the app is built.

A federated search allocates tens of thousands of containers (the archives' DICOM JSON, the mapped
resources), nearly all freed by reference counting when the response is sent. With CPython's default
thresholds (700, 10, 10) young collections run every ~700 net allocations and the oldest generation's
collections walk the whole long-lived heap (Flask, the data dictionaries, the mapping tables) again and
again: measured in one process over the canned archives at bb93623, 10 ms of a 40 ms search (8 of them in
generation-2 walks); settled, about 3 ms. After start-up everything alive is moved out of the collector's
sight (gc.freeze) and generation 0 collects every `ops.gc_thresholds[0]` allocations instead.
"""

from __future__ import annotations

import gc


def settle_collector(thresholds: tuple[int, int, int]) -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
