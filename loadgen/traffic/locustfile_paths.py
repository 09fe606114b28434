"""Where the packaged locustfiles are.

loadgen/traffic/locustfiles/ holds package data, not modules: Locust loads each file by path
(`locust -f`), nothing imports them, so `import locust` stays inside loadgen/traffic/ and no
top-level `scenarios` package is installed. A checkout's scenarios/ folder links to the same files
(one copy of each). This module imports nothing from Locust: the orchestrating process uses it.
"""

from __future__ import annotations

from pathlib import Path

LOCUSTFILES = Path(__file__).resolve().parent / "locustfiles"
MESH = "mesh"  # the default scenario of `loadgen run`
CAPACITY = "capacity"  # MeshUser driven by the step shape: `loadgen capacity`
B3_ONLY = "b3_only"

#: The gateway URL's user-info (`user:password`, percent-encoded as in the URL), passed to the
#: Locust process apart from LOCUST_HOST so that Locust's web UI never shows it; the traced user
#: sends it as HTTP basic auth, as Locust does for a host URL with credentials.
GATEWAY_USERINFO_ENV = "LOADGEN_GATEWAY_USERINFO"


def locustfile_path(name: str) -> Path:
    """The packaged locustfile `name` (`mesh`, `capacity`, `b3_only`)."""
    path = LOCUSTFILES / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"no packaged locustfile {path} (is loadgen installed with its package data?)"
        )
    return path
