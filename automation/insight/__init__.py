"""What marketers look at: the journeys' report page (flow diagrams with counts, split lifts with
their intervals, charts) and the forecast's page, drawn as self-contained HTML and inline SVG.

Read-only: these modules read counters and journey models and write nothing to Redis. Both the
command line (`lifecycle report`, `lifecycle forecast --html`) and the server (`GET /report`) use
them, which is why they are a wing of their own rather than part of `ops/`.
"""
