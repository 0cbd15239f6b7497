"""Tables of the job system (jobs, files, batches, S0 contexts). Filled in by the jobs work."""

from __future__ import annotations
