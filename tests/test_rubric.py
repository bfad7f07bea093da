import pytest

from rlaif.config.rubric import builtin_rubrics, load_rubric
from rlaif.errors import UserError


def rubric(**kw):
    base = {"name": "r", "criteria": [{"name": "a", "question": "A?"}, {"name": "b", "question": "B?", "weight": 3}]}
    return load_rubric(base | kw)


def test_weighted_mean():
    assert rubric().aggregate({"a": 1.0, "b": 0.0}) == pytest.approx(0.25)


def test_gate_zeroes_the_reward_when_an_essential_criterion_fails():
    r = rubric(aggregation="gate", criteria=[{"name": "safe", "question": "Safe?", "essential": True},
                                             {"name": "good", "question": "Good?"}])
    assert r.aggregate({"safe": 0.2, "good": 1.0}) == 0.0
    assert r.aggregate({"safe": 0.9, "good": 0.7}) == pytest.approx(0.7)


def test_formula_is_evaluated_safely_and_clamped():
    r = rubric(aggregation="formula", formula="min(a, b) * 0.5 + 0.5 * a ^ 2")
    assert r.aggregate({"a": 1.0, "b": 0.5}) == pytest.approx(0.75)
    assert rubric(aggregation="formula", formula="a * 10").aggregate({"a": 1.0, "b": 0}) == 1.0
    assert rubric(aggregation="formula", formula="log(a)").aggregate({"a": 0.0, "b": 0}) == 0.0


@pytest.mark.parametrize("formula, scores, want", [
    ("(a - 0.5) ^ 0.5", {"a": 0.9, "b": 0}, 0.4 ** 0.5),
    ("(a - 0.5) ^ 0.5", {"a": 0.2, "b": 0}, 0.0),  # complex in Python: not a real reward
    ("min((a - 0.5) ^ 0.5, b)", {"a": 0.2, "b": 1.0}, 0.0),  # min/max of a complex raised TypeError
    ("max(b, (a - 0.5) ^ 0.5)", {"a": 0.2, "b": 0.7}, 0.0),
    ("sqrt(a - 0.5) + b", {"a": 0.2, "b": 0.3}, 0.0),  # math domain error: the same edge case
    ("exp(1000 * a) - exp(1000 * a)", {"a": 1.0, "b": 0}, 0.0),  # overflow
    ("(a - 0.5) ^ 2", {"a": 0.2, "b": 0}, pytest.approx(0.09)),  # an integer power of a negative stays real
])
def test_a_formula_whose_value_is_not_a_real_number_is_its_edge_case_zero(formula, scores, want):
    """A negative number to a fractional power is complex in Python; the formula's value is then 0 (as for
    log(0)), never an exception that fails the whole batch as judge failures."""
    assert rubric(aggregation="formula", formula=formula).aggregate(scores) == want


@pytest.mark.parametrize("bad", ["__import__('os').system('x')", "a.__class__", "c + 1", "[a, b]", "open('f')",
                                 "a if b else 1", "lambda: 1"])
def test_formula_refuses_anything_but_arithmetic(bad):
    with pytest.raises(UserError, match="formula"):
        rubric(aggregation="formula", formula=bad)


def test_scale_criteria_need_five_levels():
    with pytest.raises(UserError, match="levels 1, 2, 3, 4 and 5"):
        rubric(criteria=[{"name": "s", "question": "How good?", "kind": "scale", "levels": {1: "bad", 5: "good"}}])


def test_errors_name_the_field():
    with pytest.raises(UserError, match=r"criteria\.0\.wieght: unknown key"):
        rubric(criteria=[{"name": "a", "question": "A?", "wieght": 2}])
    with pytest.raises(UserError, match="repeated: a"):
        rubric(criteria=[{"name": "a", "question": "A?"}, {"name": "a", "question": "again"}])


def test_builtin_rubrics_load():
    names = builtin_rubrics()
    assert "says_please" in names
    for n in names:
        assert load_rubric(n).criteria
