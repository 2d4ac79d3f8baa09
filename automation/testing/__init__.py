"""Test helpers the project ships: the adapter contract kit and a provider stand-in server.

    from automation.testing import AdapterContract, HTTPStandIn, Response

See docs/adapters.md.
"""

from automation.testing.contract import AdapterContract, ProviderScript
from automation.testing.standin import Exchange, HTTPStandIn, Request, Response

__all__ = ["AdapterContract", "ProviderScript", "Exchange", "HTTPStandIn", "Request", "Response"]
