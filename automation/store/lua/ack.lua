-- Release a claim: remove the lease only if it is still the one this message holds,
-- so a newer claim of the same timer keeps its protection.
-- KEYS[1] leases zset  KEYS[2] lease tokens hash  ARGV[1] member  ARGV[2] the claim's token
--#include lease
return release(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
