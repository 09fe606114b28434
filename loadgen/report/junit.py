"""Gate results as a JUnit XML report (pure), the format CI systems show per test.

One `<testcase>` per gate; a failed gate has a `<failure>` whose message is the gate's one-line
explanation and whose text lists observed value and threshold. The document is built with
`xml.etree.ElementTree`, which escapes markup; text is first passed through `visible_text`
because XML 1.0 cannot carry most control characters at all (not even as references), and run
ids or mode names in messages come from users.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

from loadgen.analysis.gates import GateResult
from loadgen.report.plots import visible_text


def _text(value: object) -> str:
    return visible_text(value)


def _block(value: object) -> str:
    """Multi-line text: keep line breaks (valid XML), make other control characters visible."""
    return "\n".join(visible_text(line) for line in str(value).split("\n"))


def render_junit(
    results: Sequence[GateResult],
    suite_name: str = "loadgen.analysis.gates",
    *,
    properties: Mapping[str, object] | None = None,
    timestamp: str | None = None,
) -> str:
    """A `<testsuites>` document with one `<testsuite>`; `properties` (e.g. run_id, target) are
    recorded as suite properties; `timestamp` is ISO 8601 if given (the caller knows the time)."""
    failures = sum(1 for r in results if not r.passed)
    counts = {
        "tests": str(len(results)),
        "failures": str(failures),
        "errors": "0",
        "skipped": "0",
        "time": "0",
    }
    root = ET.Element("testsuites", {"name": _text(suite_name), **counts})
    suite = ET.SubElement(root, "testsuite", {"name": _text(suite_name), **counts})
    if timestamp:
        suite.set("timestamp", _text(timestamp))
    if properties:
        props = ET.SubElement(suite, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", {"name": _text(key), "value": _text(value)})
    for r in results:
        case = ET.SubElement(
            suite, "testcase", {"classname": _text(suite_name), "name": _text(r.name), "time": "0"}
        )
        details = f"observed: {r.observed}\nthreshold: {r.threshold}\n{r.message}"
        if r.passed:
            ET.SubElement(case, "system-out").text = _block(details)
        else:
            failure = ET.SubElement(case, "failure", {"message": _text(r.message), "type": "GateFailed"})
            failure.text = _block(details)
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
