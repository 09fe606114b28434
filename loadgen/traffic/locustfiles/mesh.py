"""Traced traffic through an Istio/Envoy gateway (the scenario `loadgen run` uses by default).

A locustfile shipped as package data (loadgen/traffic/locustfiles/, linked from a checkout's
scenarios/): Locust loads it by path, nothing imports it. Run it with plain Locust and the web UI
against a running mesh (`loadgen stack up` prints the gateway URL):

    locust -f scenarios/mesh.py --host http://127.0.0.1:<gateway-port>

The loadgen options (run id, header-mode mix, target rate, ledger path) are inputs of the web
UI's start form ("Custom parameters"). `--help` does not list them: Locust prints it before it
loads the locustfile. `loadgen run --web` runs this scenario with the web UI and reads the traces
back when the test stops.
"""

from loadgen.traffic.default_scenario import MeshUser

__all__ = ["MeshUser"]
