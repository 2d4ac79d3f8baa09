"""The engine: moving contacts through journeys.

The scheduler claims due timers and `dispatch` hands them to Dramatiq; a worker's `executor`
runs each batch with the `services` its process holds: `evaluation` decides what a contact's
news means (stages, triggers, goals, exits), `runs` walks runs to their next wait, and due
sends go out through the channel adapters, idempotently.
"""
