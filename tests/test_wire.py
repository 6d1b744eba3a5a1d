"""The hot path's JSON codec: orjson, and the standard library where orjson refuses."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook.admission import wire

# What Python's json module reads back as it was written: JSON's types, with integers
# of any size and any text, lone surrogates included.
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec=None)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": [value]}
    return value


@given(_values)
def test_what_is_written_reads_back_the_same(value: object) -> None:
    assert json.loads(wire.encode(value)) == value
    assert json.loads(wire.encode_text(value)) == value


@pytest.mark.parametrize(
    "value",
    [2**64, -(2**63) - 1, "lone \ud800 surrogate", {"k\udfff": 1}, _nested(300)],
    ids=["u64+1", "i64-1", "surrogate", "surrogate-key", "nested-600"],
)
def test_what_orjson_refuses_is_written_by_the_standard_library(value: object) -> None:
    encoded = wire.encode(value)
    assert encoded.isascii()
    assert json.loads(encoded) == value


def test_log_values_that_are_not_json_are_written_as_text() -> None:
    line = wire.encode_loose({"after": timedelta(seconds=2), "big": 2**70, "ok": "é"})
    assert json.loads(line) == {"after": "0:00:02", "big": 2**70, "ok": "é"}


def test_reading_is_strict_json() -> None:
    assert wire.decode(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    for text in (b"NaN", b"[Infinity]", b"{'a': 1}", b"[1,]", b"\xff"):
        with pytest.raises(wire.DecodeError):
            wire.decode(text)
    with pytest.raises(ValueError, match="depth limit exceeded"):
        wire.decode(b"[" * 2_000 + b"]" * 2_000)


@given(st.dictionaries(st.text(max_size=6), _values, max_size=5))
def test_a_key_does_not_depend_on_the_order_of_keys(value: dict[str, Any]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert wire.encode_key(reordered) == wire.encode_key(value)
    assert json.loads(wire.encode_key(value)) == value
