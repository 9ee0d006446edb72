"""``ORION_FAILPOINTS`` parsing (config.failpoints); the points themselves are
exercised against a real worker in tests/integration/test_crash_points.py."""

import pytest

from config.failpoints import parse


def test_pairs_parse_with_patterns_and_probabilities():
    assert parse("") == ()
    assert parse(" saga.*:after_commit=0.2, provider.capture:after=1 ,") == (
        ("saga.*:after_commit", 0.2),
        ("provider.capture:after", 1.0),
    )


@pytest.mark.parametrize(
    "spec, message",
    [
        ("saga.*:after_commit", "is not pattern=probability"),
        ("email:after_smtp=1.5", "must be in [0, 1]"),
    ],
)
def test_bad_specs_name_the_pair(spec, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(spec)
