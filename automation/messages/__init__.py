"""Making messages: templates per channel and locale, SMS segments, unsubscribe links."""
