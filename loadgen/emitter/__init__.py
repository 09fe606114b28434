"""OpenTelemetry side-emitter: reference traces sent straight to the collector, by Zipkin JSON,
OTLP/HTTP or OTLP/gRPC (``--reference-protocol``, loadgen.emitter.protocols).

Reference traces bypass the mesh, so "reference traces found in the backend / traces exported" is the
collector/backend's own collection rate. For that number to be defensible, every trace started is
accounted for exactly once:

    started = exported + failed + dropped

* ``exported`` - every span of the trace was in an export call the exporter reported as SUCCESS;
* ``failed``   - at least one span was in an export call that failed (non-2xx, connection error,
  exception, an encoder error, or still in flight when ``stop()`` gave up waiting);
* ``dropped``  - otherwise, at least one span ended but never reached the exporter (the export
  queue was full, it ended after ``stop()`` began, or it was lost at shutdown / when the process
  died).

Spans go out through `loadgen.emitter.pipeline`: each batch is encoded once by the protocol's real
OpenTelemetry encoder as it fills, and several export workers send at once, each on its own
connection; the accounting names every span's export call or drop, so calls may finish in any order.

The emitter streams a JSON-lines log (``reference.jsonl``) that the reconciler folds later with
:func:`summarize_reference_log`; the fold and the live :meth:`ReferenceEmitter.counters` agree exactly.

Log records (one JSON object per line)::

    {"ev":"open","t":...,"run_id":...,"service":...,"protocol":"zipkin"|"otlp-http"|"otlp-grpc",
     "endpoint":<URL without credentials>,"children":N,"rate_per_s":R}
    {"ev":"start","trace":"<32hex>","spans":N,"seq":S,"t":<epoch s>}
    {"ev":"export","ok":true|false,"t":...,"dur_s":...,"spans":{"<32hex>":count,...},"error":str|null}
    {"ev":"end","t":...,"counters":{...}}
"""

from loadgen.emitter.counters import EmitterCounters, TraceState
from loadgen.emitter.protocols import (
    ReferenceProtocol,
    ReferenceTarget,
    check_reference_options,
    check_reference_target,
    reference_target,
    zipkin_spans_url,
)
from loadgen.emitter.reference import DEFAULT_SERVICE_NAME, ReferenceEmitter
from loadgen.emitter.reflog import ReferenceSummary, TraceOutcome, read_reference_log, summarize_reference_log

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "EmitterCounters",
    "ReferenceEmitter",
    "ReferenceProtocol",
    "ReferenceSummary",
    "ReferenceTarget",
    "TraceOutcome",
    "TraceState",
    "check_reference_options",
    "check_reference_target",
    "read_reference_log",
    "reference_target",
    "summarize_reference_log",
    "zipkin_spans_url",
]
