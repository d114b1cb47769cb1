"""Just enough PromQL for the monitoring tests: the metric names an expression reads, and the
names a scrape exports.

:func:`metric_names` is no parser. It removes what cannot hold a metric name (string literals,
label matchers, range and subquery brackets, grouping clauses, ``offset``, numbers, Grafana
variables), then keeps each identifier that is not a keyword and not called like a function.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_NUMBER = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left"}
    | {"group_right", "offset", "inf", "nan"}
)

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}
"""The series names each metric type exposes, after its family name (a Counter ``x_total`` is
registered, and parsed back, as the family ``x``)."""


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    text = _STRING.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    text = _VARIABLE.sub(" 0 ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        called = text[match.end() :].lstrip().startswith("(")
        if not called and word.lower() not in _KEYWORDS:
            names.add(word)
    return names


def exported_series(exposition: str) -> dict[str, str]:
    """Every series name a Prometheus text exposition can carry, with its family's type.

    Families are listed even before they have samples (a labelled metric no code path has
    touched yet still has its ``# TYPE`` line), so the names come from the types, not from
    the samples."""
    names: dict[str, str] = {}
    for family in text_string_to_metric_families(exposition):
        for suffix in _SUFFIXES[family.type]:
            names[family.name + suffix] = family.type
        for sample in family.samples:
            names.setdefault(sample.name, family.type)
    return names


def unknown(referenced: Iterable[str], exported: Iterable[str]) -> list[str]:
    return sorted(set(referenced) - set(exported))
