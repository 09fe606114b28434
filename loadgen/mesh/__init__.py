"""What the mesh does to a request, one module per concept (pure, except istio_config's file
reading): `headers` (names every request carries), `ids` (trace, span and request ids), `rule`
(Envoy's x-request-id sampling rule), `sends`/`modes` (the header modes as data), `expect` (what
Envoy does with a mode's request in a given mesh), `encode` (a request's headers), `echo` (what
the upstream saw), `hops`, the learned mesh `profile` and the Istio configuration that sets the
sampling (`istio_config`)."""
