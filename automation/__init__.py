"""Lifecycle automation: customer journeys as YAML in git, executed by Dramatiq workers on Redis."""

from .api import Lifecycle
from .config import Settings
from .events import InputError

__version__ = "0.1.0"
__all__ = ["Lifecycle", "Settings", "InputError", "__version__"]
