"""Profile attributes and generalization hierarchies of the extracts.

Oracles are written here from the brief's words, not from the modules: age is
counted by walking birthdays (29 February falls on 1 March in a common year),
bands come from explicit ranges, and the hierarchies' coarsening property is
checked as a functional dependency between consecutive levels over sampled
and exhaustive value domains.
"""

from __future__ import annotations

import calendar
import functools
import io
import multiprocessing
import unicodedata
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from api.runtime import Runtime, open_runtime
from api.settings import Settings
from audit.event import Actor
from keys.signing import SigningPurpose
from vault import data_map as dm
from vault import value_sets as vs
from vault.clients import ROOT_KEY as CLIENT_ROOT
from vault.clients import ClientRegistry
from vault.consent import ConsentChannel, ConsentDecision, ConsentRequest, ConsentService, NoticeBook, Recorder, RecorderRole
from vault.demo import catalog, seed_members
from vault.extracts import hierarchies as hi
from vault.extracts import profile as pr
from vault.extracts._gazetteer import CITY_PROVINCE, PROVINCE_REGION
from vault.extracts.consumers import ConsumerRegistry
from vault.extracts.runner import ExtractAudit, ExtractOutcome, ExtractRequest, ExtractRunner, ExtractSigning, ExtractWorkerError
from vault.extracts.source import ProfileSource
from vault.extracts.writers import ExtractFormat
from vault.ids import new_id
from vault.purposes import Purpose
from vault.storage.engine import write_transaction
from vault.storage.schema import extract_members, extracts, members

FAST = settings(max_examples=150, deadline=None)
AS_OF = date(2026, 3, 1)
ALL = frozenset(a.name for a in pr.ATTRIBUTES)
QI_NAMES = tuple(h.attribute for h in hi.QUASI_IDENTIFIERS)
SENSITIVE_NAMES = tuple(a.name for a in pr.SENSITIVE)


def facts(
    values: dict[str, object] | None = None,
    *,
    spend_12m: int = 0,
    balance: int = 0,
    visits_12m: int = 0,
    last_visit: date | None = None,
    categories_12m: dict[str, int] | None = None,
) -> pr.MemberFacts:
    return pr.MemberFacts(values or {}, spend_12m, balance, visits_12m, last_visit, categories_12m or {})


def qi_of(p: pr.Profile, name: str) -> str | None:
    return p.qi[QI_NAMES.index(name)]


# -- the independent oracles ---------------------------------------------------------


def birthday_in(born: date, year: int) -> date:
    if (born.month, born.day) == (2, 29) and not calendar.isleap(year):
        return date(year, 3, 1)
    return born.replace(year=year)


def age_by_birthdays(born: date, as_of: date) -> int:
    age = 0
    while birthday_in(born, born.year + age + 1) <= as_of:
        age += 1
    return age


AGE_RANGES = [(0, 17, "<18"), (18, 19, "18-19")] + [(lo, lo + 4, f"{lo}-{lo + 4}") for lo in range(20, 80, 5)] + [(80, 10_000, "80+")]


def age_labels(age: int) -> tuple[str, str, str]:
    """The 5-, 10- and 20-year labels of an age, from the ranges in the brief."""
    five = next(label for lo, hi_, label in AGE_RANGES if lo <= age <= hi_)
    if age < 20:
        return five, "<20", "<20"
    if age >= 80:
        return five, "80+", "80+"
    ten, twenty = age - age % 10, age - age % 20
    return five, f"{ten}-{ten + 9}", f"{twenty}-{twenty + 19}"


MONEY_TOPS_YUAN = [(1000, "<1k", "<5k"), (5000, "1k-5k", "<5k"), (20000, "5k-20k", "5k-50k"), (50000, "20k-50k", "5k-50k")]


def money_labels(fen: int) -> tuple[str, str]:
    """The yuan band and wide band of an amount: zero on its own, then half-open ranges."""
    yuan = Fraction(fen, 100)
    if yuan == 0:
        return "0", "0"
    return next(((band, wide) for top, band, wide in MONEY_TOPS_YUAN if yuan < top), ("50k+", "50k+"))


CAPITALS = (
    "北京 天津 上海 重庆 石家庄 太原 呼和浩特 沈阳 长春 哈尔滨 南京 杭州 合肥 福州 南昌 济南 "
    "郑州 武汉 长沙 广州 南宁 海口 成都 贵阳 昆明 拉萨 西安 兰州 西宁 银川 乌鲁木齐"
)

# -- domains of level-0 values --------------------------------------------------------

dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31))
fen = st.integers(min_value=0, max_value=10_000_000_00)
free_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
city_text = st.one_of(st.sampled_from(sorted(CITY_PROVINCE)), free_text, st.none()).map(
    lambda c: c if c is None or not c else c + "市" if len(c) % 2 else f" {c} "
)


def level0_domain(attribute: str) -> st.SearchStrategy[str | None]:
    by_attribute: dict[str, st.SearchStrategy[str | None]] = {
        "gender": st.sampled_from([*vs.Gender, None]),
        "age_band": st.one_of(st.integers(0, 130).map(lambda a: age_labels(a)[0]), st.none()),
        "region": city_text.map(hi.city_label),
        "income_band": st.sampled_from([*vs.IncomeBand, None]),
        "education": st.sampled_from([*vs.Education, None]),
        "member_since": st.one_of(st.integers(1980, 2060).map(str), st.none()),
        "spend_band": fen.map(hi.money_band),
        "balance_band": fen.map(hi.money_band),
    }
    return by_attribute[attribute]


def exhaustive(attribute: str) -> Iterator[str | None]:
    """Every level-0 value of the finite domains (and a wide sample of the open ones)."""
    yield None
    if attribute == "age_band":
        yield from (age_labels(a)[0] for a in range(131))
    elif attribute == "region":
        yield from (*CITY_PROVINCE, hi.OTHER, hi.UNKNOWN)
    elif attribute == "member_since":
        yield from (str(y) for y in range(1950, 2100))
    elif attribute in ("spend_band", "balance_band"):
        yield from (money_labels(f)[0] for f in (0, 1, 99_999, 100_000, 499_999, 500_000, 1_999_999, 2_000_000, 4_999_999, 5_000_000, 10**9))
    else:
        value_set = {"gender": vs.Gender, "income_band": vs.IncomeBand, "education": vs.Education}[attribute]
        yield from (v.value for v in value_set)


# -- hierarchies -----------------------------------------------------------------------


def assert_each_level_coarsens(h: hi.Hierarchy, values: list[str | None]) -> None:
    for level in range(len(h.levels) - 1):
        up: dict[str, str] = {}
        for v in values:
            here, above = h.generalize(v, level), h.generalize(v, level + 1)
            assert up.setdefault(here, above) == above, (h.attribute, level, here)
    assert {h.generalize(v, len(h.levels) - 1) for v in values} == {"*"}


@pytest.mark.parametrize("h", hi.QUASI_IDENTIFIERS, ids=QI_NAMES)
def test_every_level_coarsens_the_one_before_over_the_whole_domain(h: hi.Hierarchy) -> None:
    assert_each_level_coarsens(h, list(exhaustive(h.attribute)))


@pytest.mark.parametrize("h", hi.QUASI_IDENTIFIERS, ids=QI_NAMES)
@FAST
@given(data=st.data())
def test_every_level_coarsens_the_one_before_for_sampled_values(h: hi.Hierarchy, data: st.DataObject) -> None:
    assert_each_level_coarsens(h, data.draw(st.lists(level0_domain(h.attribute), min_size=2, max_size=40)))


@pytest.mark.parametrize("h", hi.QUASI_IDENTIFIERS, ids=QI_NAMES)
def test_levels_end_with_star_and_follow_the_data_map(h: hi.Hierarchy) -> None:
    assert h.levels[-1] == "*"
    assert "*" not in h.levels[:-1]
    assert hi.hierarchy(h.attribute) is h
    [attribute] = [a for a in pr.ATTRIBUTES if a.name == h.attribute]
    for name in attribute.source_fields:
        declared = dm.field(dm.Table.members, name).generalization
        assert h.levels[: len(declared)] == declared


def test_hierarchies_have_the_documented_levels() -> None:
    assert {h.attribute: h.levels for h in hi.QUASI_IDENTIFIERS} == {
        "gender": ("gender", "*"),
        "age_band": ("age_band_5", "age_band_10", "age_band_20", "*"),
        "region": ("city", "province", "region", "*"),
        "income_band": ("income_band", "income_wide", "*"),
        "education": ("education", "degree", "*"),
        "member_since": ("year", "year_5", "*"),
        "spend_band": ("spend_band", "spend_wide", "*"),
        "balance_band": ("balance_band", "balance_wide", "*"),
    }


def test_unknown_hierarchy_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        hi.hierarchy("home_clinic_id")


@pytest.mark.parametrize(
    ("attribute", "value"), [("gender", "robot"), ("age_band", "31-35"), ("education", "bachelors"), ("member_since", "21"), ("spend_band", "1-999")]
)
def test_a_value_outside_the_domain_is_refused_without_quoting_it(attribute: str, value: str) -> None:
    with pytest.raises(ValueError, match=attribute) as caught:
        hi.hierarchy(attribute).generalize(value, 0)
    assert value not in str(caught.value)


@pytest.mark.parametrize("level", [-1, 4, 9])
def test_a_level_outside_the_hierarchy_is_refused(level: int) -> None:
    with pytest.raises(ValueError, match="age_band"):
        hi.hierarchy("age_band").generalize("25-29", level)


def test_absent_values_have_their_own_label_below_star() -> None:
    labels = {h.attribute: [h.generalize(None, i) for i in range(len(h.levels))] for h in hi.QUASI_IDENTIFIERS}
    assert labels == {
        "gender": ["undisclosed", "*"],
        "age_band": ["unknown", "unknown", "unknown", "*"],
        "region": ["unknown", "unknown", "unknown", "*"],
        "income_band": ["undisclosed", "undisclosed", "*"],
        "education": ["undisclosed", "undisclosed", "*"],
        "member_since": ["unknown", "unknown", "*"],
        "spend_band": ["unknown", "unknown", "*"],
        "balance_band": ["unknown", "unknown", "*"],
    }


@pytest.mark.parametrize(
    ("value", "labels"),
    [
        ("primary", ("primary", "no_degree")),
        ("vocational", ("vocational", "no_degree")),
        ("bachelor", ("bachelor", "degree")),
        ("doctorate", ("doctorate", "postgraduate")),
        ("undisclosed", ("undisclosed", "undisclosed")),
    ],
)
def test_education_groups_by_degree(value: str, labels: tuple[str, str]) -> None:
    h = hi.hierarchy("education")
    assert (h.generalize(value, 0), h.generalize(value, 1), h.generalize(value, 2)) == (*labels, "*")


@pytest.mark.parametrize(
    ("value", "wide"), [("below_5k", "below_10k"), ("5k_10k", "below_10k"), ("10k_20k", "10k_50k"), ("20k_50k", "10k_50k"), ("above_50k", "above_50k")]
)
def test_income_groups_into_wide_bands(value: str, wide: str) -> None:
    assert hi.hierarchy("income_band").generalize(value, 1) == wide


@pytest.mark.parametrize(("year", "span"), [("2019", "2015-2019"), ("2020", "2020-2024"), ("2021", "2020-2024"), ("2024", "2020-2024"), ("2025", "2025-2029")])
def test_member_since_groups_years_by_five(year: str, span: str) -> None:
    assert hi.hierarchy("member_since").generalize(year, 1) == span


# -- ages --------------------------------------------------------------------------------


@FAST
@given(born=dates, as_of=dates)
def test_age_band_matches_counting_birthdays(born: date, as_of: date) -> None:
    if as_of < born:
        with pytest.raises(ValueError, match="date_of_birth"):
            hi.age_band(born, as_of)
        return
    labels = age_labels(age_by_birthdays(born, as_of))
    band = hi.age_band(born, as_of)
    h = hi.hierarchy("age_band")
    assert (band, h.generalize(band, 1), h.generalize(band, 2)) == labels


@pytest.mark.parametrize(
    ("born", "as_of", "band"),
    [
        (date(1996, 3, 1), date(2026, 3, 1), "30-34"),  # exactly 30 on the birthday
        (date(1996, 3, 2), date(2026, 3, 1), "25-29"),  # 30 tomorrow
        (date(1996, 2, 29), date(2026, 2, 28), "25-29"),  # leap-day birth, common year: not yet
        (date(1996, 2, 29), date(2026, 3, 1), "30-34"),  # … turns 30 on 1 March
        (date(1996, 2, 29), date(2024, 2, 29), "25-29"),  # 28 on a real 29 February
        (date(1994, 2, 28), date(2024, 2, 29), "30-34"),
        (date(2008, 3, 2), date(2026, 3, 1), "<18"),
        (date(2008, 3, 1), date(2026, 3, 1), "18-19"),
        (date(2006, 3, 1), date(2026, 3, 1), "20-24"),
        (date(1946, 3, 2), date(2026, 3, 1), "75-79"),
        (date(1946, 3, 1), date(2026, 3, 1), "80+"),
        (date(1900, 1, 1), date(2026, 3, 1), "80+"),
        (date(2026, 3, 1), date(2026, 3, 1), "<18"),
    ],
)
def test_age_band_boundaries(born: date, as_of: date, band: str) -> None:
    assert hi.age_band(born, as_of) == band


def test_open_bands_stay_open_at_every_level_below_star() -> None:
    h = hi.hierarchy("age_band")
    assert [h.generalize("80+", i) for i in range(4)] == ["80+", "80+", "80+", "*"]
    assert [h.generalize("<18", i) for i in range(4)] == ["<18", "<20", "<20", "*"]
    assert [h.generalize("25-29", i) for i in range(4)] == ["25-29", "20-29", "20-39", "*"]


# -- money -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "band"),
    [
        (0, "0"),
        (1, "<1k"),
        (99_999, "<1k"),
        (100_000, "1k-5k"),
        (499_999, "1k-5k"),
        (500_000, "5k-20k"),
        (1_999_999, "5k-20k"),
        (2_000_000, "20k-50k"),
        (4_999_999, "20k-50k"),
        (5_000_000, "50k+"),
        (10**11, "50k+"),
    ],
)
def test_money_band_boundaries_in_fen(amount: int, band: str) -> None:
    assert hi.money_band(amount) == band


@FAST
@given(amount=fen)
def test_money_bands_match_the_yuan_ranges(amount: int) -> None:
    band, wide = money_labels(amount)
    assert hi.money_band(amount) == band
    assert hi.hierarchy("spend_band").generalize(band, 1) == wide
    assert hi.hierarchy("balance_band").generalize(band, 1) == wide


def test_a_negative_amount_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        hi.money_band(-1)


# -- cities ------------------------------------------------------------------------------


def test_gazetteer_covers_municipalities_capitals_and_the_demo_cities() -> None:
    demo = {city for city, _ in catalog.CLINICS.values()}
    assert set(CAPITALS.split()) | demo <= set(CITY_PROVINCE)
    assert len(CITY_PROVINCE) >= 80
    assert set(PROVINCE_REGION.values()) == {"华东", "华北", "华南", "华中", "西南", "西北", "东北"}
    assert len([p for p in PROVINCE_REGION if p.endswith("省") or p.endswith("自治区")]) == 27  # 22 provinces (no 台湾省 here) + 5 regions


@pytest.mark.parametrize(
    ("city", "province", "region"),
    [
        ("上海", "上海市", "华东"),
        ("北京", "北京市", "华北"),
        ("深圳", "广东省", "华南"),
        ("杭州", "浙江省", "华东"),
        ("成都", "四川省", "西南"),
        ("武汉", "湖北省", "华中"),
        ("西安", "陕西省", "西北"),
        ("哈尔滨", "黑龙江省", "东北"),
        ("重庆", "重庆市", "西南"),
        ("吉林", "吉林省", "东北"),
    ],
)
def test_city_generalizes_to_province_and_region(city: str, province: str, region: str) -> None:
    h = hi.hierarchy("region")
    assert [h.generalize(city, i) for i in range(4)] == [city, province, region, "*"]


@pytest.mark.parametrize(("raw", "label"), [("上海市", "上海"), (" 深圳 ", "深圳"), ("杭\u3000州市", "杭州"), ("成都\n", "成都"), ("ＸＹ", "other")])
def test_city_label_normalizes_whitespace_and_a_trailing_shi(raw: str, label: str) -> None:
    assert hi.city_label(raw) == label


@pytest.mark.parametrize("raw", [None, "", "  ", "市"])
def test_a_missing_city_is_unknown(raw: str | None) -> None:
    assert hi.city_label(raw) == "unknown"


@pytest.mark.parametrize("raw", ["上海市浦东新区陆家嘴环路1000号", "Shanghai", "义乌", "上海市市", "张伟的家"])
def test_a_city_outside_the_gazetteer_is_other_at_every_level(raw: str) -> None:
    h = hi.hierarchy("region")
    assert hi.city_label(raw) == "other"
    assert [h.generalize(hi.city_label(raw), i) for i in range(4)] == ["other", "other", "other", "*"]


@FAST
@given(raw=free_text)
def test_free_text_is_never_released_as_written(raw: str) -> None:
    name = "".join(unicodedata.normalize("NFKC", raw).split()).removesuffix("市")
    expected = "unknown" if not name else name if name in CITY_PROVINCE else "other"
    assert hi.city_label(raw) == expected
    assert hi.city_label(raw) in {*CITY_PROVINCE, "other", "unknown"}


# -- the attribute catalog ---------------------------------------------------------------


def test_catalog_lists_each_attribute_once_in_its_dimension() -> None:
    names = [a.name for a in pr.ATTRIBUTES]
    assert len(names) == len(set(names))
    by_dimension = {d: {a.name for a in pr.ATTRIBUTES if a.dimension is d} for d in pr.Dimension}
    assert {"gender", "age_band", "region", "income_band", "education", "member_since"} <= by_dimension[pr.Dimension.static]
    assert {"interest_tags", "preferred_channel"} <= by_dimension[pr.Dimension.dynamic]
    assert {"tier", "balance_band", "spend_band", "visit_frequency", "recency", "top_categories", "rfm"} <= by_dimension[pr.Dimension.consumption]
    assert by_dimension[pr.Dimension.stated_preference] == {"preferred_categories"}
    assert not any("clinic" in name for name in names)


def test_quasi_identifiers_are_exactly_the_hierarchies() -> None:
    assert tuple(a.name for a in pr.ATTRIBUTES if a.role is pr.Role.quasi_identifier) == QI_NAMES
    assert set(QI_NAMES) == {"gender", "age_band", "region", "income_band", "education", "member_since", "spend_band", "balance_band"}


def test_health_derived_attributes_are_the_sensitive_ones_and_read_health_fields() -> None:
    health = {a.name for a in pr.ATTRIBUTES if a.health_derived}
    assert health == set(SENSITIVE_NAMES) == {"skin_type", "has_allergies", "has_contraindications"}
    for a in pr.SENSITIVE:
        assert a.role is pr.Role.sensitive
        assert all(dm.field(dm.Table.members, f).category is dm.Category.health for f in a.source_fields)


def test_no_attribute_reads_a_direct_identifier_or_an_unreleased_field() -> None:
    withheld = {f.name for f in dm.fields_of(dm.Table.members) if f.extract in (dm.ExtractRole.direct_identifier, dm.ExtractRole.not_released)}
    assert {"full_name", "phone", "email", "national_id", "card_no", "address", "wechat_id", "medical_history", "occupation"} <= withheld
    for a in pr.ATTRIBUTES:
        assert not set(a.source_fields) & withheld, a.name
        for name in a.source_fields:
            assert dm.field(dm.Table.members, name).extract.value == a.role.value, a.name


def test_released_interest_vocabulary_contains_the_demo_tags() -> None:
    assert set(catalog.INTEREST_TAGS) <= pr.INTEREST_TAGS


# -- building profiles -------------------------------------------------------------------


def demo_values() -> dict[str, object]:
    return {
        "tier": vs.Tier.gold,
        "joined_at": date(2021, 6, 30),
        "date_of_birth": date(1990, 5, 1),
        "gender": vs.Gender.female,
        "preferred_channel": vs.Channel.wechat,
        "city": "深圳市",
        "education": vs.Education.master,
        "income_band": vs.IncomeBand.from_20k_to_50k,
        "allergies": ["青霉素"],
        "contraindications": [],
        "skin_type": vs.SkinType.oily,
        "interest_tags": ["抗衰", " 美白", "我的私人备注", "抗衰"],
        "preferred_categories": ["laser", "injectable"],
    }


def test_a_full_profile_has_every_attribute_at_level_0() -> None:
    f = facts(demo_values(), spend_12m=1_234_500, balance=99_999, visits_12m=4, last_visit=date(2026, 1, 1), categories_12m={"laser": 2, "injectable": 2})
    p = pr.build_profile(f, AS_OF, attributes=ALL, health=True)
    assert p.qi == ("female", "35-39", "深圳", "20k_50k", "master", "2021", "5k-20k", "<1k")
    assert p.sensitive == ("oily", "yes", "no")
    assert p.plain == {
        "interest_tags": ("抗衰", "美白"),
        "preferred_channel": "wechat",
        "tier": "gold",
        "visit_frequency": "3-5",
        "recency": "30-89d",
        "top_categories": ("injectable", "laser"),
        "rfm": "R4F3M3",
        "preferred_categories": ("injectable", "laser"),
    }


@pytest.mark.parametrize("requested", [ALL, frozenset(SENSITIVE_NAMES), frozenset({"skin_type", "gender"})])
def test_health_derived_attributes_are_absent_without_health(requested: frozenset[str]) -> None:
    p = pr.build_profile(facts(demo_values()), AS_OF, attributes=requested, health=False)
    assert p.sensitive == (None,) * len(SENSITIVE_NAMES)
    assert not set(p.plain) & set(SENSITIVE_NAMES)


def test_only_requested_attributes_are_filled() -> None:
    p = pr.build_profile(facts(demo_values()), AS_OF, attributes=["region", "tier", "has_allergies"], health=True)
    assert p.qi == tuple("深圳" if n == "region" else None for n in QI_NAMES)
    assert p.sensitive == tuple("yes" if n == "has_allergies" else None for n in SENSITIVE_NAMES)
    assert p.plain == {"tier": "gold"}


@FAST
@given(
    requested=st.sets(st.sampled_from(sorted(ALL)), min_size=1),
    health=st.booleans(),
    qi_index=st.lists(st.integers(0, len(QI_NAMES) - 1), unique=True).map(sorted),
    sensitive_index=st.lists(st.integers(0, len(SENSITIVE_NAMES) - 1), unique=True).map(sorted),
)
def test_released_is_build_cut_to_the_released_indices(requested: set[str], health: bool, qi_index: list[int], sensitive_index: list[int]) -> None:
    f = facts(demo_values(), spend_12m=1_234_500, balance=99_999, visits_12m=4, last_visit=date(2026, 1, 1), categories_12m={"laser": 2, "injectable": 2})
    builder = pr.ProfileBuilder(requested, health=health)
    p = builder.build(f, AS_OF)

    qi, sensitive, plain = builder.released(qi_index, sensitive_index)(f, AS_OF)

    assert qi == tuple(p.qi[i] for i in qi_index)
    assert sensitive == tuple(p.sensitive[j] for j in sensitive_index)
    assert plain == tuple(p.plain.values())  # in ATTRIBUTES order, the extract's column order


def test_released_raises_what_build_raises_for_an_attribute_it_does_not_release() -> None:
    """Every requested attribute is computed, released or not: a value outside its set fails the member either way."""
    builder = pr.ProfileBuilder(["gender", "region"], health=False)
    bad = facts({"gender": "unknown-gender", "city": "深圳市"})
    released = builder.released([QI_NAMES.index("region")], [])

    with pytest.raises(ValueError, match="gender: a value outside its value set"):
        builder.build(bad, AS_OF)
    with pytest.raises(ValueError, match="gender: a value outside its value set"):
        released(bad, AS_OF)


def test_unknown_attribute_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="home_clinic_id"):
        pr.build_profile(facts(), AS_OF, attributes=["gender", "home_clinic_id"], health=False)
    with pytest.raises(TypeError):
        pr.build_profile(facts(), AS_OF, attributes="gender", health=False)


def test_missing_values_have_their_labels() -> None:
    p = pr.build_profile(facts(), AS_OF, attributes=ALL, health=True)
    assert p.qi == ("undisclosed", "unknown", "unknown", "undisclosed", "undisclosed", "unknown", "0", "0")
    assert p.sensitive == (None, None, None)
    assert p.plain["recency"] == "never"
    assert p.plain["rfm"] == "R1F1M1"
    assert p.plain["interest_tags"] is None
    assert p.plain["top_categories"] == ()


@pytest.mark.parametrize(("field", "value"), [("gender", "robot"), ("tier", "bronze"), ("skin_type", "scaly"), ("preferred_categories", ["laser", "spa"])])
def test_a_value_outside_its_value_set_is_refused_without_quoting_it(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field) as caught:
        pr.build_profile(facts({field: value}), AS_OF, attributes=ALL, health=True)
    assert "robot" not in str(caught.value)
    assert "spa" not in str(caught.value)


@pytest.mark.parametrize(
    ("visits", "band", "f"),
    [(0, "none", 1), (1, "1-2", 2), (2, "1-2", 2), (3, "3-5", 3), (5, "3-5", 3), (6, "6-11", 4), (11, "6-11", 4), (12, "12+", 5), (400, "12+", 5)],
)
def test_visit_frequency_and_rfm_frequency(visits: int, band: str, f: int) -> None:
    p = pr.build_profile(facts(visits_12m=visits), AS_OF, attributes={"visit_frequency", "rfm"}, health=False)
    assert p.plain == {"visit_frequency": band, "rfm": f"R1F{f}M1"}


@pytest.mark.parametrize(
    ("days", "band", "r"),
    [
        (0, "<30d", 5),
        (29, "<30d", 5),
        (30, "30-89d", 4),
        (89, "30-89d", 4),
        (90, "90-179d", 3),
        (179, "90-179d", 3),
        (180, "180-364d", 2),
        (364, "180-364d", 2),
        (365, "365d+", 1),
        (5000, "365d+", 1),
        (None, "never", 1),
    ],
)
def test_recency_and_rfm_recency(days: int | None, band: str, r: int) -> None:
    last = None if days is None else AS_OF - timedelta(days=days)
    p = pr.build_profile(facts(last_visit=last), AS_OF, attributes={"recency", "rfm"}, health=False)
    assert p.plain == {"recency": band, "rfm": f"R{r}F1M1"}


@pytest.mark.parametrize(
    ("spend", "m"), [(0, 1), (99_999, 1), (100_000, 2), (499_999, 2), (500_000, 3), (1_999_999, 3), (2_000_000, 4), (4_999_999, 4), (5_000_000, 5)]
)
def test_rfm_monetary_thresholds(spend: int, m: int) -> None:
    assert pr.build_profile(facts(spend_12m=spend), AS_OF, attributes={"rfm"}, health=False).plain == {"rfm": f"R1F1M{m}"}


def test_a_visit_after_the_extract_date_is_refused() -> None:
    with pytest.raises(ValueError, match="last_visit"):
        pr.build_profile(facts(last_visit=AS_OF + timedelta(days=1)), AS_OF, attributes={"recency"}, health=False)


@FAST
@given(counts=st.dictionaries(st.sampled_from([c.value for c in vs.TreatmentCategory]), st.integers(0, 6)))
def test_top_categories_are_the_three_most_frequent_ties_by_name(counts: dict[str, int]) -> None:
    expected: list[str] = []
    for n in range(max(counts.values(), default=0), 0, -1):
        expected += sorted(c for c, k in counts.items() if k == n)
    p = pr.build_profile(facts(categories_12m=counts), AS_OF, attributes={"top_categories"}, health=False)
    assert p.plain == {"top_categories": tuple(expected[:3])}


def test_demo_interest_tags_are_released_and_free_text_dropped() -> None:
    tags = [*catalog.INTEREST_TAGS, "住在幸福小区3栋", "13800138000"]
    p = pr.build_profile(facts({"interest_tags": tags}), AS_OF, attributes={"interest_tags"}, health=False)
    assert p.plain == {"interest_tags": tuple(sorted(catalog.INTEREST_TAGS))}


def test_builder_and_function_agree() -> None:
    f = facts(demo_values(), spend_12m=7, balance=5_000_000, visits_12m=1, last_visit=AS_OF)
    builder = pr.ProfileBuilder(ALL - {"rfm"}, health=True)
    assert builder.build(f, AS_OF) == pr.build_profile(f, AS_OF, attributes=ALL - {"rfm"}, health=True)


# -- no direct identifier ever leaves ----------------------------------------------------

digits = st.text("0123456789", min_size=8, max_size=8)
identifiers = st.fixed_dictionaries(
    {
        "full_name": st.text("娜婷雪梅兰丽伟强军", min_size=1, max_size=2).map(lambda s: "欧阳" + s),
        "phone": digits.map(lambda d: "+86138" + d),
        "email": st.emails(),
        "national_id": digits.map(lambda d: "31010119" + d + "12"),
        "card_no": digits.map(lambda d: "MV00" + d),
        "address": st.text("路街号栋室幸福小区", min_size=3, max_size=12).map(lambda s: "上海市浦东新区" + s),
        "wechat_id": digits.map(lambda d: "wx_u" + d),
        "occupation": st.sampled_from(["外科医生工作", "律师事务所合伙人"]),
        "medical_history": st.sampled_from(catalog.HISTORY),
        "home_clinic_id": st.sampled_from(sorted(catalog.CLINICS)),
        "preferred_clinic_id": st.sampled_from(sorted(catalog.CLINICS)),
    }
)


def strings_in(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings_in(k)
            yield from strings_in(v)
    elif isinstance(value, tuple | list):
        for v in value:
            yield from strings_in(v)


@settings(max_examples=120, deadline=None)
@given(
    secret=identifiers,
    hostile=st.booleans(),
    requested=st.sets(st.sampled_from(sorted(ALL))),
    health=st.booleans(),
    born=st.dates(min_value=date(1930, 1, 1), max_value=AS_OF),
)
def test_no_direct_identifier_value_appears_in_a_profile(secret: dict[str, str], hostile: bool, requested: set[str], health: bool, born: date) -> None:
    values: dict[str, object] = {**demo_values(), **secret, "date_of_birth": born}
    if hostile:  # identifiers typed into the free-text fields
        values["city"] = secret["full_name"]
        values["interest_tags"] = [secret["phone"], secret["email"], "美白", secret["full_name"]]
        values["allergies"] = [secret["national_id"]]
    p = pr.build_profile(facts(values, spend_12m=1, balance=2, visits_12m=3), AS_OF, attributes=requested, health=health)
    released = list(strings_in([p.qi, p.sensitive, p.plain]))
    for v in secret.values():
        assert not any(v in s for s in released)
    for i, h in enumerate(hi.QUASI_IDENTIFIERS):
        for level in range(len(h.levels)):
            h.generalize(p.qi[i], level)  # every released label lies in its hierarchy's domain


# -- the first pass in worker processes ----------------------------------------------------------

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
RUN_AS = Actor("staff:dpo-1", ("dpo",), None, None)


def _extract_vault(runtime: Runtime, members: int) -> tuple[ConsentService, ConsumerRegistry]:
    """Seeded members, most with loyalty consent and about half with health consent, and a consumer of every attribute kind."""
    consent = ConsentService(runtime.members, NoticeBook())
    registry = ConsumerRegistry()
    ids = seed_members(runtime.data_engine, runtime.keys, runtime.members, count=members, seed=3, now=NOW - timedelta(days=30)).member_ids
    with write_transaction(runtime.data_engine) as conn:
        for i, member_id in enumerate(ids):
            for purpose, wanted in ((Purpose.loyalty_profiling, i % 4 != 0), (Purpose.health_data, i % 2 == 0)):
                if wanted:
                    request = ConsentRequest(purpose, ConsentDecision.granted, ConsentChannel.app, notice_version=1)
                    consent.record(
                        conn, member_id, request, Recorder("app", RecorderRole.member), consent_id=new_id(), request_id="t", now=NOW - timedelta(days=1)
                    )
        ClientRegistry(runtime.keys.root_key(CLIENT_ROOT)).add(conn, "panel", ["loyalty_service"], [], NOW)
        attributes = ["gender", "age_band", "region", "spend_band", "tier", "rfm", "interest_tags", "skin_type", "has_allergies"]
        registry.register(conn, "panel", purpose="loyalty_profiling", attributes=attributes, health=True, k=2, suppression_cap_permille=500, now=NOW)
    return consent, registry


def _run(
    runner: ExtractRunner,
    runtime: Runtime,
    registry: ConsumerRegistry,
    progress: Callable[[int], None] | None = None,
    *,
    fmt: ExtractFormat = ExtractFormat.ndjson,
    since: str | None = None,
    now: datetime = NOW,
    consumer_id: str = "panel",
) -> tuple[ExtractOutcome, bytes]:
    with runtime.data_engine.connect() as conn:
        consumer = registry.get(conn, consumer_id)
    out = io.BytesIO()
    signing = ExtractSigning(runtime.signing.current(SigningPurpose.certificates), "member-vault")
    outcome = runner.run(
        ExtractRequest(new_id(), consumer, fmt, since=since),
        out,
        audit=ExtractAudit(RUN_AS, "req-t", "policy-t"),
        signing=signing,
        now=now,
        progress=progress,
    )
    return outcome, out.getvalue()


def _runners(runtime: Runtime, consent: ConsentService, registry: ConsumerRegistry, settings: Settings, spool: Path) -> tuple[ExtractRunner, ExtractRunner]:
    """One runner in this process, one spread over this process and two workers (seven members a task)."""
    here = ExtractRunner(runtime.data_engine, runtime.keys, ProfileSource(runtime.keys, consent, batch=5), registry, spool_dir=spool)
    spread = ExtractRunner(
        runtime.data_engine,
        runtime.keys,
        ProfileSource(runtime.keys, consent, batch=5),
        registry,
        spool_dir=spool,
        opener=functools.partial(open_runtime, settings),
        workers=3,
        worker_range=7,
    )
    return here, spread


def test_an_extract_profiled_in_worker_processes_is_the_one_profiled_in_this_process(
    runtime: Runtime, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """This process and two workers, seven members a task: the same rows in the same order, so the same bytes, plan and counts."""
    consent, registry = _extract_vault(runtime, 40)
    here, spread = _runners(runtime, consent, registry, make_settings(), tmp_path)
    seen: list[str] = []
    alone, alone_bytes = _run(here, runtime, registry)
    together, together_bytes = _run(spread, runtime, registry, lambda _: seen.extend(p.name for p in multiprocessing.active_children()))
    assert alone.status == together.status == "done"
    assert alone.rows == together.rows > 0
    assert together_bytes == alone_bytes
    assert alone.claims is not None
    assert together.claims is not None
    assert together.claims["anonymity"] == alone.claims["anonymity"]
    assert together.members_sha256 == alone.members_sha256
    assert {"extract-worker-0", "extract-worker-1"} <= set(seen)


@pytest.mark.parametrize("fmt", [ExtractFormat.parquet, ExtractFormat.csv])
def test_an_extract_released_in_worker_processes_is_byte_for_byte_the_one_of_this_process(
    runtime: Runtime, make_settings: Callable[..., Settings], tmp_path: Path, fmt: ExtractFormat
) -> None:
    """Both passes spread over three processes: the chunks' rows are appended in spool order, so the file is the same."""
    consent, registry = _extract_vault(runtime, 40)
    here, spread = _runners(runtime, consent, registry, make_settings(), tmp_path)
    alone, alone_bytes = _run(here, runtime, registry, fmt=fmt)
    together, together_bytes = _run(spread, runtime, registry, fmt=fmt, now=NOW + timedelta(minutes=1))
    assert alone.status == together.status == "done"
    assert alone.rows == together.rows > 0
    assert together_bytes == alone_bytes
    assert together.members_sha256 == alone.members_sha256


def test_an_incremental_extract_in_worker_processes_releases_what_one_process_releases(
    runtime: Runtime, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Only rows the consumer does not hold as they are (new members, classes changed by them) are released, the same in both."""
    consent, registry = _extract_vault(runtime, 40)
    with write_transaction(runtime.data_engine) as conn:  # few quasi-identifiers: new members join classes rather than push suppression past the cap
        ClientRegistry(runtime.keys.root_key(CLIENT_ROOT)).add(conn, "coarse", ["loyalty_service"], [], NOW)
        attributes = ["gender", "spend_band", "tier", "rfm", "interest_tags"]
        registry.register(conn, "coarse", purpose="loyalty_profiling", attributes=attributes, health=False, k=2, suppression_cap_permille=500, now=NOW)
    here, spread = _runners(runtime, consent, registry, make_settings(), tmp_path)
    run = functools.partial(_run, runtime=runtime, registry=registry, consumer_id="coarse")
    base, _ = run(here)
    with runtime.data_engine.connect() as conn:
        held = set(conn.scalars(select(extract_members.c.member_id).where(extract_members.c.extract_id == base.extract_id)))
        newcomers = sorted(set(conn.scalars(select(members.c.member_id))) - held)[:6]
    with write_transaction(runtime.data_engine) as conn:
        for member_id in newcomers:
            request = ConsentRequest(Purpose.loyalty_profiling, ConsentDecision.granted, ConsentChannel.app, notice_version=1)
            consent.record(conn, member_id, request, Recorder("app", RecorderRole.member), consent_id=new_id(), request_id="t", now=NOW + timedelta(minutes=1))
    alone, alone_bytes = run(here, since=base.extract_id, now=NOW + timedelta(minutes=2))
    together, together_bytes = run(spread, since=base.extract_id, now=NOW + timedelta(minutes=3))
    assert alone.status == together.status == "done"
    assert together_bytes == alone_bytes
    assert together.members_sha256 == alone.members_sha256
    with runtime.data_engine.connect() as conn:
        released = [
            set(conn.scalars(select(extract_members.c.member_id).where(extract_members.c.extract_id == outcome.extract_id))) for outcome in (alone, together)
        ]
    assert released[0] == released[1]
    assert len(released[0]) == alone.rows == together.rows
    assert released[0] & set(newcomers)  # new members are released
    assert held - released[0]  # and rows the consumer holds unchanged are not


def test_a_worker_that_cannot_open_the_vault_stops_the_extract_which_is_marked_failed(
    runtime: Runtime, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    consent, registry = _extract_vault(runtime, 20)
    broken = make_settings().model_copy(update={"data_dir": tmp_path / "nowhere"})  # no keyring there: opening the vault fails in the worker
    runner = ExtractRunner(
        runtime.data_engine,
        runtime.keys,
        ProfileSource(runtime.keys, consent),
        registry,
        spool_dir=tmp_path,
        opener=functools.partial(open_runtime, broken),
        workers=2,
        worker_range=5,
    )
    with pytest.raises(ExtractWorkerError, match=r"^an extract worker failed: \w+$"):
        _run(runner, runtime, registry)
    with runtime.data_engine.connect() as conn:
        assert conn.execute(select(extracts.c.status, extracts.c.reason)).one() == ("failed", "extractworkererror")
