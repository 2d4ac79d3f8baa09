"""The journey language: what a journey file means, and how it is read, checked and served.

Data flows in from `journeys/*.yaml`: `sourcemap` reads YAML with positions, `loader` and
`flowbuild` turn it into the frozen model of `journey` and `flow` (or `diagnostics` at
`file:line:col`), `crosscheck` looks across journeys, `sources` knows what a team's apps send,
and `registry` serves the journeys to a process, reloading edited files.
"""
