"""What the mesh does to a request: trace ids, header modes and their expectations, Envoy's
sampling rule, the learned mesh profile and the Istio configuration that sets it."""
