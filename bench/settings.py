"""Fixed settings shared by the ack-latency bench modules (see bench/ack_latency.py)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

HOST = "127.0.0.1"
BENCH_SECRET = "bench-secret-not-for-production"  # a throwaway signing secret

TARGET_ACK_P99_MS = 10.0
TARGET_OVERHEAD_P50_MS = 5.0

STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0  # the service drains in-flight replies for up to 10 s on SIGTERM
REQUEST_TIMEOUT_S = 10.0
PEOPLE = 50
