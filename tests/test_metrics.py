"""Review metrics: queued on the request path, every one of them in the next scrape."""

from __future__ import annotations

import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from webhook.telemetry.metrics import FLUSH_AT, Metrics
from webhook.telemetry.multiproc import MULTIPROC_ENV


@pytest.fixture(autouse=True)
def one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # Another test may have exported a multiprocess directory; these metrics live in this process.
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.exposition()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_a_scrape_counts_every_review_answered_before_it() -> None:
    metrics = Metrics()
    metrics.review("/mutate/pods", "CREATE", "patched", 0.0003)
    metrics.review("/mutate/pods", "CREATE", "patched", 0.004)
    metrics.review("/validate/pods", "CREATE", "denied", 0.0002)
    seen = samples(metrics)
    patched = (("decision", "patched"), ("operation", "CREATE"), ("path", "/mutate/pods"))
    assert seen["multihome_admission_reviews_total", patched] == 2
    assert seen["multihome_admission_decision_seconds_count", (("path", "/mutate/pods"),)] == 2
    assert (
        seen["multihome_admission_decision_seconds_bucket", (("le", "0.0005"), ("path", "/mutate/pods"))] == 1
    )
    assert seen["multihome_admission_decision_seconds_sum", (("path", "/mutate/pods"),)] == pytest.approx(
        0.0043
    )
    denied = (("decision", "denied"), ("operation", "CREATE"), ("path", "/validate/pods"))
    assert seen["multihome_admission_reviews_total", denied] == 1


def test_reviews_counted_from_many_threads_while_flushing_are_all_counted() -> None:
    metrics = Metrics()

    def answer() -> None:
        for _ in range(FLUSH_AT + 500):  # past the queue's bound: flushes race with appends
            metrics.review("/validate/pods", "CREATE", "allowed", 0.0001)

    threads = [threading.Thread(target=answer) for _ in range(4)]

    def flush() -> None:
        for _ in range(200):
            metrics.flush()

    flusher = threading.Thread(target=flush)
    for thread in (*threads, flusher):
        thread.start()
    for thread in (*threads, flusher):
        thread.join()
    allowed = (("decision", "allowed"), ("operation", "CREATE"), ("path", "/validate/pods"))
    assert samples(metrics)["multihome_admission_reviews_total", allowed] == 4 * (FLUSH_AT + 500)
