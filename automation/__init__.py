"""Lifecycle automation: customer journeys as YAML in git, executed by Dramatiq workers on Redis."""

from automation.api import Lifecycle
from automation.config import Settings
from automation.events import InputError

__version__ = "0.1.0"
__all__ = ["Lifecycle", "Settings", "InputError", "__version__"]
