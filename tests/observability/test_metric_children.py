"""Labelled children are found by the labels a caller names, in whatever order it names them."""

from __future__ import annotations

from typing import cast

from agentstage.observability import metrics as m


def _line(text: str, prefix: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)]
    assert len(values) == 1, (prefix, text)
    return values[0]


def test_a_labelled_child_is_the_same_whatever_order_its_labels_come_in() -> None:
    calls = m.counter("agent_test_children_total", "Test counter.", ("tool", "status"))
    calls.inc(tool="math.calculate:v1", status="ok")
    calls.inc(status="ok", tool="math.calculate:v1")
    calls.inc(2, tool="math.calculate:v1", status="error")
    calls.inc(tool="sql.query:v1", status="ok")
    text = m.exposition()[0].decode()
    assert _line(text, 'agent_test_children_total{status="ok",tool="math.calculate:v1"}') == 2
    assert _line(text, 'agent_test_children_total{status="error",tool="math.calculate:v1"}') == 2
    assert _line(text, 'agent_test_children_total{status="ok",tool="sql.query:v1"}') == 1


def test_label_values_that_are_not_text_name_the_same_child_as_their_text() -> None:
    seconds = m.histogram("agent_test_children_seconds", "Test histogram.", ("code",))
    seconds.observe(0.5, code=404)  # type: ignore[arg-type]
    seconds.observe(0.5, code="404")
    text = m.exposition()[0].decode()
    assert _line(text, 'agent_test_children_seconds_count{code="404"}') == 2


def test_a_bound_metric_counts_into_the_same_child_and_appears_once_it_has_a_value() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

    tokens = m.counter("agent_test_bound_total", "Test counter.", ("model", "type"))
    latency = m.histogram("agent_test_bound_seconds", "Test histogram.", ("model",))
    cached = tokens.bound(model="x", type="cached_input")  # never used: no series
    tokens.bound(model="x", type="input").inc(3)
    tokens.inc(2, type="input", model="x")
    latency.bound(model="x").observe(0.2)
    text = m.exposition()[0].decode()
    assert _line(text, 'agent_test_bound_total{model="x",type="input"}') == 5
    assert _line(text, 'agent_test_bound_seconds_count{model="x"}') == 1
    assert 'agent_test_bound_total{model="x",type="cached_input"}' not in text
    reader = InMemoryMetricReader()
    m.attach_meter(MeterProvider(metric_readers=[reader]).get_meter("test"))
    try:
        cached.inc(4)  # bound before the meter came: recorded on it all the same
    finally:
        m.detach_meter()
    data = reader.get_metrics_data()
    assert data is not None
    points = [point for rm in data.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics
              if metric.name == "agent.test.bound" for point in metric.data.data_points]  # fmt: skip
    assert all(isinstance(p, NumberDataPoint) for p in points)
    assert [(dict(p.attributes or {}), cast(NumberDataPoint, p).value) for p in points] == [
        ({"model": "x", "type": "cached_input"}, 4)
    ]
    assert _line(m.exposition()[0].decode(), 'agent_test_bound_total{model="x",type="cached_input"}') == 4
