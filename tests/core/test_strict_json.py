"""Strict JSON at the doors: what Python's json reads but RFC 8259 text does not allow is refused,
saying what and where."""

from __future__ import annotations

import json

import pytest

from agentstage.core import strict_json


@pytest.mark.parametrize(
    ("document", "says", "at"),
    [
        (b'{"a": NaN}', "NaN is not a JSON number", 6),
        ('{"a": [1, -Infinity]}', "-Infinity is not a JSON number", 10),
        (b'{"say": "NaN, then", "x": 1e999}', "1e999 is beyond the range", 26),  # the text is text
        (b'{"a": [-1.5e400]}', "-1.5e400 is beyond the range", 7),
        (b'{"a": "x\\ud800"}', "unpaired surrogate (\\ud800) in the string at a", 6),
        (b'{"a": [{"b": "\\uDC80"}]}', "in the string at a[0].b", 13),
        (b'{"ok": "\\ud83d\\ude00", "b": "\\ud83d"}', "in the string at b", 28),  # after a valid pair
        (b'{"\\ud800": 1}', "in a key of the object at the top level", 1),
        (b'"\\ude00\\ud83d"', "in the string at the top level", 0),  # a pair in the wrong order is two halves
        (b'{"raw": "\xed\xa0\x80"}', "in the string at raw", 8),  # a surrogate's own UTF-8 bytes
        ('{"a": "\ud800"}'.encode("utf-16-le", "surrogatepass"), "in the string at a", 6),  # any encoding
        ('{"a": 1e999}'.encode("utf-32"), "1e999 is beyond the range", 6),
    ],
)
def test_what_no_store_can_keep_is_refused_saying_what_and_where(
    document: str | bytes, says: str, at: int
) -> None:
    with pytest.raises(json.JSONDecodeError) as refused:
        strict_json.loads(document)
    assert says in refused.value.msg
    assert refused.value.pos == at


def test_json_text_reads_as_json_does() -> None:
    document = (
        b'{"emoji": "\\ud83d\\ude00", "n": [1, 2.5, -0.0, 1.5e308, 12345678901234567890],'
        b' "t": "caf\xc3\xa9 NaN", "k": {"": null}}'
    )
    assert strict_json.loads(document) == json.loads(document)
    assert strict_json.loads(document)["emoji"] == "\U0001f600"
    utf16 = '{"t": "caf\u00e9 \U0001f600"}'.encode("utf-16")
    assert strict_json.loads(utf16) == {"t": "caf\u00e9 \U0001f600"}


def test_bytes_that_are_no_text_stay_a_decoding_error() -> None:
    with pytest.raises(UnicodeDecodeError):
        strict_json.loads(b'{"input": "\xff\xfe"}')
