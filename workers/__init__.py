"""Dramatiq workers of the lifecycle engine.

`dramatiq workers` (what `lifecycle worker` runs) imports this package: it sets
the global broker from the environment, then declares the actors on it.
"""

import dramatiq

from automation.config import Settings
from automation.engine.dispatch import make_broker
from automation.logs import ensure_format
from automation.secret import require_secret

from .process import Shutdown

ensure_format()  # LIFECYCLE_LOG_FORMAT=json in Dramatiq's worker processes too
settings = Settings.from_env()
require_secret(settings, "a worker process")  # it signs unsubscribe links
broker = make_broker(settings)
broker.add_middleware(Shutdown())
dramatiq.set_broker(broker)

from .actors import run_timers  # noqa: E402  (actors bind to the broker set above)

__all__ = ["broker", "settings", "run_timers"]
