"""Reading the Prometheus text of GET /metrics in tests."""

from __future__ import annotations

import re


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of the sample `name{labels}` (not of a # HELP line that mentions it); 0 when absent."""
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = (
        "^" + re.escape(name) + (r"\{" + re.escape(label_text) + r"\}" if labels else "") + r" ([0-9.e+-]+)"
    )
    match = re.search(pattern, metrics, re.MULTILINE)
    return float(match.group(1)) if match else 0.0
