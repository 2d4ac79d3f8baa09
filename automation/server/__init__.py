"""The HTTP face: inbound provider webhooks, one-click unsubscribe, Prometheus metrics."""
