"""The default locustfile `loadgen run` uses: one TracedUser with the configured header mix."""

from loadgen.traffic.user import TracedUser


class MeshUser(TracedUser):
    """Drives the gateway with the header-mode mix from --loadgen-mix / LOADGEN_MIX."""
