"""Entry points of DingHook: `python -m dingbot.server` and the `dingbot` command."""

import os

# One BLAS thread per process, set before numpy loads: the embedder's small matrix products gain nothing
# from more, and OpenBLAS's spinning threads took the cores from the event loop (measured with
# bench/delivery.py, 1,000 callbacks at 200/s on 2 cores: ack p99 715-851 ms with 2, 30-122 ms with 1).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
