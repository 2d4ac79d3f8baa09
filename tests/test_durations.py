import pytest

from automation.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize("text, seconds", [
    ("30m", 1800), ("2h", 7200), ("3d", 3 * 86400), ("2w", 14 * 86400), ("1mo", 30 * 86400),
    ("1y", 365 * 86400), ("1d12h", 1.5 * 86400), ("90 days", 90 * 86400), ("P3D", 3 * 86400),
    ("PT15M", 900), ("0", 0), (45, 45), ("1.5h", 5400),
])
def test_durations_from_minutes_to_months(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["3 dais", "soon", "", "-1d", True, "d3", -5])
def test_bad_durations_are_rejected(text):
    with pytest.raises(DurationError):
        parse_duration(text)


def test_format_duration_is_short():
    assert format_duration(3 * 86400) == "3d"
    assert format_duration(5400) == "90m"
    assert format_duration(4000) == "1.1h"
