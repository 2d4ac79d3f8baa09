"""Calendar times in the contact's own zone: times of day, weekdays, DST, contact dates, anniversaries, cron.

Expected instants are written out in UTC by hand (from the published offsets), not recomputed with the code
under test, so a wrong DST rule shows up as a wrong hour.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from automation.calendar import (
    CalendarError,
    check_cron,
    date_instant,
    next_anniversary,
    next_cron,
    next_time_of_day,
    parse_time_of_day,
    parse_weekdays,
    zone,
)

DAY = 86400.0
NINE = time(9, 0)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc).timestamp()


def local(instant: float, tz: str) -> datetime:
    return datetime.fromtimestamp(instant, ZoneInfo(tz))


# -- zones ------------------------------------------------------------------------------------------------------


def test_a_valid_zone_is_used_as_given():
    assert zone("Asia/Tehran") == ZoneInfo("Asia/Tehran")
    assert zone(" Europe/Warsaw ") == ZoneInfo("Europe/Warsaw")


@pytest.mark.parametrize("name", [None, "", "   ", "Mars/Olympus_Mons", "Europe/Warsw", "GMT+25", "America",
                                  "../../etc/passwd", "/etc/localtime", 42])
def test_invalid_contact_zones_fall_back_to_the_default(name):
    # Given a contact whose zone is missing or misspelt, When the journey asks for it, Then the default is used
    assert zone(name) == ZoneInfo("UTC")
    assert zone(name, default="Europe/Warsaw") == ZoneInfo("Europe/Warsaw")


def test_an_invalid_default_falls_back_to_utc():
    assert zone("nowhere", default="also/nowhere") == ZoneInfo("UTC")
    assert zone(None, default="") == ZoneInfo("UTC")


def test_zone_names_are_accepted_wherever_a_zone_is():
    # Given the same question asked with a name, a ZoneInfo and an invalid name
    after = utc(2026, 6, 1)
    by_name = next_time_of_day(after, "Asia/Taipei", NINE)
    # Then the name and the ZoneInfo agree, and an invalid name means UTC
    assert by_name == next_time_of_day(after, ZoneInfo("Asia/Taipei"), NINE) == utc(2026, 6, 1, 1)
    assert next_time_of_day(after, "Not/AZone", NINE) == utc(2026, 6, 1, 9)


# -- parsing journey values -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("09:00", time(9, 0)), ("9:00", time(9, 0)), ("18:30", time(18, 30)), ("09:00:15", time(9, 0, 15)),
    (" 00:00 ", time(0, 0)), ("23:59:59", time(23, 59, 59)),
])
def test_times_of_day_are_read_in_24_hour_form(text, expected):
    assert parse_time_of_day(text) == expected


@pytest.mark.parametrize("text", ["24:00", "9", "9am", "09:60", "09.30", "", "09:00:60", "009:00", 540, None])
def test_bad_times_of_day_are_refused_with_a_hint(text):
    with pytest.raises(CalendarError, match="09:00"):
        parse_time_of_day(text)


def test_weekdays_are_read_by_short_or_full_name_in_any_case():
    assert parse_weekdays(["mon", "wed"]) == frozenset({0, 2})
    assert parse_weekdays(["Monday", "SUNDAY", "sat"]) == frozenset({0, 5, 6})
    assert parse_weekdays("mon, wed,fri") == frozenset({0, 2, 4})
    assert parse_weekdays(["mon", "mon"]) == frozenset({0})


@pytest.mark.parametrize("items", [["mon", "funday"], ["thurs"], [1], ["mon", None]])
def test_unknown_weekdays_are_refused_and_the_valid_names_are_listed(items):
    with pytest.raises(CalendarError) as caught:
        parse_weekdays(items)
    assert "mon, tue, wed, thu, fri, sat, sun" in str(caught.value)


def test_an_empty_weekday_list_is_refused():
    with pytest.raises(CalendarError, match="at least one"):
        parse_weekdays([])
    with pytest.raises(CalendarError):
        next_time_of_day(utc(2026, 1, 1), "UTC", NINE, frozenset())


def test_calendar_errors_are_value_errors():
    # So the journey loader's existing `except ValueError` reports them like other bad fields
    assert issubclass(CalendarError, ValueError)


# -- time of day in the contact's zone --------------------------------------------------------------------------


def test_each_contact_gets_nine_oclock_at_their_own_nine_oclock():
    # Given contacts in Tehran (UTC+03:30, no DST since 2022) and Taipei (UTC+08:00), at midnight UTC on 1 June
    after = utc(2026, 6, 1)
    # When each is scheduled for "09:00 local"
    tehran = next_time_of_day(after, "Asia/Tehran", parse_time_of_day("09:00"))
    taipei = next_time_of_day(after, "Asia/Taipei", parse_time_of_day("09:00"))
    # Then each goes at 09:00 on their own clock: 05:30 UTC and 01:00 UTC
    assert tehran == utc(2026, 6, 1, 5, 30)
    assert taipei == utc(2026, 6, 1, 1, 0)
    # And in winter too (Tehran no longer moves its clocks)
    assert next_time_of_day(utc(2026, 12, 1), "Asia/Tehran", NINE) == utc(2026, 12, 1, 5, 30)


def test_a_time_already_passed_today_is_tomorrow():
    # Given 10:00 in Taipei (02:00 UTC), When asked for 09:00, Then it is 09:00 tomorrow
    assert next_time_of_day(utc(2026, 6, 1, 2), "Asia/Taipei", NINE) == utc(2026, 6, 2, 1)


def test_an_instant_exactly_at_the_time_is_that_instant():
    at_nine = utc(2026, 6, 1, 1)  # 09:00 Taipei
    assert next_time_of_day(at_nine, "Asia/Taipei", NINE) == at_nine
    assert next_time_of_day(at_nine + 0.001, "Asia/Taipei", NINE) == at_nine + DAY


def test_the_local_day_decides_not_the_utc_day():
    # Given 23:00 UTC on 1 June, which is already 07:00 on 2 June in Taipei
    # When asked for 09:00, Then it is 09:00 on 2 June local (two hours later), not on 3 June
    assert next_time_of_day(utc(2026, 6, 1, 23), "Asia/Taipei", NINE) == utc(2026, 6, 2, 1)


def test_weekdays_from_a_tuesday_evening_land_on_wednesday_morning():
    # Given "09:00 on mon,wed" and a contact in Taipei on Tuesday 3 March 2026 at 20:00 local (12:00 UTC)
    days = parse_weekdays(["mon", "wed"])
    tuesday_evening = utc(2026, 3, 3, 12)
    # When the next send time is computed
    instant = next_time_of_day(tuesday_evening, "Asia/Taipei", NINE, days)
    # Then it is Wednesday 4 March at 09:00 Taipei
    assert instant == utc(2026, 3, 4, 1)
    assert local(instant, "Asia/Taipei").strftime("%a %H:%M") == "Wed 09:00"


def test_weekdays_from_wednesday_at_nine_exactly_is_that_instant():
    wednesday_nine = utc(2026, 3, 4, 1)
    assert next_time_of_day(wednesday_nine, "Asia/Taipei", NINE, frozenset({0, 2})) == wednesday_nine
    # And a moment later, the next allowed day is Monday 9 March
    assert next_time_of_day(wednesday_nine + 1, "Asia/Taipei", NINE, frozenset({0, 2})) == utc(2026, 3, 9, 1)


def test_a_single_weekday_can_be_almost_a_week_away():
    # From Monday 2 March 10:00 UTC, "09:00 on sun" in UTC is Sunday 8 March
    assert next_time_of_day(utc(2026, 3, 2, 10), "UTC", NINE, parse_weekdays(["sun"])) == utc(2026, 3, 8, 9)
    # and "09:00 on mon" after Monday's 09:00 is the next Monday
    assert next_time_of_day(utc(2026, 3, 2, 10), "UTC", NINE, parse_weekdays(["mon"])) == utc(2026, 3, 9, 9)


# -- DST --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tz, before, change, after_, before_utc_hour, after_utc_hour", [
    # Warsaw spring forward: CET +01:00 -> CEST +02:00 on 29 March 2026
    ("Europe/Warsaw", date(2026, 3, 28), date(2026, 3, 29), date(2026, 3, 30), 8, 7),
    # Warsaw fall back: CEST +02:00 -> CET +01:00 on 25 October 2026
    ("Europe/Warsaw", date(2026, 10, 24), date(2026, 10, 25), date(2026, 10, 26), 7, 8),
    # New York spring forward: EST -05:00 -> EDT -04:00 on 8 March 2026
    ("America/New_York", date(2026, 3, 7), date(2026, 3, 8), date(2026, 3, 9), 14, 13),
    # New York fall back: EDT -04:00 -> EST -05:00 on 1 November 2026
    ("America/New_York", date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 2), 13, 14),
])
def test_nine_oclock_stays_nine_oclock_local_across_a_dst_change(tz, before, change, after_, before_utc_hour,
                                                                  after_utc_hour):
    # Given a daily 09:00 local, starting at midnight UTC the day before the change
    first = next_time_of_day(utc(before.year, before.month, before.day), tz, NINE)
    second = next_time_of_day(first + 1, tz, NINE)
    third = next_time_of_day(second + 1, tz, NINE)
    # Then each is 09:00 on the local clock, while the UTC hour moves with the offset
    assert first == utc(before.year, before.month, before.day, before_utc_hour)
    assert second == utc(change.year, change.month, change.day, after_utc_hour)
    assert third == utc(after_.year, after_.month, after_.day, after_utc_hour)
    assert [local(t, tz).strftime("%Y-%m-%d %H:%M") for t in (first, second, third)] == [
        f"{d.isoformat()} 09:00" for d in (before, change, after_)]
    # And the day of the change is 23 or 25 hours long, not 24
    assert second - first != DAY and third - second == DAY


@pytest.mark.parametrize("tz, gap_day, expected_utc", [
    # 02:30 does not exist in Warsaw on 29 March (02:00 -> 03:00): it happens at 03:30 CEST = 01:30 UTC
    ("Europe/Warsaw", date(2026, 3, 29), utc(2026, 3, 29, 1, 30)),
    # 02:30 does not exist in New York on 8 March (02:00 -> 03:00): it happens at 03:30 EDT = 07:30 UTC
    ("America/New_York", date(2026, 3, 8), utc(2026, 3, 8, 7, 30)),
])
def test_a_time_inside_the_spring_forward_gap_happens_just_after_it(tz, gap_day, expected_utc):
    # Given "02:30 daily", asked from the start of the gap day (local midnight is 23:00/05:00 UTC the day before)
    start = utc(gap_day.year, gap_day.month, gap_day.day) - 6 * 3600
    start = next_time_of_day(start, tz, time(0, 0))
    # When the 02:30 of that day is computed
    instant = next_time_of_day(start, tz, time(2, 30))
    # Then it is 03:30 local, shifted by the hour the clocks jumped
    assert instant == expected_utc
    assert local(instant, tz).strftime("%Y-%m-%d %H:%M") == f"{gap_day.isoformat()} 03:30"


def test_a_time_inside_the_fall_back_overlap_is_its_first_occurrence():
    # Given 01:30 happens twice in New York on 1 November 2026: 01:30 EDT (05:30 UTC) and 01:30 EST (06:30 UTC)
    # When "01:30 daily" is asked from local midnight
    instant = next_time_of_day(utc(2026, 11, 1, 4), "America/New_York", time(1, 30))
    # Then it is the first 01:30
    assert instant == utc(2026, 11, 1, 5, 30)
    # And once that has passed, even from inside the repeated hour, the next one is tomorrow, not 06:30 UTC
    assert next_time_of_day(instant + 1, "America/New_York", time(1, 30)) == utc(2026, 11, 2, 6, 30)
    assert next_time_of_day(utc(2026, 11, 1, 6, 10), "America/New_York", time(1, 30)) == utc(2026, 11, 2, 6, 30)


def test_warsaw_fall_back_overlap_is_also_the_first_occurrence():
    # 02:30 happens twice in Warsaw on 25 October 2026: 02:30 CEST (00:30 UTC) first
    assert next_time_of_day(utc(2026, 10, 24, 23), "Europe/Warsaw", time(2, 30)) == utc(2026, 10, 25, 0, 30)


@pytest.mark.parametrize("tz, first_day", [
    ("Europe/Warsaw", date(2026, 3, 25)), ("Europe/Warsaw", date(2026, 10, 21)),
    ("America/New_York", date(2026, 3, 4)), ("America/New_York", date(2026, 10, 28)),
])
@pytest.mark.parametrize("at", [time(0, 0), time(1, 30), time(2, 0), time(2, 30), time(3, 0), time(9, 0),
                                time(23, 59, 59)])
def test_consecutive_days_never_repeat_and_never_skip_across_dst(tz, first_day, at):
    # Given a daily time chained day after day through a DST change, from local midnight of the first day,
    # each asked a second after the last
    midnight = next_time_of_day(utc(first_day.year, first_day.month, first_day.day) - 14 * 3600, tz, time(0, 0))
    instant = next_time_of_day(midnight, tz, at)
    days = [local(instant, tz).date()]
    for _ in range(9):
        following = next_time_of_day(instant + 1, tz, at)
        # Then each instant is later than the one before, by about a day
        assert 22 * 3600 <= following - instant <= 26 * 3600
        instant = following
        days.append(local(instant, tz).date())
    # And the local days are consecutive: none repeated, none skipped
    assert days == [days[0] + timedelta(days=i) for i in range(10)]
    assert days[0] == first_day


def test_a_day_that_never_existed_is_not_invented():
    # Given Samoa, which skipped 30 December 2011 entirely (23:59:59 on the 29th at -10:00 was followed by
    # 00:00 on the 31st at +14:00), and a daily 09:00 from 10:00 on the 29th
    apia = "Pacific/Apia"
    start = datetime(2011, 12, 29, 10, tzinfo=ZoneInfo(apia)).timestamp()
    first = next_time_of_day(start, apia, NINE)
    second = next_time_of_day(first + 1, apia, NINE)
    # Then the next ones are 31 December and 1 January at 09:00, once each
    assert [local(t, apia).strftime("%Y-%m-%d %H:%M") for t in (first, second)] == [
        "2011-12-31 09:00", "2012-01-01 09:00"]


# -- dates held by contacts -------------------------------------------------------------------------------------


def test_seven_days_before_a_renewal_at_nine_local():
    # Given a renewal on 4 May 2026 for a contact in Warsaw (CEST, UTC+02:00)
    # When the reminder is "7 days before, at 09:00"
    instant = date_instant("2026-05-04", "Europe/Warsaw", NINE, offset_days=-7)
    # Then it is 27 April 09:00 in Warsaw, 07:00 UTC
    assert instant == utc(2026, 4, 27, 7)


def test_a_bare_date_without_a_time_is_local_midnight():
    assert date_instant("2026-05-04", "Asia/Taipei") == utc(2026, 5, 3, 16)
    assert date_instant(date(2026, 5, 4), "Asia/Taipei", offset_days=1) == utc(2026, 5, 4, 16)


def test_a_contact_date_at_a_time_inside_the_gap_follows_the_same_rule():
    # 02:30 on 29 March 2026 in Warsaw does not exist: it is 03:30 CEST, 01:30 UTC
    assert date_instant("2026-03-29", "Europe/Warsaw", time(2, 30)) == utc(2026, 3, 29, 1, 30)
    # Chile springs forward at midnight (00:00 -> 01:00 on 6 September 2026): that bare date starts at 01:00
    assert date_instant("2026-09-06", "America/Santiago") == utc(2026, 9, 6, 4)
    assert local(utc(2026, 9, 6, 4), "America/Santiago").strftime("%H:%M") == "01:00"


def test_an_offset_across_a_dst_change_keeps_the_local_time():
    # 7 days before 2 April 2026 in Warsaw is 26 March, still CET (+01:00): 09:00 local is 08:00 UTC
    assert date_instant("2026-04-02", "Europe/Warsaw", NINE, -7) == utc(2026, 3, 26, 8)


def test_a_datetime_with_a_zone_keeps_its_instant_when_no_time_is_asked():
    # Given a renewal at 10:15 Warsaw time, When asked 1 day before without a time of day
    value = "2026-05-04T10:15:00+02:00"
    # Then it is the same instant shifted by exactly 24 hours
    assert date_instant(value, "America/New_York") == utc(2026, 5, 4, 8, 15)
    assert date_instant(value, "America/New_York", offset_days=-1) == utc(2026, 5, 3, 8, 15)


def test_a_datetime_without_a_zone_is_utc():
    assert date_instant("2026-05-04T10:15:00", "Asia/Taipei") == utc(2026, 5, 4, 10, 15)
    assert date_instant("2026-05-04 10:15", "Asia/Taipei") == utc(2026, 5, 4, 10, 15)
    assert date_instant("2026-05-04T10:15:00Z", "Asia/Taipei") == utc(2026, 5, 4, 10, 15)
    assert date_instant(datetime(2026, 5, 4, 10, 15), "Asia/Taipei") == utc(2026, 5, 4, 10, 15)


def test_the_calendar_day_of_an_instant_is_the_contacts_local_day():
    # Given a renewal at 02:00 UTC on 4 May, which is 22:00 on 3 May in New York
    value = datetime(2026, 5, 4, 2, 0, tzinfo=timezone.utc)
    # When the contact's reminder is "on the day, at 09:00"
    # Then it is 3 May 09:00 New York (EDT, 13:00 UTC), and 4 May 09:00 in Taipei (01:00 UTC)
    assert date_instant(value, "America/New_York", NINE) == utc(2026, 5, 3, 13)
    assert date_instant(value, "Asia/Taipei", NINE) == utc(2026, 5, 4, 1)


def test_epoch_seconds_are_instants():
    renewal = utc(2026, 5, 4, 10, 15)
    assert date_instant(renewal, "Europe/Warsaw") == renewal
    assert date_instant(int(renewal), "Europe/Warsaw", offset_days=2) == renewal + 2 * DAY
    assert date_instant(renewal, "Europe/Warsaw", NINE, -7) == utc(2026, 4, 27, 7)
    # before 1970 too (birthdays)
    assert date_instant(utc(1965, 7, 14, 12), "UTC", NINE) == utc(1965, 7, 14, 9)


@pytest.mark.parametrize("value", [None, "", "   ", "tomorrow", "2026-02-30", "04/05/2026", 12.5e30, -12.5e30,
                                   float("nan"), float("inf"), True, [], {"date": "2026-05-04"}, b"2026-05-04"])
def test_dirty_contact_dates_give_none(value):
    # Given a contact attribute that is missing or not a date, Then there is no instant and nothing raises
    assert date_instant(value, "Europe/Warsaw") is None
    assert date_instant(value, "Europe/Warsaw", NINE, -7) is None
    assert next_anniversary(value, utc(2026, 1, 1), "Europe/Warsaw") is None


def test_an_offset_past_the_end_of_the_calendar_gives_none():
    assert date_instant("9999-12-31", "UTC", NINE, offset_days=1) is None


# -- anniversaries ----------------------------------------------------------------------------------------------


def test_a_birthday_later_this_year():
    # Given a birthday on 14 July and today 1 March 2026, contact in Warsaw (CEST in July, UTC+02:00)
    # Then the greeting is 14 July 2026 at 09:00 Warsaw, 07:00 UTC
    assert next_anniversary("1990-07-14", utc(2026, 3, 1), "Europe/Warsaw") == utc(2026, 7, 14, 7)


def test_a_birthday_already_passed_this_year_is_next_year():
    assert next_anniversary("1990-07-14", utc(2026, 8, 1), "Europe/Warsaw") == utc(2027, 7, 14, 7)


def test_on_the_birthday_itself_before_and_after_the_greeting_time():
    # 08:00 Warsaw on the day: still today at 09:00; 10:00 Warsaw: next year
    assert next_anniversary("1990-07-14", utc(2026, 7, 14, 6), "Europe/Warsaw") == utc(2026, 7, 14, 7)
    assert next_anniversary("1990-07-14", utc(2026, 7, 14, 7), "Europe/Warsaw") == utc(2026, 7, 14, 7)
    assert next_anniversary("1990-07-14", utc(2026, 7, 14, 8), "Europe/Warsaw") == utc(2027, 7, 14, 7)


def test_a_leap_day_birthday_falls_on_feb_28_in_other_years():
    # Given a birthday on 29 February, in Warsaw (CET, UTC+01:00 in February)
    # Then in 2026 it is greeted on 28 February, and in 2028 on 29 February
    assert next_anniversary("2000-02-29", utc(2026, 1, 1), "Europe/Warsaw") == utc(2026, 2, 28, 8)
    assert next_anniversary(date(2000, 2, 29), utc(2027, 3, 1), "Europe/Warsaw") == utc(2028, 2, 29, 8)


def test_the_day_before_a_birthday():
    assert next_anniversary("1990-07-14", utc(2026, 3, 1), "Europe/Warsaw", offset_days=-1) == utc(2026, 7, 13, 7)
    # a leap-day birthday's eve in a non-leap year is 27 February
    assert next_anniversary("2000-02-29", utc(2026, 1, 1), "UTC", offset_days=-1) == utc(2026, 2, 27, 9)
    # and once this year's eve has passed, it is next year's
    assert next_anniversary("1990-07-14", utc(2026, 7, 13, 8), "Europe/Warsaw", offset_days=-1) == \
        utc(2027, 7, 13, 7)


def test_an_offset_can_carry_last_years_date_into_this_year():
    # Given an anniversary on 30 December and a message 3 days after it, asked on 1 January 2026
    # Then it is 2 January 2026 (from 30 December 2025), not 2 January 2027
    assert next_anniversary("2019-12-30", utc(2026, 1, 1), "UTC", offset_days=3) == utc(2026, 1, 2, 9)


def test_anniversary_time_of_day_and_values_with_times():
    # An explicit time of day replaces the 09:00 default
    assert next_anniversary("1990-07-14", utc(2026, 3, 1), "Asia/Taipei", time(18, 30)) == utc(2026, 7, 14, 10, 30)
    # A sign-up instant counts by its local day: 23:30 UTC on 14 July is 15 July in Taipei
    signup = "2024-07-14T23:30:00Z"
    assert next_anniversary(signup, utc(2026, 3, 1), "Asia/Taipei") == utc(2026, 7, 15, 1)
    assert next_anniversary(utc(2024, 7, 14, 23, 30), utc(2026, 3, 1), "UTC") == utc(2026, 7, 14, 9)


# -- cron -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("expression", ["0 9 * * *", "*/15 9-17 * * mon-fri", "0 9 1 * *", "30 8 * * 1,3,5",
                                        " 0 9 * * sun ", "0 0 29 2 *", "0 9 L * *"])
def test_valid_cron_expressions_have_no_problem(expression):
    assert check_cron(expression) is None


@pytest.mark.parametrize("expression, says", [
    ("", "5 fields"),
    ("0 9 * *", "has 4 fields"),
    ("0 0 9 * * *", "seconds and year"),
    ("0 25 * * *", "hour field '25'"),
    ("61 9 * * *", "minute field '61'"),
    ("0 9 * 13 *", "month field '13'"),
    ("0 9 * * funday", "day-of-week field 'funday'"),
    ("0 9 0 * *", "day-of-month field '0'"),
    ("@daily", '"0 0 * * *"'),
    ("0 9 30 2 *", "never fires"),
    (None, "5 fields"),
])
def test_invalid_cron_expressions_say_what_is_wrong(expression, says):
    problem = check_cron(expression)
    assert problem is not None and says in problem


def test_next_cron_refuses_an_invalid_expression():
    with pytest.raises(CalendarError, match="hour field"):
        next_cron("0 25 * * *", utc(2026, 1, 1), "UTC")


def test_cron_fires_strictly_after_and_in_the_contacts_zone():
    # "0 9 * * *" in Taipei from 1 June 00:00 UTC (08:00 local) is 09:00 local, 01:00 UTC
    assert next_cron("0 9 * * *", utc(2026, 6, 1), "Asia/Taipei") == utc(2026, 6, 1, 1)
    # from that fire time exactly, the next is tomorrow
    assert next_cron("0 9 * * *", utc(2026, 6, 1, 1), "Asia/Taipei") == utc(2026, 6, 2, 1)
    assert next_cron("0 9 * * *", utc(2026, 6, 1, 1) - 0.5, ZoneInfo("Asia/Taipei")) == utc(2026, 6, 1, 1)
    # weekdays are the local ones: Tuesday 3 March 20:00 Taipei -> "0 9 * * wed" is the next morning
    assert next_cron("0 9 * * wed", utc(2026, 3, 3, 12), "Asia/Taipei") == utc(2026, 3, 4, 1)


def test_cron_keeps_nine_oclock_local_across_the_warsaw_spring_change():
    # Given "0 9 * * *" in Warsaw, before (CET +01:00) and after (CEST +02:00) 29 March 2026
    before = next_cron("0 9 * * *", utc(2026, 3, 27, 12), "Europe/Warsaw")
    on_the_day = next_cron("0 9 * * *", before, "Europe/Warsaw")
    after = next_cron("0 9 * * *", on_the_day, "Europe/Warsaw")
    # Then it fires at 09:00 local each day: 08:00 UTC, then 07:00 UTC
    assert (before, on_the_day, after) == (utc(2026, 3, 28, 8), utc(2026, 3, 29, 7), utc(2026, 3, 30, 7))


def test_cron_keeps_nine_oclock_local_across_the_new_york_fall_change():
    first = next_cron("0 9 * * *", utc(2026, 10, 31, 0), "America/New_York")
    second = next_cron("0 9 * * *", first, "America/New_York")
    assert (first, second) == (utc(2026, 10, 31, 13), utc(2026, 11, 1, 14))


def test_cron_time_inside_the_gap_fires_once_when_the_gap_ends():
    # Given "30 2 * * *" in Warsaw, where 02:30 does not exist on 29 March 2026
    fires = [next_cron("30 2 * * *", utc(2026, 3, 27, 12), "Europe/Warsaw")]
    for _ in range(3):
        fires.append(next_cron("30 2 * * *", fires[-1], "Europe/Warsaw"))
    # Then it fires once that day, right after the jump (03:00 CEST = 01:00 UTC), like cron, and 02:30 otherwise
    assert fires == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30),
                     utc(2026, 3, 31, 0, 30)]


def test_cron_fixed_time_in_the_overlap_fires_once():
    # Given "30 1 * * *" in New York, where 01:30 happens twice on 1 November 2026
    first = next_cron("30 1 * * *", utc(2026, 10, 31, 12), "America/New_York")
    second = next_cron("30 1 * * *", first, "America/New_York")
    # Then it fires at the first 01:30 (EDT, 05:30 UTC) only, and next on 2 November (EST, 06:30 UTC)
    assert (first, second) == (utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30))


def test_cron_wildcard_hours_keep_firing_through_the_repeated_hour():
    # Given "*/30 * * * *" in New York through the fall-back night, Then it fires every 30 real minutes
    fires = [next_cron("*/30 * * * *", utc(2026, 11, 1, 4, 40), "America/New_York")]
    for _ in range(4):
        fires.append(next_cron("*/30 * * * *", fires[-1], "America/New_York"))
    assert [f - fires[0] for f in fires] == [0, 1800, 3600, 5400, 7200]
    assert fires[0] == utc(2026, 11, 1, 5, 0)
