"""State in Redis and the Lua scripts that change it atomically.

`keys` names every key and timer member, `fields` owns the encoding of a contact hash's fields,
`scripts` loads the Lua in `lua/`; the other modules each own one kind of state: contacts and
events, timers, coupons, channel pauses, rate-limit windows, delivery reports.
"""
