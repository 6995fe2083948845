"""The k-anonymity / l-diversity engine of the extracts, against a brute-force oracle.

The oracle is written here from the brief's words alone: for every node of the
lattice (one level per quasi-identifier) it groups the rows by their
generalized labels, suppresses the classes smaller than k, withholds a
sensitive attribute in a released class whose carried values have fewer than l
distinct ones, keeps the nodes within the suppression cap and picks the lowest
height, then the fewest suppressed rows, then the fewest withheld (class,
attribute) pairs, then the smallest level tuple. The released rows are checked
on their own too: every class has k rows, every released sensitive attribute
is l-diverse within its class, and released + suppressed = rows.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from vault.extracts.anonymity import AnonymityRefusedError, Generalizer, Histogram, Plan, Released, choose, suppression_limit

FAST = settings(max_examples=300, deadline=None)

Row = tuple[tuple[str | None, ...], tuple[Hashable | None, ...] | None]


# -- small hierarchies of the tests' own --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ages:
    """Integer ages: exact → decade → 30-year span → *; absent is "unknown" below *."""

    attribute: str = "age"
    levels: tuple[str, ...] = ("age", "decade", "span", "*")

    def generalize(self, value: str | None, level: int) -> str:
        if level == 3:
            return "*"
        if value is None:
            return "unknown"
        age = int(value)
        return [value, f"{age // 10 * 10}s", f"{age // 30 * 30}-{age // 30 * 30 + 29}"][level]


@dataclass(frozen=True, slots=True)
class Letters:
    """Letters a–h: the letter → its half of the alphabet (a-d, e-h) → *."""

    attribute: str = "letter"
    levels: tuple[str, ...] = ("letter", "half", "*")

    def generalize(self, value: str | None, level: int) -> str:
        if level == 2:
            return "*"
        if value is None:
            return "unknown"
        return value if level == 0 else ("a-d" if value <= "d" else "e-h")


@dataclass(frozen=True, slots=True)
class Flag:
    """A yes/no flag: the flag → *."""

    attribute: str = "flag"
    levels: tuple[str, ...] = ("flag", "*")

    def generalize(self, value: str | None, level: int) -> str:
        return "*" if level == 1 else (value or "undisclosed")


@dataclass(frozen=True, slots=True)
class Digits:
    """Digits 0–9: the digit → its pair (0-1, 2-3, …) → low (0-5) or high (6-9) → *; a deeper attribute for a bigger lattice."""

    attribute: str = "digit"
    levels: tuple[str, ...] = ("digit", "pair", "half", "*")

    def generalize(self, value: str | None, level: int) -> str:
        if level == 3:
            return "*"
        if value is None:
            return "unknown"
        d = int(value)
        return [value, f"pair{d // 2}", "low" if d // 2 < 3 else "high"][level]


@dataclass(frozen=True, slots=True)
class Tangled:
    """Not a hierarchy: level 1 splits what level 0 had merged."""

    attribute: str = "tangled"
    levels: tuple[str, ...] = ("raw", "split", "*")

    def generalize(self, value: str | None, level: int) -> str:
        return ["same", value or "none", "*"][level]


HIERARCHIES: dict[str, Generalizer] = {"age": Ages(), "letter": Letters(), "flag": Flag(), "digit": Digits()}
DOMAINS: dict[str, st.SearchStrategy[str | None]] = {
    "age": st.none() | st.integers(0, 99).map(str),
    "letter": st.none() | st.sampled_from("abcdefgh"),
    "flag": st.sampled_from(["y", "n", None]),
    "digit": st.none() | st.integers(0, 9).map(str),
}
SENSITIVE_DOMAINS: dict[str, st.SearchStrategy[Hashable | None]] = {
    "skin": st.none() | st.sampled_from(["dry", "oily", "mixed", "normal"]),
    "allergies": st.none() | st.lists(st.sampled_from(["latex", "lidocaine", "nickel"]), min_size=1, max_size=2, unique=True).map(lambda a: tuple(sorted(a))),
}


@dataclass(frozen=True)
class Case:
    qi: tuple[str, ...]
    sensitive: tuple[str, ...]
    rows: tuple[Row, ...]
    k: int
    l: int  # noqa: E741 — the l of l-diversity
    cap: Fraction

    @property
    def hierarchies(self) -> list[Generalizer]:
        return [HIERARCHIES[a] for a in self.qi]


@st.composite
def cases(draw: st.DrawFn, *, max_rows: int = 40) -> Case:
    qi = tuple(draw(st.lists(st.sampled_from(sorted(HIERARCHIES)), min_size=1, max_size=3, unique=True)))
    sensitive = tuple(draw(st.lists(st.sampled_from(sorted(SENSITIVE_DOMAINS)), max_size=2, unique=True)))
    row = st.tuples(
        st.tuples(*(DOMAINS[a] for a in qi)),
        st.tuples(*(SENSITIVE_DOMAINS[s] for s in sensitive)) | st.none() if sensitive else st.none(),
    )
    pooled = st.lists(row, min_size=1, max_size=8).flatmap(lambda pool: st.lists(st.sampled_from(pool), min_size=5, max_size=max_rows))
    rows = tuple(draw(st.lists(row, max_size=max_rows) | pooled))  # pooled rows repeat, so classes reach k
    return Case(qi, sensitive, rows, k=draw(st.integers(2, 6)), l=draw(st.integers(1, 3)), cap=Fraction(draw(st.integers(0, 20)), 20))


def histogram_of(case: Case, rows: Sequence[Row] | None = None) -> Histogram:
    histogram = Histogram(case.qi, case.sensitive)
    for qi, sensitive in case.rows if rows is None else rows:
        histogram.add(qi, sensitive)
    return histogram


def plan_of(case: Case, rows: Sequence[Row] | None = None, *, fixed: Mapping[str, str] | None = None) -> Plan:
    return choose(histogram_of(case, rows), case.hierarchies, k=case.k, l=case.l, cap=case.cap, fixed=fixed)


# -- the oracle -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    levels: tuple[int, ...]
    suppressed: int
    withheld_pairs: int
    withheld_classes: int
    k_achieved: int | None
    l_achieved: int | None


def evaluate(case: Case, levels: tuple[int, ...]) -> Outcome:
    """One node, straight from the rows."""
    members: dict[tuple[str, ...], list[Row]] = defaultdict(list)
    for qi, sensitive in case.rows:
        members[tuple(h.generalize(v, lv) for h, v, lv in zip(case.hierarchies, qi, levels, strict=True))].append((qi, sensitive))
    released = {c: rows for c, rows in members.items() if len(rows) >= case.k}
    pairs, classes, distinct_released = 0, 0, []
    for rows in released.values():
        low = 0
        for i in range(len(case.sensitive)):
            distinct = len({s[i] for _, s in rows if s is not None and s[i] is not None})
            if 0 < distinct < case.l:
                low += 1
            elif distinct >= case.l:
                distinct_released.append(distinct)
        pairs += low
        classes += low > 0
    return Outcome(
        levels=levels,
        suppressed=len(case.rows) - sum(map(len, released.values())),
        withheld_pairs=pairs,
        withheld_classes=classes,
        k_achieved=min(map(len, released.values()), default=None),
        l_achieved=min(distinct_released, default=None),
    )


def lattice(case: Case) -> list[tuple[int, ...]]:
    return list(itertools.product(*(range(len(h.levels)) for h in case.hierarchies)))


def oracle(case: Case) -> Outcome | None:
    """The preferred node within the cap, or None when there is none."""
    cap_rows = math.floor(case.cap * len(case.rows))
    within = [o for o in (evaluate(case, node) for node in lattice(case)) if o.suppressed <= cap_rows]
    return min(within, key=lambda o: (sum(o.levels), o.suppressed, o.withheld_pairs, o.levels), default=None)


def check_released(case: Case, plan: Plan) -> list[Released | None]:
    """Release every row and check the released rows on their own."""
    out = [plan.release(qi, sensitive) for qi, sensitive in case.rows]
    released = [(row, r) for row, r in zip(case.rows, out, strict=True) if r is not None]
    assert len(released) + plan.suppressed == len(case.rows)
    assert plan.suppressed <= math.floor(case.cap * len(case.rows))
    by_class: dict[tuple[str, ...], list[tuple[Row, Released]]] = defaultdict(list)
    for row, r in released:
        assert r.qi == tuple(h.generalize(v, lv) for h, v, lv in zip(case.hierarchies, row[0], plan.levels, strict=True))
        by_class[r.qi].append((row, r))
        if row[1] is None:
            assert r.sensitive is None
        else:
            assert r.sensitive is not None
            assert len(r.sensitive) == len(row[1])
            assert all(shown is None or shown == own for shown, own in zip(r.sensitive, row[1], strict=True))
    assert all(len(members) >= case.k for members in by_class.values())
    for members in by_class.values():
        for i in range(len(case.sensitive)):
            carried = [row[1][i] for row, _ in members if row[1] is not None and row[1][i] is not None]
            shown = [r.sensitive[i] for _, r in members if r.sensitive is not None and r.sensitive[i] is not None]
            assert shown in ([], carried)  # withheld for the whole class, or released for every row carrying it
            assert not shown or len(set(shown)) >= case.l
    return out


# -- properties -------------------------------------------------------------------------------


@FAST
@given(cases())
def test_the_plan_is_the_oracles_choice_and_its_release_is_k_anonymous_and_l_diverse(case: Case) -> None:
    expected = oracle(case)
    if expected is None:
        event("refused")
        with pytest.raises(AnonymityRefusedError):
            plan_of(case)
        return
    event(f"height {sum(expected.levels)}, {'some' if expected.suppressed else 'no'} rows suppressed, {'some' if expected.withheld_pairs else 'no'} withheld")
    plan = plan_of(case)
    assert plan.levels == expected.levels
    assert (plan.suppressed, plan.withheld, sum(plan.withheld_by_attribute)) == (expected.suppressed, expected.withheld_classes, expected.withheld_pairs)
    assert (plan.k_achieved, plan.l_achieved) == (expected.k_achieved, expected.l_achieved)
    assert plan.rows == len(case.rows)
    check_released(case, plan)


BIG_ROW = st.tuples(
    st.tuples(st.sampled_from([*map(str, range(18, 80)), None]), st.sampled_from("abcdefgh"), st.sampled_from(["y", "n", None]), st.sampled_from("0123456789")),
    st.tuples(st.sampled_from(["dry", "oily", "mixed", None])),
)


@settings(max_examples=15, deadline=None)
@given(st.lists(BIG_ROW, min_size=150, max_size=500), st.integers(2, 6), st.integers(1, 3), st.integers(0, 4))
def test_a_bigger_lattice_matches_the_oracle(rows: list[Row], k: int, l: int, twentieths: int) -> None:  # noqa: E741
    """Four quasi-identifiers (96 nodes) and hundreds of rows drive the descent, the tagging and the cover trees."""
    case = Case(("age", "letter", "flag", "digit"), ("skin",), tuple(rows), k=k, l=l, cap=Fraction(twentieths, 20))
    expected = oracle(case)
    assert expected is not None  # the top node holds every row
    plan = plan_of(case)
    assert (plan.levels, plan.suppressed, sum(plan.withheld_by_attribute)) == (expected.levels, expected.suppressed, expected.withheld_pairs)
    check_released(case, plan)


@settings(max_examples=40, deadline=None)
@given(cases(), st.data())
def test_the_plan_does_not_depend_on_the_order_of_rows(case: Case, data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(case.rows))
    try:
        first = plan_of(case)
    except AnonymityRefusedError:
        with pytest.raises(AnonymityRefusedError):
            plan_of(case, shuffled)
        return
    second = plan_of(case, shuffled)
    assert second == first
    assert second.to_json() == first.to_json()
    assert [second.release(*row) for row in case.rows] == [first.release(*row) for row in case.rows]


@settings(max_examples=60, deadline=None)
@given(cases(), st.data())
def test_a_fixed_generalization_is_evaluated_alone(case: Case, data: st.DataObject) -> None:
    node = data.draw(st.sampled_from(lattice(case)))
    fixed = {h.attribute: h.levels[level] for h, level in zip(case.hierarchies, node, strict=True)}
    outcome = evaluate(case, node)
    if outcome.suppressed > math.floor(case.cap * len(case.rows)):
        with pytest.raises(AnonymityRefusedError) as refused:
            plan_of(case, fixed=fixed)
        assert refused.value.best_suppressed == outcome.suppressed
        return
    plan = plan_of(case, fixed=fixed)
    assert plan.levels == node
    assert plan.generalization == fixed
    assert (plan.suppressed, plan.k_achieved, plan.l_achieved) == (outcome.suppressed, outcome.k_achieved, outcome.l_achieved)
    check_released(case, plan)


# -- named cases ------------------------------------------------------------------------------


def distinct_rows(n: int) -> tuple[Row, ...]:
    return tuple(((str(20 + i), "abcdefgh"[i % 8]), None) for i in range(n))


def test_a_fixed_generalization_that_misses_the_cap_is_refused_though_another_would_pass() -> None:
    case = Case(("age", "letter"), (), distinct_rows(12), k=3, l=1, cap=Fraction(0))
    assert plan_of(case).suppressed == 0  # a free choice generalizes until every class has 3 rows
    with pytest.raises(AnonymityRefusedError) as refused:
        plan_of(case, fixed={"age": "age", "letter": "letter"})
    assert (refused.value.k, refused.value.rows, refused.value.best_suppressed, refused.value.cap_rows) == (3, 12, 12, 0)


def test_k_above_the_row_count_with_no_suppression_allowed_is_refused_and_names_no_value() -> None:
    rows = tuple(((v, "c"), ("oily",)) for v in ("41", "57", "63"))
    case = Case(("age", "letter"), ("skin",), rows, k=5, l=1, cap=Fraction(0))
    with pytest.raises(AnonymityRefusedError) as refused:
        plan_of(case)
    error = refused.value
    assert (error.k, error.rows, error.best_suppressed, error.cap_rows) == (5, 3, 3, 0)
    assert str(error) == "no generalization meets k within the suppression cap: k=5, rows=3, at best 3 rows suppressed, cap 0 rows"


def test_when_every_row_may_be_suppressed_a_tiny_extract_releases_nothing() -> None:
    case = Case(("age",), (), ((("41",), None), (("57",), None), (("63",), None)), k=5, l=1, cap=Fraction(1))
    plan = plan_of(case)
    assert (plan.levels, plan.suppressed, plan.classes, plan.k_achieved) == ((0,), 3, 0, None)
    assert all(plan.release(*row) is None for row in case.rows)


def test_an_empty_extract_is_a_valid_plan_at_the_bottom_that_achieves_nothing() -> None:
    plan = plan_of(Case(("age", "letter"), ("skin",), (), k=5, l=2, cap=Fraction(0)))
    assert (plan.levels, plan.rows, plan.suppressed, plan.classes, plan.k_achieved, plan.l_achieved) == ((0, 0), 0, 0, 0, None, None)
    assert plan.to_json()["generalization"] == {"age": "age", "letter": "letter"}


def test_a_sensitive_attribute_below_l_is_withheld_for_the_whole_class_and_the_rows_are_kept() -> None:
    rows = (
        *((("30", "a"), ("dry", ("latex",))) for _ in range(3)),
        *((("31", "a"), ("oily", None)) for _ in range(2)),
        *((("50", "e"), (s, None)) for s in ("dry", "oily", "mixed", "normal", "dry")),
    )
    case = Case(("age", "letter"), ("skin", "allergies"), rows, k=5, l=2, cap=Fraction(0))
    plan = plan_of(case)
    assert plan.levels == (1, 0)  # decades: the 30s with a, the 50s with e
    assert (plan.withheld, plan.withheld_by_attribute, plan.l_achieved) == (1, (0, 1), 2)
    released = check_released(case, plan)
    assert released[0] == Released(("30s", "a"), ("dry", None))  # one allergy combination in the class: withheld
    assert released[-1] == Released(("50s", "e"), ("dry", None))  # no allergy at all in the class: nothing to withhold
    assert plan.to_json()["withheld"] == {"skin": 0, "allergies": 1}


def test_the_manifest_view_holds_names_and_counts_only() -> None:
    rows = tuple(((str(20 + i % 4), "b"), ("dry" if i // 4 % 2 else "oily",)) for i in range(20))
    plan = plan_of(Case(("age", "letter"), ("skin",), rows, k=5, l=2, cap=Fraction(1, 20)))

    def leaves(value: object) -> list[object]:
        if isinstance(value, dict):
            assert all(isinstance(key, str) for key in value)
            return [leaf for v in value.values() for leaf in leaves(v)]
        if isinstance(value, list):
            return [leaf for v in value for leaf in leaves(v)]
        return [value]

    assert all(leaf is None or type(leaf) in (int, str) for leaf in leaves(plan.to_json()))
    assert plan.to_json() == {
        "generalization": {"age": "age", "letter": "letter"},
        "levels": [0, 0],
        "k": 5,
        "k_achieved": 5,
        "l": 2,
        "l_achieved": 2,
        "rows": 20,
        "released": 20,
        "suppressed": 0,
        "suppression_cap_rows": 1,
        "classes": 4,
        "withheld_classes": 0,
        "withheld": {"skin": 0},
    }


def test_a_row_the_first_pass_did_not_see_only_joins_an_already_released_class() -> None:
    case = Case(("age", "letter"), (), tuple(((str(a), "a"), None) for a in (30, 31, 32, 33, 34, 50)), k=5, l=1, cap=Fraction(1, 5))
    plan = plan_of(case)
    assert plan.levels == (1, 0)
    assert plan.release(("35", "a")) == Released(("30s", "a"), None)
    assert plan.release(("36", "b")) is None
    assert plan.release(("50", "a")) is None


@pytest.mark.parametrize(
    ("cap", "rows", "limit"),
    [(0.29, 100, 29), (0.05, 1_000_000, 50_000), (0.07, 100, 7), (Fraction(1, 3), 10, 3), (Decimal("0.05"), 99, 4), (0.0, 10, 0), (1.0, 7, 7)],
)
def test_the_suppression_limit_is_the_floor_of_the_cap_times_the_rows_read_as_a_decimal(cap: float | Fraction | Decimal, rows: int, limit: int) -> None:
    assert suppression_limit(cap, rows) == limit


@pytest.mark.parametrize("cap", [-0.01, 1.5, Fraction(11, 10)])
def test_a_cap_outside_zero_to_one_is_refused(cap: float | Fraction) -> None:
    with pytest.raises(ValueError, match="suppression cap"):
        suppression_limit(cap, 10)


def test_a_hierarchy_whose_levels_do_not_nest_is_refused() -> None:
    histogram = Histogram(["tangled"])
    for value in ("x", "y"):
        histogram.add((value,))
    with pytest.raises(ValueError, match="hierarchy tangled: level split is not a coarsening of raw"):
        choose(histogram, [Tangled()], k=2, cap=0.0)


def test_inconsistent_arguments_are_refused() -> None:
    histogram = Histogram(["age", "letter"])
    histogram.add(("30", "a"))
    with pytest.raises(ValueError, match="do not match"):
        choose(histogram, [Letters(), Ages()], k=2, cap=0.0)
    with pytest.raises(ValueError, match="k must be"):
        choose(histogram, [Ages(), Letters()], k=0, cap=0.0)
    with pytest.raises(ValueError, match="l must be"):
        choose(histogram, [Ages(), Letters()], k=2, l=0, cap=0.0)
    with pytest.raises(ValueError, match="other attributes"):
        choose(histogram, [Ages(), Letters()], k=1, cap=0.0, fixed={"age": "decade"})
    with pytest.raises(ValueError, match="letter has no level named decade"):
        choose(histogram, [Ages(), Letters()], k=1, cap=0.0, fixed={"age": "decade", "letter": "decade"})
    with pytest.raises(ValueError, match="2 quasi-identifiers, expected 1"):
        Histogram(["age"]).add(("30", "a"))
    with pytest.raises(ValueError, match="1 sensitive values, expected 2"):
        Histogram(["age"], ["skin", "allergies"]).add(("30",), ("dry",))
    plan = choose(histogram, [Ages(), Letters()], k=1, cap=0.0)
    with pytest.raises(ValueError, match="3 quasi-identifiers, expected 2"):
        plan.release(("30", "a", "x"))


def test_the_projects_hierarchies_fit_the_protocol() -> None:
    from vault.extracts.hierarchies import QUASI_IDENTIFIERS  # noqa: PLC0415 — another module's hierarchies, only for this check

    histogram = Histogram([h.attribute for h in QUASI_IDENTIFIERS])
    row: tuple[str | None, ...] = (None,) * len(QUASI_IDENTIFIERS)
    for _ in range(5):
        histogram.add(row)
    plan = choose(histogram, QUASI_IDENTIFIERS, k=5, cap=0.0)
    assert plan.levels == (0,) * len(QUASI_IDENTIFIERS)
    assert plan.release(row) == Released(tuple(h.generalize(None, 0) for h in QUASI_IDENTIFIERS), None)
    assert plan.generalization == {h.attribute: h.levels[0] for h in QUASI_IDENTIFIERS}
