"""A child's expected age today, and the date rules of a case."""

from __future__ import annotations

from datetime import date

from service.ageing.progression import MAX_AGE_AT_PHOTO, MAX_TARGET_AGE
from service.ageing.templates import MIN_GAP_YEARS
from service.errors import InvalidInput

DAYS_PER_YEAR = 365.25


def birth_day(
    birth_date: date | None, age_at_disappearance: float | None, missing_since: date | None
) -> float | None:
    """The (estimated) day of birth as a date ordinal: from the birth date, or from the age
    when the child went missing; None when the case has neither."""
    if birth_date is not None:
        return float(birth_date.toordinal())
    if age_at_disappearance is not None and missing_since is not None:
        return missing_since.toordinal() - age_at_disappearance * DAYS_PER_YEAR
    return None


def expected_age(
    birth_date: date | None,
    age_at_disappearance: float | None,
    missing_since: date | None,
    today: date,
) -> float | None:
    """The child's age today, from the birth date or from the age when they went missing."""
    born = birth_day(birth_date, age_at_disappearance, missing_since)
    return None if born is None else (today.toordinal() - born) / DAYS_PER_YEAR


def check_case_dates(
    birth_date: date | None, missing_since: date | None, today: date | None = None
) -> None:
    today = today or date.today()
    for name, value in (("birth_date", birth_date), ("missing_since", missing_since)):
        if value is not None and value > today:
            raise InvalidInput(f"{name} is in the future")
    if birth_date and missing_since and missing_since < birth_date:
        raise InvalidInput("missing_since is before birth_date")


def aged_preview_age(age_at_photo: float | None, expected_now: float | None) -> float | None:
    """The age to show a photo's face at (the child's expected age today), when the growth
    model reaches it: a photo of a child at most 20, aged at least a year on, to 25 at most."""
    if expected_now is None or age_at_photo is None or age_at_photo > MAX_AGE_AT_PHOTO:
        return None
    fits = age_at_photo + MIN_GAP_YEARS <= expected_now <= MAX_TARGET_AGE
    return expected_now if fits else None
