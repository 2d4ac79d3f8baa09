"""The errors lifecycle raises on purpose, under one base class.

`except LifecycleError` catches every problem the engine reports with a message meant for
people (a bad setting, input, rule, time or template); anything else is a bug. Each error
also derives from the built-in class its callers expected before (ValueError for bad values),
so code that catches those keeps working.
"""

from __future__ import annotations


class LifecycleError(Exception):
    """Base of every error lifecycle raises on purpose; the message says what is wrong."""


class ConfigError(LifecycleError, ValueError):
    """A setting has a value the engine cannot use."""


class InputError(LifecycleError, ValueError):
    """Input the engine refuses (a contact, an event, a file to import); the message says why."""


class DurationError(LifecycleError, ValueError):
    """A duration such as `3d` or `P3D` that cannot be read."""


class CalendarError(LifecycleError, ValueError):
    """A time, weekday or cron expression in a journey file that cannot be used; the message says how to fix it."""


class ExpressionError(LifecycleError, ValueError):
    """An expression that does not compile or names something unknown."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class RuleError(LifecycleError, RuntimeError):
    """A rule that failed while being evaluated for a contact."""


class TemplateRenderError(LifecycleError):
    """A template that could not produce a complete message."""


class TemplateLimitError(TemplateRenderError):
    """A template that asked for more than a message may cost: its time or output budget, or a bound
    of the sandbox (a huge range, repetition or power)."""


class CouponError(LifecycleError, RuntimeError):
    """A coupon could not be issued (no free code found: the code space is filling up)."""
