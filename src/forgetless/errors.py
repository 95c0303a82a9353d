"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""

from collections.abc import Iterable


class UsageError(Exception):
    """Bad input: an unknown name, a wrong value, missing or corrupt data.

    The message is one line that says what is wrong and what to do.
    """


class DataError(UsageError):
    """Data that cannot be found, downloaded or parsed."""


def closest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest of `choices`, or '' when nothing is close."""
    import difflib

    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
