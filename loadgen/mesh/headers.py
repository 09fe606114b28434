"""The header and tag names loadgen puts on every request and expects in every span (pure data).

One home for names that the traffic edge sends, the embedded proxies tag spans with, the doctor
and the probe check, and the echo upstream forwards.
"""

from __future__ import annotations

__all__ = ["DEFAULT_GATEWAY_HOST", "DEFAULT_RUN_ID_TAG", "REQUEST_ID_HEADER", "RUN_ID_HEADER", "X_REQUEST_ID"]

#: The run id every request carries; the proxies copy it into the span tag `DEFAULT_RUN_ID_TAG`.
RUN_ID_HEADER = "x-loadgen-run-id"
#: Our own id of one request (the ledger's `rid`).
REQUEST_ID_HEADER = "x-loadgen-request-id"
#: Envoy's request id: its sampling input, and where it writes its decision (character 14).
X_REQUEST_ID = "x-request-id"
#: The span tag holding the run id in the embedded mesh (Istio `customTags` key).
DEFAULT_RUN_ID_TAG = "loadgen.run_id"
#: The Host header the gateway routes on by default (the embedded mesh's, and the Istio in Action
#: walkthrough's httpbin VirtualService).
DEFAULT_GATEWAY_HOST = "httpbin.istioinaction.io"
