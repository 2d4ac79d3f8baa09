"""The HTTP face (`lifecycle serve`): Segment-compatible ingest, provider webhooks, one-click
unsubscribe, Prometheus metrics, health probes."""
