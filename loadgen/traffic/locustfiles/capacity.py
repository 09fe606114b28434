"""Capacity steps through an Istio/Envoy gateway: the traced user of scenarios/mesh.py driven by a
step shape (what `loadgen capacity` runs; see loadgen/traffic/shape.py for every variable). Package
data like mesh.py: Locust loads it by path.

    LOADGEN_STEPS=users:10,20,40 LOADGEN_STEP_S=30 LOADGEN_RAMP_S=5 \\
        locust -f scenarios/capacity.py --headless --host http://127.0.0.1:<gateway-port>

    LOADGEN_STEPS=rate:200,400,800 LOADGEN_STEP_USERS=50 locust -f scenarios/capacity.py ...

The shape ends the test after the last step (Locust's -u/-r/-t do not apply to a shape). Rate
steps and per-user rates (LOADGEN_USER_RATE) need a single Locust process.
"""

from loadgen.traffic.default_scenario import MeshUser
from loadgen.traffic.shape import StepShape

__all__ = ["MeshUser", "StepShape"]
