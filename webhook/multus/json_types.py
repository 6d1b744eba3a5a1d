"""Words for JSON values in messages people read, and safe access to decoded JSON."""

from typing import Any, TypeVar

T = TypeVar("T")


def json_type_name(value: object) -> str:
    """The JSON type of a decoded value, as a user would call it: "list", "string", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def string_map(value: object) -> dict[str, str]:
    """Labels or annotations as a str-to-str dict; anything else in them is dropped."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def object_field(obj: object, key: str) -> dict[str, object]:
    """`obj[key]` when both are JSON objects, else an empty dict: for metadata and spec."""
    if isinstance(obj, dict):
        value = obj.get(key)
        if isinstance(value, dict):
            return value
    return {}


def object_to_edit(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """`parent[key]` as an object to edit in place: made an empty one if absent or not an object."""
    value = parent.get(key)
    if not isinstance(value, dict):
        value = parent[key] = {}
    return value


def json_copy(value: T) -> T:
    """A deep copy of decoded JSON (objects and lists; anything else is shared, as immutable).

    `copy.deepcopy` keeps a memo for shared and cyclic structure, which decoded JSON
    never has; it was a third of enriching a small policy.
    """
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [json_copy(v) for v in value]  # type: ignore[return-value]
    return value
