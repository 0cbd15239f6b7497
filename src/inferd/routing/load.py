"""A replica's real load, read from the metrics its engine publishes.

Each engine kind publishes its scheduler's state as Prometheus gauges on ``/metrics``
(running requests, waiting requests, KV cache use from 0 to 1):

- ``vllm``: ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
  ``vllm:kv_cache_usage_perc`` (``vllm:gpu_cache_usage_perc`` before vLLM V1);
- ``sglang``: ``sglang:num_running_reqs``, ``sglang:num_queue_reqs``, ``sglang:token_usage``;
- ``llamacpp``: ``llamacpp:requests_processing``, ``llamacpp:requests_deferred``,
  ``llamacpp:kv_cache_usage_ratio``;
- ``inferd``: ``inferd_replica_in_flight`` (else ``inferd_requests_in_flight``), nothing
  waiting, no KV cache gauge.

A replica says which one it speaks with ``options.metrics`` (one of ``FORMATS``, or ``none``
to read nothing); without it the format is detected from the names found. Series labelled with
a model (``model_name`` or ``model``) are kept to the replica's upstream model when it is among
them (a server that serves several models), else every series is summed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["FORMATS", "Load", "detect", "parse"]

# format -> (running gauges, waiting gauges, KV cache gauges); the first present of each wins
_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "vllm": (
        ("vllm:num_requests_running",),
        ("vllm:num_requests_waiting",),
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    ),
    "sglang": (("sglang:num_running_reqs",), ("sglang:num_queue_reqs",), ("sglang:token_usage",)),
    "llamacpp": (
        ("llamacpp:requests_processing",),
        ("llamacpp:requests_deferred",),
        ("llamacpp:kv_cache_usage_ratio",),
    ),
    "inferd": (("inferd_replica_in_flight", "inferd_requests_in_flight"), (), ()),
}
FORMATS: tuple[str, ...] = tuple(_NAMES)
# The lines of an exposition about the gauges above (their samples, HELP and TYPE): only those
# are parsed, a server's hundreds of histogram lines are skipped by one scan.
_WANTED = re.compile(
    r"^(?:# (?:HELP|TYPE) )?(?:"
    + "|".join(re.escape(n) for names in _NAMES.values() for group in names for n in group)
    + r")(?:[ {].*)?$",
    re.MULTILINE,
)
_MODEL_LABELS = ("model_name", "model")


@dataclass(frozen=True)
class Load:
    """What an engine reports: requests it runs, requests it queues, its KV cache use."""

    running: float
    waiting: float
    kv_cache_usage: float | None = None

    @property
    def busy(self) -> float:
        return self.running + self.waiting


def _gauges(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every gauge (and untyped) series of an exposition, by metric name."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    wanted = "\n".join(m.group(0) for m in _WANTED.finditer(text))
    for family in text_string_to_metric_families(wanted + "\n" if wanted else ""):
        if family.type not in ("gauge", "unknown"):
            continue
        for sample in family.samples:
            if sample.name == family.name:
                out.setdefault(family.name, []).append((dict(sample.labels), sample.value))
    return out


def detect(names: Iterable[str]) -> str | None:
    """The format whose running gauge is among ``names`` (None: none of them)."""
    present = set(names)
    for fmt, (running, _, _) in _NAMES.items():
        if any(name in present for name in running):
            return fmt
    return None


def _value(
    series: list[tuple[dict[str, str], float]], model: str | None, reduce: Any = sum
) -> float:
    if model:
        mine = [
            v for labels, v in series if any(labels.get(label) == model for label in _MODEL_LABELS)
        ]
        if mine:
            return float(reduce(mine))
    return float(reduce(v for _, v in series))


def parse(text: str, fmt: str | None = None, model: str | None = None) -> Load | None:
    """The load in a Prometheus exposition ``text`` in format ``fmt`` (None: detected);
    None when it holds no running gauge of that format (an HTML page, say). Raises
    ``ValueError`` on a gauge line that is not an exposition's."""
    gauges = _gauges(text)
    fmt = fmt or detect(gauges)
    if fmt is None or fmt not in _NAMES:
        return None
    running_names, waiting_names, kv_names = _NAMES[fmt]
    running = next((gauges[n] for n in running_names if n in gauges), None)
    if running is None:
        return None
    waiting = next((gauges[n] for n in waiting_names if n in gauges), None)
    kv = next((gauges[n] for n in kv_names if n in gauges), None)
    return Load(
        running=max(0.0, _value(running, model)),
        waiting=0.0 if waiting is None else max(0.0, _value(waiting, model)),
        kv_cache_usage=None if kv is None else _value(kv, model, max),
    )
