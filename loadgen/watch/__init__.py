"""`loadgen watch`: the always-on tracing canary (issue 14). See docs/watch.md."""
