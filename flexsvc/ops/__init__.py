"""Running and observing the service: CLI commands, the embedded PostgreSQL and the demo,
JSON logs, per-request log lines, Prometheus metrics and readiness checks.
"""
