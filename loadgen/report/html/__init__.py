"""The self-contained HTML report of a run (`report.html`).

`render_html(summary, timeseries)` is pure: summary.json's dict and `ledger_timeseries`'s dict in,
one HTML document out. The document has no script, loads nothing (a Content-Security-Policy of
`default-src 'none'` says so to the browser too), and draws its charts as inline SVG built by
`loadgen.report.plots`, so it opens offline from a CI artifact or an e-mail attachment.

Everything that is text in the summary (run id, target URLs, mode names, trace ids, notes, tag
values, even verdict names) is untrusted: it is escaped with `xml_escape`, which also turns
control and invisible characters into visible escapes. The markup is well-formed XML (void
elements closed, only numeric character references), so tests parse the whole page with
`xml.etree` and look for anything that escaped.

The modules: `page` (the document, its style and header), `cards` (the overall verdict and the
cards), `charts` (over time, per mode, time to queryable), `capacity` (the steps of a capacity
run), `sections` (tables, causes, details), `common` (escaping, verdict titles, the readers and
formatters of summary values) and `folder`: `render_run_folder(run_dir)`, the only I/O, reads
summary.json, ledger.jsonl and fetched.jsonl and writes report.html, modes.csv and
timeseries.csv next to them.
"""

from loadgen.report.html.folder import render_run_folder
from loadgen.report.html.page import render_html

__all__ = ["render_html", "render_run_folder"]
