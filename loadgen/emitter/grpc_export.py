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

from loadgen.redact import redact_text

__all__ = ["check_grpc", "grpc_error_text", "noting_grpc_exporter"]


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
    def __init__(self, note: Callable[[str], None], **kwargs: Any) -> None:
        self._loadgen_note = note
        super().__init__(**kwargs)

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
