"""Baseline for bench/generator.py: a bare Locust FastHttpUser, no tracing logic.

Same target as loadgen's traced user (GET /headers with the gateway's Host header), but no header
modes, no ids, no echo parsing and no ledger: what Locust alone costs per request.
"""

import os

from locust import task
from locust.contrib.fasthttp import FastHttpUser

HOST_HEADER = os.environ.get("LOADGEN_HOST_HEADER", "httpbin.istioinaction.io")


class BareUser(FastHttpUser):
    @task
    def headers(self) -> None:
        self.client.get("/headers", headers={"Host": HOST_HEADER})
