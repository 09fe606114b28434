"""Baseline for bench/generator.py: a bare Locust FastHttpUser, no tracing logic.

Same target as loadgen's traced user (GET /headers with the gateway's Host header), but no header
modes, no ids, no echo parsing and no ledger: what Locust alone costs per request.
BARE_EXTRA_HEADERS (a JSON object) adds fixed headers to every request: generator.py's variant (h)
sends a traced request's header set this way, to show what the headers alone cost.
"""

import json
import os

from locust import task
from locust.contrib.fasthttp import FastHttpUser

HOST_HEADER = os.environ.get("LOADGEN_HOST_HEADER", "httpbin.istioinaction.io")
HEADERS = {"Host": HOST_HEADER, **json.loads(os.environ.get("BARE_EXTRA_HEADERS") or "{}")}


class BareUser(FastHttpUser):
    @task
    def headers(self) -> None:
        self.client.get("/headers", headers=HEADERS)
