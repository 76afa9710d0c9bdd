"""JUnit XML, the report format CI systems read (GitLab, GitHub Actions, Jenkins): the one
writer of it, for the ``--junit`` of ``flk conformance vectors/server``, ``flk sim run/sweep``
and ``flk cluster run``.

A :class:`Case` passed, failed (``failure``: its one-line message; ``text``: the detail) or
was skipped (``skipped``: why -- for the simulator, a checker that had nothing to check).
Any text is made XML-safe (:func:`xml_safe`): a message quoting a control character or a
lone surrogate from a hostile input still gives a well-formed document."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

MAX_MESSAGE = 500  # a failure's or a skip's message attribute; the detail goes into the element's text


@dataclass
class Case:
    classname: str
    name: str
    time: float = 0.0
    failure: str | None = None
    failure_type: str = "failure"
    text: str = ""
    skipped: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Suite:
    name: str
    cases: Sequence[Case]
    properties: Mapping[str, str] = field(default_factory=dict)


def xml_safe(text: str) -> str:
    """Characters XML 1.0 cannot hold (control characters, lone surrogates) as \\uXXXX."""
    out = []
    for ch in str(text):
        o = ord(ch)
        if (o < 0x20 and ch not in "\t\n\r") or 0xD800 <= o <= 0xDFFF or o in (0xFFFE, 0xFFFF):
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _counts(cases: Sequence[Case]) -> dict[str, str]:
    failures = sum(1 for c in cases if c.failure is not None)
    skipped = sum(1 for c in cases if c.failure is None and c.skipped is not None)
    return {"tests": str(len(cases)), "failures": str(failures), "skipped": str(skipped)}


def _properties(parent: ET.Element, props: Mapping[str, str]) -> None:
    if props:
        el = ET.SubElement(parent, "properties")
        for name, value in props.items():
            ET.SubElement(el, "property", name=xml_safe(name), value=xml_safe(value))


def document(name: str, suites: Sequence[Suite]) -> bytes:
    """``<testsuites>`` of ``suites``, with the counts CI systems total, as UTF-8 bytes."""
    every = [c for s in suites for c in s.cases]
    root = ET.Element("testsuites", name=xml_safe(name), **_counts(every))
    for s in suites:
        suite = ET.SubElement(root, "testsuite", name=xml_safe(s.name), **_counts(s.cases), errors="0",
                              time=f"{sum(c.time for c in s.cases):.6f}")
        _properties(suite, s.properties)
        for c in s.cases:
            tc = ET.SubElement(suite, "testcase", classname=xml_safe(c.classname), name=xml_safe(c.name),
                               time=f"{c.time:.6f}")
            _properties(tc, c.properties)
            if c.failure is not None:
                el = ET.SubElement(tc, "failure", message=xml_safe(c.failure[:MAX_MESSAGE]), type=c.failure_type)
                el.text = xml_safe(c.text or c.failure)
            elif c.skipped is not None:
                ET.SubElement(tc, "skipped", message=xml_safe(c.skipped[:MAX_MESSAGE]))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
