"""Operations: Prometheus metrics, structured logs, OpenTelemetry spans and connector health.

They observe the answering service through its events; it never imports them.
"""
