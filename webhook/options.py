"""Flag values every process checks the same way: HOST:PORT, one of a few words, lists."""

from __future__ import annotations

from typing import Final

LOG_LEVELS: Final = ("debug", "info", "warning", "error")


def check_host_port(bind: str) -> None:
    """ValueError unless `bind` is HOST:PORT."""
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f'--bind "{bind}" is not HOST:PORT (e.g. 0.0.0.0:8443)')


def check_one_of(flag: str, value: str, choices: tuple[str, ...]) -> None:
    """ValueError naming `--flag` unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f'--{flag} "{value}" is not one of: {", ".join(choices)}')


def parse_list(text: str) -> list[str]:
    """Split a comma-separated flag value, dropping blanks."""
    return [item.strip() for item in text.split(",") if item.strip()]
