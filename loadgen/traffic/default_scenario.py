"""The user of the default scenario: one TracedUser with the configured header mix.

The locustfiles Locust loads (loadgen/traffic/locustfiles/mesh.py and capacity.py, package data)
and the cluster's ConfigMap import `MeshUser` from here; this module is not a locustfile itself.
"""

from loadgen.traffic.user import TracedUser


class MeshUser(TracedUser):
    """Drives the gateway with the header-mode mix from --loadgen-mix / LOADGEN_MIX."""
