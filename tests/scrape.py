"""Reading the operator endpoint's Prometheus text back, with prometheus-client's parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import Metrics

__all__ = ["sample", "sample_of"]


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` whose labels include ``labels`` (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def sample_of(metrics: Metrics | None, name: str, **labels: str) -> float:
    """``sample`` of what ``metrics`` would serve now."""
    assert metrics is not None, "the runtime has no metrics: set metrics_port"
    return sample(metrics.exposition().decode(), name, **labels)
