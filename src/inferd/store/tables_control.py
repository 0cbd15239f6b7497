"""Tables of the control plane (API keys, models, replicas, usage). Filled in by that work."""

from __future__ import annotations
