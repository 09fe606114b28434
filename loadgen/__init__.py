"""loadgen: synthetic traffic and trace generator for service meshes."""

import os

__version__ = "0.1.0"

# gRPC's fork handlers (on by default in current grpcio) restart its poller in a forked child;
# a child that closes its descriptors before exec (subprocess's close_fds) then aborts in
# epoll_wait with EBADF before it can exec (grpc/grpc#43055). loadgen starts Envoy, the collector
# and Locust by fork+exec while the OTLP/gRPC exporter or ingest may be running in-process, and
# never forks without exec: the handlers only add that crash. Read when grpc is first imported,
# so it is set here, before any loadgen module imports grpc; a value the user set is kept.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
