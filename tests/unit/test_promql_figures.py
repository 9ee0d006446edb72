"""tests.support.prometheus.figures: what the Prometheus test evaluates of each
alert expression (the threshold taken off, and/or split, absent() kept apart)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.prometheus import figures

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules" / "orion.yml"


def test_a_top_level_threshold_is_taken_off():
    assert figures("max(orion_sagas_stuck) > 0") == [("max(orion_sagas_stuck)", False)]
    assert figures('up{job="orion"} == 0') == [('up{job="orion"}', False)]
    assert figures("sum(rate(x[5m])) >= bool 1e-3") == [("sum(rate(x[5m]))", False)]


def test_comparisons_inside_brackets_strings_or_with_a_series_stay():
    assert figures("max(x > 1)") == [("max(x > 1)", False)]
    assert figures('x{a=">1"}') == [('x{a=">1"}', False)]
    assert figures("x > y") == [("x > y", False)]


def test_set_operators_split_and_absent_must_be_empty():
    assert figures("time() - max(t) > 900 or absent(t)") == [("time() - max(t)", False), ("absent(t)", True)]
    assert figures('absent(m) and on() up{job="orion"} == 1') == [
        ("absent(m)", True),
        ('up{job="orion"}', False),
    ]
    assert figures("max by (q) (deriv(m[10m])) > 1 and max by (q) (m) > 100") == [
        ("max by (q) (deriv(m[10m]))", False),
        ("max by (q) (m)", False),
    ]
    assert figures("sum(x and on() y) > 0") == [("sum(x and on() y)", False)]


def test_every_shipped_rule_loses_its_threshold():
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            for figure, must_be_empty in figures(rule["expr"]):
                assert must_be_empty or not any(op in figure for op in (" > ", " < ", " == ")), figure
