"""The control-plane API under ``/admin/v1`` (admin scope only)."""

from __future__ import annotations
