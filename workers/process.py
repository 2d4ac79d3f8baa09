"""What one worker process holds: its engine, built on the first message (after Dramatiq started
the process), with the heartbeat that says the process is alive (automation.engine.liveness)."""

from __future__ import annotations

import threading

import dramatiq

from automation.config import Settings
from automation.engine.services import Engine
from automation.runtime import open_runtime

_engine: Engine | None = None
_engine_lock = threading.Lock()


def engine(settings: Settings, broker: dramatiq.Broker) -> Engine:
    """The process's engine, created on first use, its heartbeat running from then on."""
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                created = Engine.create(open_runtime(settings))
                # Any command of Dramatiq's refreshes its own heartbeat for this process; asking for
                # the queue's size is the cheapest one.
                created.liveness.touch = lambda: broker.do_qsize(settings.queue)
                created.liveness.start()
                _engine = created
    return _engine


class Shutdown(dramatiq.Middleware):
    """Stops the heartbeat (and closes the adapters) once the process's running batches are done."""

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if _engine is not None:
            _engine.close()
