"""The default policy (policies/default.csv) decides as DESIGN.md's access-control table says.

The expected grants below are written from the design, not read from the CSV,
and compared with every single-role request over the full vocabulary. A
hypothesis property checks the casbin model against a small reference
evaluator of the documented semantics, over the CSV's own lines.
"""

from __future__ import annotations

import itertools
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import DEFAULT_DIRECTORY, Explanation, PolicySet, Reason, Verdict, Vocabulary

ROLES = ("member", "front_desk", "practitioner", "clinic_manager", "loyalty_service", "marketing_service", "compliance_officer", "dpo", "vault_admin")
DOMAINS = ("self", "clinic", "break_glass", "none")
CATEGORIES = ("membership", "identity", "contact", "demographic", "preference", "health", "treatment", "financial")
OTHER_OBJECTS = (
    "member:lookup",
    "member:clinics",
    "audit:events",
    "audit:scope",
    "audit:export",
    "audit:checkpoints",
    "audit:proofs",
    "audit:access_log",
    "break_glass:queue",
    "keys:metadata",
    "keys:rotate",
    "policies:reload",
    "consent:records",
    "purposes:notices",
    "requests:records",
    "requests:queue",
    "requests:transitions",
    "extracts:profiles",
)
OBJECTS = tuple(f"member:{category}" for category in CATEGORIES) + OTHER_OBJECTS
ACTIONS = ("read", "write")
PURPOSES = ("care", "marketing_contact", "loyalty_profiling", "third_party_sharing", "photo_use", "cross_border_transfer", "self_service", "legal_claims", "-")
VOCABULARY = Vocabulary(
    roles=frozenset(ROLES), domains=frozenset(DOMAINS), objects=frozenset(OBJECTS), actions=frozenset(ACTIONS), purposes=frozenset(PURPOSES)
)

Request = tuple[str, str, str, str, str]
Target = tuple[str, str, str, str]


def grant(role: str, domains: tuple[str, ...], categories: str, actions: str, purposes: tuple[str, ...]) -> set[Request]:
    """Every request one line of the design table allows; ``categories`` and ``actions`` are space-separated."""
    objects = [name if ":" in name else f"member:{name}" for name in categories.split()]
    return set(itertools.product([role], domains, objects, actions.split(), purposes))


EIGHT = " ".join(CATEGORIES)
EXPECTED: set[Request] = set().union(
    grant("member", ("self",), EIGHT + " lookup", "read", ("self_service",)),
    grant("member", ("self",), "contact demographic preference", "write", ("self_service",)),
    grant("member", ("self",), "audit:access_log", "read", PURPOSES),
    grant("front_desk", ("clinic",), "membership identity contact demographic financial", "read write", ("care",)),
    grant("front_desk", ("clinic",), "preference", "read", ("care",)),
    grant("front_desk", DOMAINS, "lookup", "read", ("care",)),
    grant("front_desk", DOMAINS, "clinics", "write", ("care",)),
    grant("practitioner", ("clinic",), "membership identity contact demographic preference health treatment", "read", ("care",)),
    grant("practitioner", ("clinic",), "health treatment", "write", ("care",)),
    grant("practitioner", ("break_glass",), "membership identity health treatment", "read", ("care",)),
    grant("practitioner", DOMAINS, "lookup", "read", ("care",)),
    grant("clinic_manager", ("clinic",), "membership", "read write", ("care",)),
    grant("clinic_manager", ("clinic",), "identity contact demographic preference health treatment financial", "read", ("care",)),
    grant("clinic_manager", DOMAINS, "lookup", "read", ("care",)),
    grant("dpo", DOMAINS, EIGHT + " lookup", "read", ("self_service", "legal_claims")),
    grant("dpo", DOMAINS, "audit:events audit:scope audit:export audit:access_log break_glass:queue", "read", PURPOSES),
    grant("dpo", DOMAINS, "break_glass:queue", "write", PURPOSES),
    grant("compliance_officer", DOMAINS, "audit:events audit:scope audit:export break_glass:queue", "read", PURPOSES),
    grant("compliance_officer", DOMAINS, "break_glass:queue", "write", PURPOSES),
    grant("member", ("self",), "consent:records", "read write", ("self_service",)),
    grant("front_desk", ("clinic",), "consent:records", "read write", ("care",)),
    grant("practitioner", ("clinic",), "consent:records", "read", ("care",)),
    grant("clinic_manager", ("clinic",), "consent:records", "read", ("care",)),
    grant("dpo", DOMAINS, "consent:records", "read", ("self_service", "legal_claims")),
    grant("dpo", DOMAINS, "purposes:notices", "write", PURPOSES),
    grant("member", ("self",), "requests:records", "read write", ("self_service",)),
    grant("front_desk", ("clinic",), "requests:records", "write", ("care",)),
    grant("dpo", DOMAINS, "requests:records", "read", ("self_service",)),
    grant("dpo", DOMAINS, "requests:queue", "read", PURPOSES),
    grant("compliance_officer", DOMAINS, "requests:queue", "read", PURPOSES),
    grant("dpo", DOMAINS, "requests:transitions", "write", ("self_service",)),
    grant("loyalty_service", DOMAINS, "extracts:profiles", "read write", ("loyalty_profiling",)),
    grant("vault_admin", DOMAINS, "keys:metadata", "read", PURPOSES),
    grant("vault_admin", DOMAINS, "keys:rotate policies:reload", "write", PURPOSES),
    *(grant(role, DOMAINS, "audit:checkpoints audit:proofs", "read", PURPOSES) for role in ROLES),
)


@pytest.fixture(scope="module")
def policy() -> PolicySet:
    return PolicySet.from_directory(DEFAULT_DIRECTORY, VOCABULARY)


def test_default_policy_hash_is_stable_and_well_formed() -> None:
    first = PolicySet.from_directory(DEFAULT_DIRECTORY, VOCABULARY)
    second = PolicySet.from_directory(DEFAULT_DIRECTORY, VOCABULARY)
    assert first.hash == second.hash
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", first.hash)
    assert first.model_text == (DEFAULT_DIRECTORY / "model.conf").read_bytes().decode("utf-8")
    assert first.policy_text == (DEFAULT_DIRECTORY / "default.csv").read_bytes().decode("utf-8")


@pytest.mark.parametrize("role", ROLES)
def test_each_role_is_allowed_exactly_what_the_design_table_grants(policy: PolicySet, role: str) -> None:
    requests = itertools.product([role], DOMAINS, OBJECTS, ACTIONS, PURPOSES)
    allowed = {request for request in requests if policy.decide({request[0]}, *request[1:]).allowed}
    assert allowed == {request for request in EXPECTED if request[0] == role}


ALLOWED = Verdict(allowed=True, reason=Reason.ALLOWED)
NO_RULE = Verdict(allowed=False, reason=Reason.NO_MATCHING_RULE)
DENIED = Verdict(allowed=False, reason=Reason.DENIED_BY_RULE)


@pytest.mark.parametrize(
    ("roles", "target", "expected"),
    [
        pytest.param({"nurse"}, ("clinic", "member:health", "read", "care"), NO_RULE, id="unknown-role"),
        pytest.param({"practitioner"}, ("clinic", "member:dna", "read", "care"), NO_RULE, id="unknown-object"),
        pytest.param({"practitioner"}, ("clinic", "member:health", "read", "marketing_contact"), NO_RULE, id="wrong-purpose"),
        pytest.param({"practitioner"}, ("clinic", "member:health", "write", "health_data"), NO_RULE, id="consent-is-not-a-purpose"),
        pytest.param({"front_desk"}, ("none", "member:membership", "read", "care"), NO_RULE, id="front-desk-outside-its-clinics"),
        pytest.param({"front_desk"}, ("break_glass", "member:membership", "read", "care"), NO_RULE, id="front-desk-cannot-break-glass"),
        pytest.param({"practitioner"}, ("break_glass", "member:health", "write", "care"), NO_RULE, id="break-glass-never-writes"),
        pytest.param({"practitioner"}, ("break_glass", "member:contact", "read", "care"), NO_RULE, id="break-glass-reads-no-contact"),
        pytest.param({"practitioner"}, ("break_glass", "member:health", "read", "care"), ALLOWED, id="break-glass-reads-health"),
        pytest.param({"member"}, ("clinic", "member:health", "read", "self_service"), NO_RULE, id="member-only-in-self"),
        pytest.param({"dpo", "vault_admin"}, ("none", "member:identity", "read", "legal_claims"), DENIED, id="admin-deny-overrides-dpo-allow"),
        pytest.param({"dpo", "compliance_officer"}, ("none", "member:identity", "read", "legal_claims"), DENIED, id="compliance-deny-overrides-dpo-allow"),
        pytest.param({"vault_admin"}, ("clinic", "member:health", "write", "care"), DENIED, id="admin-denied-by-rule"),
        pytest.param({"front_desk", "practitioner"}, ("clinic", "member:health", "read", "care"), ALLOWED, id="union-health-from-practitioner"),
        pytest.param({"front_desk", "practitioner"}, ("clinic", "member:financial", "write", "care"), ALLOWED, id="union-financial-from-front-desk"),
        pytest.param({"nurse", "practitioner"}, ("clinic", "member:health", "read", "care"), ALLOWED, id="unknown-role-ignored-beside-known"),
        pytest.param({"nurse"}, ("none", "audit:checkpoints", "read", "-"), NO_RULE, id="any-role-line-needs-a-known-role"),
        pytest.param(set(), ("none", "audit:checkpoints", "read", "-"), NO_RULE, id="no-roles"),
        pytest.param({"loyalty_service"}, ("none", "audit:checkpoints", "read", "-"), ALLOWED, id="any-role-reads-checkpoints"),
        pytest.param({"front_desk practitioner"}, ("clinic", "member:health", "read", "care"), NO_RULE, id="role-with-space-is-not-split"),
        pytest.param({"*"}, ("none", "audit:checkpoints", "read", "-"), NO_RULE, id="wildcard-role-in-request-is-unknown"),
        pytest.param({"dpo"}, ("none", "member:*", "read", "legal_claims"), NO_RULE, id="wildcard-object-in-request-matches-nothing"),
        pytest.param({"practitioner"}, ("*", "member:health", "read", "care"), NO_RULE, id="wildcard-domain-in-request-matches-nothing"),
        pytest.param({"practitioner"}, ("clinic", "member:health", "read", "*"), NO_RULE, id="wildcard-purpose-in-request-matches-nothing"),
    ],
)
def test_named_decisions(policy: PolicySet, roles: set[str], target: Target, expected: Verdict) -> None:
    """Each target is (domain, object, action, purpose)."""
    assert policy.decide(roles, *target) == expected


def test_roles_as_one_string_are_refused(policy: PolicySet) -> None:
    with pytest.raises(TypeError, match=r"^roles must be a collection of role names, not one str$"):
        policy.decide("dpo", "none", "member:identity", "read", "legal_claims")


def test_explain_names_the_allow_line(policy: PolicySet) -> None:
    assert policy.explain(["practitioner"], "clinic", "member:health", "write", "care") == Explanation(
        allowed=True, reason=Reason.ALLOWED, lines=("p, practitioner, clinic, member:health, write, care, allow",)
    )


def test_explain_names_allow_and_deny_lines_in_file_order(policy: PolicySet) -> None:
    assert policy.explain({"dpo", "compliance_officer"}, "none", "member:identity", "read", "legal_claims") == Explanation(
        allowed=False,
        reason=Reason.DENIED_BY_RULE,
        lines=("p, dpo, *, member:identity, read, legal_claims, allow", "p, compliance_officer, *, member:*, *, *, deny"),
    )


def test_explain_names_no_line_when_nothing_matched(policy: PolicySet) -> None:
    assert policy.explain({"front_desk"}, "clinic", "member:health", "read", "care") == Explanation(allowed=False, reason=Reason.NO_MATCHING_RULE, lines=())


def test_decide_answers_a_repeated_request_from_the_cache(policy: PolicySet) -> None:
    """The cache keys on the role set, so the order and container of the roles do not matter."""
    first = policy.decide(["practitioner", "front_desk"], "clinic", "member:treatment", "write", "care")
    second = policy.decide(("front_desk", "practitioner"), "clinic", "member:treatment", "write", "care")
    assert first == ALLOWED
    assert second == first
    assert second is first


def test_concurrent_decisions_and_explanations_agree_with_serial_ones(policy: PolicySet) -> None:
    requests = sorted(EXPECTED)[::29]
    fresh = PolicySet.from_directory(DEFAULT_DIRECTORY, VOCABULARY)
    with ThreadPoolExecutor(max_workers=8) as pool:
        verdicts = list(pool.map(lambda request: fresh.decide({request[0]}, *request[1:]), requests))
        explanations = list(pool.map(lambda request: fresh.explain({request[0]}, *request[1:]), requests))
    assert verdicts == [policy.decide({role}, *target) for role, *target in requests]
    assert explanations == [policy.explain({role}, *target) for role, *target in requests]
    assert all(verdict == ALLOWED for verdict in verdicts)


def _matches(line: list[str], roles: frozenset[str], target: Target) -> bool:
    """The documented matcher, by hand: ``*`` matches anything, ``prefix:*`` any object starting with ``prefix:``."""
    _, role, line_domain, line_object, line_action, line_purpose, _ = line
    domain, obj, action, purpose = target
    role_ok = role in roles or (role == "*" and len(roles) > 0)
    object_ok = obj.startswith(line_object[:-1]) if line_object.endswith("*") else obj == line_object
    return role_ok and object_ok and line_domain in ("*", domain) and line_action in ("*", action) and line_purpose in ("*", purpose)


@settings(max_examples=300, deadline=None)
@given(
    roles=st.frozensets(st.sampled_from((*ROLES, "nurse")), max_size=4),
    target=st.tuples(
        st.sampled_from((*DOMAINS, "elsewhere")),
        st.sampled_from((*OBJECTS, "member:dna")),
        st.sampled_from((*ACTIONS, "delete")),
        st.sampled_from((*PURPOSES, "health_data")),
    ),
)
def test_decisions_follow_the_documented_semantics(policy: PolicySet, roles: frozenset[str], target: Target) -> None:
    """Allowed exactly when an allow line of a known role matches and no deny line does; explain lists the matching lines."""
    lines = [line for line in policy.policy_text.split("\n") if line and not line.startswith("#")]
    known = roles & VOCABULARY.roles
    matching = [line for line in lines if _matches(line.split(", "), known, target)]
    denied = any(line.endswith(", deny") for line in matching)
    allowed = any(line.endswith(", allow") for line in matching) and not denied
    reason = Reason.ALLOWED if allowed else Reason.DENIED_BY_RULE if denied else Reason.NO_MATCHING_RULE
    assert policy.decide(roles, *target) == Verdict(allowed=allowed, reason=reason)
    assert policy.explain(roles, *target) == Explanation(allowed=allowed, reason=reason, lines=tuple(matching))
