"""The one place arguments are checked: numbers, fractions, choices, bounds.

Every constructor and the spec use these, so a value is judged the same way and its
error reads the same way wherever it comes from: the parameter (or the spec's key path),
what was expected, and what was found.

    >>> number("eps", 0.5, 0, 1, high_open=True)
    0.5
    >>> number("n_trials", 0, 1, integer=True)
    Traceback (most recent call last):
    ...
    autoprune.errors.ConfigError: n_trials: expected an integer in [1, inf), got 0
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError


def shown(value: Any) -> str:
    """How a bad value appears in a message: numbers as ``%g``, the rest as ``repr``."""
    return f"{value:g}" if isinstance(value, float) else repr(value)


def fail(param: str, what: str, value: Any) -> ConfigError:
    """``param: expected WHAT, got VALUE`` as a :class:`ConfigError`."""
    return ConfigError(f"{param}: expected {what}, got {shown(value)}")


def describe(
    low: float | None,
    high: float | None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> str:
    """What a number within these limits is called in a message.

    >>> describe(0, 1, high_open=True), describe(0, None, low_open=True), describe(1, None)
    ('a number in [0, 1)', 'a positive number', 'a number >= 1')
    >>> describe(1, None, integer=True)
    'an integer in [1, inf)'
    """
    kind = "an integer" if integer else "a number"
    if low is None and high is None:
        return kind
    if not integer and high is None and low is not None:
        if low == 0 and low_open:
            return "a positive number"
        if not low_open:
            return f"a number >= {low:g}"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    close = ")" if high_open or high is None else "]"
    return f"{kind} in {'(' if low_open else '['}{lo}, {hi}{close}"


def number(
    param: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    what: str | None = None,
) -> Any:
    """``value`` as a float (an int with ``integer``) within the limits, else an error.

    NaN, infinities and booleans are refused. ``what`` names the expected value in the
    message (default: :func:`describe`).
    """
    what = what or describe(low, high, low_open, high_open, integer)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(param, what, value)
    v = float(value)
    if math.isnan(v) or (integer and not v.is_integer()):
        raise fail(param, what, value)
    if low is not None and (v < low or (low_open and v == low)):
        raise fail(param, what, value)
    if high is not None and (v > high or (high_open and v == high)):
        raise fail(param, what, value)
    if math.isinf(v):
        raise fail(param, what, value)
    return int(v) if integer else v


def positive_int(param: str, value: Any) -> int:
    """An integer >= 1 (a batch size, a count), refused as ``a positive integer``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fail(param, "a positive integer", value)
    return value


def optional_number(param: str, value: Any, *args: Any, **kwargs: Any) -> Any:
    """:func:`number`, with None passed through."""
    return None if value is None else number(param, value, *args, **kwargs)


def fraction(param: str, value: Any) -> float:
    """A number in [0, 1): a sparsity, an accuracy budget."""
    return number(param, value, 0.0, 1.0, high_open=True)


def choice(param: str, value: Any, choices: Iterable[str]) -> str:
    """One of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{param}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def bounds_pair(param: str, value: Any) -> tuple[float, float]:
    """``(low, high)`` with ``0 <= low <= high < 1``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or len(value) != 2:
        raise fail(param, "[low, high]", value)
    low, high = fraction(param, value[0]), fraction(param, value[1])
    if low > high:
        raise ConfigError(f"{param}: expected low <= high, got [{low:g}, {high:g}]")
    return low, high
