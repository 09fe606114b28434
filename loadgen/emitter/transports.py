"""Each protocol split into the real OpenTelemetry encoder and a sender per export worker
(loadgen.emitter.pipeline): the encoder runs once per batch in the thread that filled it, the
senders post the bytes in parallel.

* ``zipkin``: the Zipkin exporter's own encoder (``JsonV2Encoder.serialize``, with the local
  endpoint named after the spans' ``service.name`` as ``ZipkinExporter.export`` does), posted as
  that exporter posts it (``Content-Type: application/json``; 200 and 202 are success).
* ``otlp-http``: the OTLP exporters' ``encode_spans(...).SerializePartialToString()``, sent by the
  OTLP/HTTP exporter's own client (its retries of 429/502/503/504 and connection errors within
  the timeout). An SDK without that client (before 1.45) gets the whole exporter per worker.
* ``otlp-grpc``: ``encode_spans(...)``, sent by the OTLP/gRPC exporter (its retries and backoff),
  see loadgen.emitter.grpc_export.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import requests
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.zipkin.json.v2 import JsonV2Encoder
from opentelemetry.exporter.zipkin.node_endpoint import NodeEndpoint
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import ReadableSpan

from loadgen.emitter.pipeline import ExporterSender, Notes, Sender, Transport, exporter_transport
from loadgen.emitter.protocols import (
    ReferenceProtocol,
    ReferenceTarget,
    _body_text,
    build_exporter,
)

__all__ = ["DEFAULT_EXPORT_WORKERS", "build_transport", "encode_otlp", "encode_otlp_bytes"]

#: Export workers per emitter. One worker posts at most one batch per round trip: with the collector
#: answering 40 ms after each POST (its --added-latency-ms fault, bursts of 10k traces, 2-core box),
#: 1/2/4/8 workers sent 8.4-8.8k / 13.4-15.0k / 16.5-21.3k / 18.5-20.1k spans/s. On loopback
#: without that delay the number made no measurable difference: the emitter is CPU-bound there.
DEFAULT_EXPORT_WORKERS = 4

# ZipkinExporter's REQUESTS_SUCCESS_STATUS_CODES.
_ZIPKIN_OK = (200, 202)


class ZipkinEncoder:
    """``spans`` -> the Zipkin v2 JSON body ``ZipkinExporter.export`` would post."""

    def __init__(self) -> None:
        self._encoder = JsonV2Encoder()
        self._node = NodeEndpoint()

    def __call__(self, spans: Sequence[ReadableSpan]) -> bytes:
        if spans:
            service = spans[0].resource.attributes.get(SERVICE_NAME)
            if service:
                self._node.service_name = service
        # Annotated with the API's Span; ZipkinExporter hands it the SDK's ReadableSpans too.
        return self._encoder.serialize(spans, self._node).encode("utf-8")  # type: ignore[arg-type]


class ZipkinSender:
    """POSTs encoded Zipkin JSON on its own connection."""

    def __init__(self, target: ReferenceTarget, timeout_s: float) -> None:
        self._url = target.endpoint
        self._timeout = timeout_s
        self._session = requests.Session()
        self._session.headers.update({**dict(target.headers), "Content-Type": JsonV2Encoder.content_type()})

    def send(self, payload: Any) -> str | None:
        try:
            response = self._session.post(self._url, data=payload, timeout=self._timeout)
        except Exception as exc:  # connection refused, timeout: data, not a crash
            return f"{type(exc).__name__}: {exc}"
        if response.status_code in _ZIPKIN_OK:
            return None
        return f"HTTP {response.status_code}: {_body_text(response)}"

    def close(self) -> None:
        self._session.close()


def encode_otlp(spans: Sequence[ReadableSpan]) -> Any:
    """The ExportTraceServiceRequest the OTLP exporters build for ``spans``."""
    return encode_spans(spans)


def encode_otlp_bytes(spans: Sequence[ReadableSpan]) -> bytes:
    """The body the OTLP/HTTP exporter posts for ``spans``."""
    data: bytes = encode_spans(spans).SerializePartialToString()
    return data


class OtlpHttpSender:
    """Sends encoded OTLP/HTTP bodies through the exporter's own retrying client."""

    def __init__(self, client: Any, exporter: Any, notes: Notes) -> None:
        self._client = client
        self._exporter = exporter
        self._notes = notes

    @staticmethod
    def build(target: ReferenceTarget, timeout_s: float) -> OtlpHttpSender | ExporterSender:
        """A sender of encoded bodies; a whole exporter (`ExporterSender`) when the installed
        exporter has no separate client."""
        notes = Notes()
        exporter = build_exporter(target, timeout_s, notes.note)
        client = getattr(exporter, "_client", None)
        if not callable(getattr(client, "export", None)):
            return ExporterSender(exporter, notes)
        return OtlpHttpSender(client, exporter, notes)

    def send(self, payload: Any) -> str | None:
        self._notes.last = None
        try:
            result = self._client.export(payload)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        if getattr(result, "success", False):
            return None
        if self._notes.last:
            return self._notes.last
        error = getattr(result, "error", None)
        return f"{type(error).__name__}: {error}" if error is not None else "exporter returned FAILURE"

    def close(self) -> None:
        self._exporter.shutdown()


def build_transport(target: ReferenceTarget, timeout_s: float, workers: int) -> Transport:
    """The encoder and ``workers`` senders for ``target`` (construction only, no I/O)."""
    if workers < 1:
        raise ValueError("export workers must be >= 1")
    if target.protocol is ReferenceProtocol.ZIPKIN:
        return Transport(ZipkinEncoder(), [ZipkinSender(target, timeout_s) for _ in range(workers)])
    if target.protocol is ReferenceProtocol.OTLP_HTTP:
        senders = [OtlpHttpSender.build(target, timeout_s) for _ in range(workers)]
        whole = [s for s in senders if isinstance(s, ExporterSender)]
        if whole:
            return exporter_transport(whole)
        return Transport(encode_otlp_bytes, senders)
    from loadgen.emitter.grpc_export import GrpcSender

    grpc_senders: list[Sender] = [GrpcSender.build(target, timeout_s) for _ in range(workers)]
    return Transport(encode_otlp, grpc_senders)
