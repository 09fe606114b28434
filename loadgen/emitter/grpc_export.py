"""The OTLP/gRPC side of the side-emitter: the real exporter, told why an export failed.

The gRPC exporter (opentelemetry-exporter-otlp-proto-grpc) retries the retryable status codes
(UNAVAILABLE, RESOURCE_EXHAUSTED, ...) with backoff 1 s, 2 s, 4 s ... while its timeout allows,
then returns a bare FAILURE and only logs the status. `noting_grpc_exporter` keeps that status for
the reference log by wrapping the stub the exporter calls; the retries, backoff, metadata and
channel are the exporter's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from loadgen.emitter.pipeline import Notes
from loadgen.emitter.protocols import ReferenceTarget
from loadgen.redact import redact_text

__all__ = ["GrpcSender", "check_grpc", "grpc_error_text", "noting_grpc_exporter"]


def grpc_error_text(exc: grpc.RpcError) -> str:
    """``UNAVAILABLE: failed to connect ...`` for an RPC error (its status code and details)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else None
    name = code.name if isinstance(code, grpc.StatusCode) else type(exc).__name__
    return f"gRPC {name}: {details}" if details else f"gRPC {name}"


class _NotingStub:
    """The exporter's TraceServiceStub, telling `note` the status of each failed call."""

    def __init__(self, stub: Any, note: Callable[[str], None]) -> None:
        self._stub = stub
        self._note = note

    def Export(self, *args: Any, **kwargs: Any) -> Any:  # the stub's method name
        try:
            return self._stub.Export(*args, **kwargs)
        except grpc.RpcError as exc:
            self._note(grpc_error_text(exc))
            raise


class _NotingOTLPSpanExporter(OTLPSpanExporter):
    """The exporter, telling `note` why a call failed; it also sends a request encoded beforehand
    (loadgen.emitter.pipeline encodes each batch once, in the thread that filled it)."""

    def __init__(self, note: Callable[[str], None], **kwargs: Any) -> None:
        self._loadgen_note = note
        super().__init__(**kwargs)

    def _translate_data(
        self, data: Sequence[ReadableSpan] | ExportTraceServiceRequest
    ) -> ExportTraceServiceRequest:
        if isinstance(data, ExportTraceServiceRequest):
            return data
        return super()._translate_data(data)

    def _count_data(self, data: Sequence[ReadableSpan] | ExportTraceServiceRequest) -> int:
        if isinstance(data, ExportTraceServiceRequest):
            return sum(len(scope.spans) for res in data.resource_spans for scope in res.scope_spans)
        count: int = super()._count_data(data)
        return count

    def _initialize_channel_and_stub(self) -> None:
        # Called at construction and again when the exporter reconnects after UNAVAILABLE.
        super()._initialize_channel_and_stub()
        client = getattr(self, "_client", None)
        if client is not None and hasattr(client, "Export"):
            setattr(self, "_client", _NotingStub(client, self._loadgen_note))  # noqa: B010 - typed None


def noting_grpc_exporter(
    endpoint: str,
    tls: bool,
    headers: Sequence[tuple[str, str]],
    timeout_s: float,
    note: Callable[[str], None],
) -> OTLPSpanExporter:
    """The OTLP/gRPC span exporter to ``endpoint`` (host:port); gRPC metadata keys are lowercase."""
    metadata = tuple((name.lower(), value) for name, value in headers)
    return _NotingOTLPSpanExporter(
        note,
        endpoint=endpoint,
        insecure=not tls,
        headers=metadata or None,
        timeout=timeout_s,
        compression=grpc.Compression.NoCompression,
    )


class GrpcSender:
    """Sends encoded requests (`loadgen.emitter.transports.encode_otlp`) on its own channel."""

    def __init__(self, target: ReferenceTarget, timeout_s: float) -> None:
        self._notes = Notes()
        self.exporter = noting_grpc_exporter(
            target.endpoint, target.tls, target.headers, timeout_s, self._notes.note
        )

    @staticmethod
    def build(target: ReferenceTarget, timeout_s: float) -> GrpcSender:
        return GrpcSender(target, timeout_s)

    def send(self, payload: Any) -> str | None:
        self._notes.last = None
        try:
            # export() hands its argument to _translate_data, which passes a request through.
            result = self.exporter.export(payload)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        if result is SpanExportResult.SUCCESS:
            return None
        return self._notes.last or "exporter returned FAILURE"

    def close(self) -> None:
        self.exporter.shutdown()


def check_grpc(endpoint: str, tls: bool, headers: Sequence[tuple[str, str]], timeout_s: float) -> str | None:
    """One empty ``TraceService/Export`` (a preflight): None when accepted, else why not."""
    shown = f"{'https' if tls else 'http'}://{endpoint}"
    channel = (
        grpc.secure_channel(endpoint, grpc.ssl_channel_credentials())
        if tls
        else grpc.insecure_channel(endpoint)
    )
    try:
        TraceServiceStub(channel).Export(
            ExportTraceServiceRequest(),
            metadata=tuple((name.lower(), value) for name, value in headers) or None,
            timeout=timeout_s,
        )
    except grpc.RpcError as exc:
        return (
            f"OTLP/gRPC endpoint {shown} refused an empty export ({redact_text(grpc_error_text(exc))}): "
            "is it an OTLP/gRPC receiver (port 4317 by convention)? Check --collector or "
            "--reference-grpc-endpoint."
        )
    finally:
        channel.close()
    return None
