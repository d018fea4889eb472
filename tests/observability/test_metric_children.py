"""Labelled children are found by the labels a caller names, in whatever order it names them."""

from __future__ import annotations

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
