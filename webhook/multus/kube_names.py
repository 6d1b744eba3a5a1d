"""Name checks as the API server and the Linux kernel apply them."""

import re
from typing import Final

_DNS1123_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# IFNAMSIZ is 16 including the terminating NUL.
MAX_INTERFACE_BYTES: Final = 15


def is_dns1123_label(value: str) -> bool:
    """True for a DNS-1123 label: Namespace names, and NAD names in the comma form."""
    return len(value) <= 63 and _DNS1123_LABEL.fullmatch(value) is not None


def is_dns1123_subdomain(value: str) -> bool:
    """True for a DNS-1123 subdomain: the names of most objects, NADs and rules included."""
    return len(value) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(value) is not None


def interface_name_problem(value: str) -> str | None:
    """Why Linux would refuse `value` as an interface name, or None when it is fine.

    Mirrors the kernel's dev_valid_name(): not empty, at most 15 bytes, not "." or "..",
    no "/", ":" or whitespace.
    """
    if not value:
        return "is empty"
    if len(value.encode()) > MAX_INTERFACE_BYTES:
        return f"is {len(value.encode())} bytes long; Linux allows at most {MAX_INTERFACE_BYTES}"
    if value in {".", ".."}:
        return f'is "{value}", which Linux reserves'
    for bad in value:
        if bad in {"/", ":"} or bad.isspace():
            return f"contains {bad!r}, which Linux does not allow in interface names"
    return None


class NamespacedName:
    """`key` and `ref` for a value with `namespace` and `name` fields (a mixin for dataclasses)."""

    namespace: str
    name: str

    @property
    def key(self) -> tuple[str, str]:
        """(namespace, name)."""
        return (self.namespace, self.name)

    @property
    def ref(self) -> str:
        """`namespace/name`, as people write it."""
        return f"{self.namespace}/{self.name}"
