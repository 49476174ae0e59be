"""Reading one environment variable: a value that cannot be used stops the process with a
message naming the variable and what it accepts, never a bare ValueError from deep inside.

Every variable the project reads is listed in docs/configuration.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

N = TypeVar("N", int, float)


class ConfigError(ValueError):
    """A setting is missing or unusable: the process refuses to start, saying which."""


def text(env: Mapping[str, str], name: str, default: str) -> str:
    """The variable's value; `default` when unset or empty."""
    return env.get(name) or default


def integer(
    env: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    value = _parsed(env, name, int, "a whole number")
    return default if value is None else _within(name, value, minimum, maximum)


def number(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    value = _parsed(env, name, float, "a number")
    if value is not None and not math.isfinite(value):
        raise ConfigError(f"{name}={env[name].strip()!r} is not a finite number")
    return default if value is None else _within(name, value, minimum, maximum)


def choice(env: Mapping[str, str], name: str, default: str, options: Iterable[str]) -> str:
    """One of `options` (compared case-insensitively, returned as spelled in `options`)."""
    allowed = tuple(options)
    raw = env.get(name, "").strip()
    if not raw:
        return default
    for option in allowed:
        if raw.lower() == option.lower():
            return option
    raise ConfigError(f"{name}={raw!r} is not one of {', '.join(allowed)}")


def port(env: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port; 0 asks the kernel for a free one."""
    return integer(env, name, default, minimum=0, maximum=65535)


def _parsed(env: Mapping[str, str], name: str, convert: Callable[[str], N], what: str) -> N | None:
    """The value converted; None when unset or empty."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return convert(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {what}") from None


def _within(name: str, value: N, minimum: float | None, maximum: float | None) -> N:
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value:g} is below its minimum {minimum:g}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value:g} is above its maximum {maximum:g}")
    return value
