"""Only B3-carrying requests (multi and single header, every flag): propagation checks.

    locust -f scenarios/b3_only.py --host http://127.0.0.1:<gateway-port>
or
    loadgen run --scenario scenarios/b3_only.py
"""

from loadgen.traffic.user import TracedUser


class B3User(TracedUser):
    """A fixed mix with no header-less requests (ignores --loadgen-mix)."""

    mix = (
        "b3_multi_sampled=1,b3_multi_not_sampled=1,b3_multi_no_flag=1,"
        "b3_single_sampled=1,b3_single_not_sampled=1,b3_single_no_flag=1"
    )
