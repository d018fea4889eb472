"""Strict JSON at the doors: what Python's json reads but RFC 8259 text does not allow is refused."""

from __future__ import annotations

import json

import pytest

from agentstage.core import strict_json


@pytest.mark.parametrize(
    ("document", "says"),
    [
        (b'{"a": NaN}', "NaN is not a JSON number"),
        ('{"a": [1, -Infinity]}', "-Infinity is not a JSON number"),
        (b'{"a": "x\\ud800"}', "the string at a holds an unpaired surrogate (\\ud800)"),
        (b'{"a": [{"b": "\\uDC80"}]}', "the string at a[0].b"),
        (b'{"\\ud800": 1}', "a key of the object at the top level"),
        (b'"\\ude00\\ud83d"', "the string at the top level"),  # a pair in the wrong order is two halves
        (b'{"raw": "\xed\xa0\x80"}', "the string at raw"),  # a surrogate's own UTF-8 bytes
    ],
)
def test_what_no_store_can_keep_is_refused_saying_where(document: str | bytes, says: str) -> None:
    with pytest.raises(json.JSONDecodeError) as refused:
        strict_json.loads(document)
    assert says in refused.value.msg


def test_json_text_reads_as_json_does() -> None:
    document = b'{"emoji": "\\ud83d\\ude00", "n": [1, 2.5, -0.0, 1e300], "t": "caf\xc3\xa9", "k": {"": null}}'
    assert strict_json.loads(document) == json.loads(document)
    assert strict_json.loads(document)["emoji"] == "\U0001f600"
