"""Local HTTP servers that speak each provider's API, for driving the real SDKs in tests."""
