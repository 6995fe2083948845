"""Loading a policy set: what the loader refuses, how it reads files, and the hash it computes.

Uses a small vocabulary of its own and the default model file, so each refused
policy text differs from an accepted one by a single line.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from policies import DEFAULT_DIRECTORY, MODEL_FILENAME, POLICY_FILENAME, PolicyError, PolicySet, PolicyValidationError, Reason, Verdict, Vocabulary

VOCABULARY = Vocabulary(
    roles=frozenset({"member", "practitioner"}),
    domains=frozenset({"self", "clinic"}),
    objects=frozenset({"member:health", "member:contact", "audit:events"}),
    actions=frozenset({"read", "write"}),
    purposes=frozenset({"care", "self_service", "-"}),
)
MODEL = (DEFAULT_DIRECTORY / MODEL_FILENAME).read_bytes().decode("utf-8")
GOOD_LINE = "p, practitioner, clinic, member:health, read, care, allow"
POLICY = f"# practitioners read health data for care\n{GOOD_LINE}\n"


def policy_with(line: str) -> str:
    """The accepted policy with one more line, which is line 3."""
    return f"{POLICY}{line}\n"


def test_a_small_policy_loads_and_decides() -> None:
    policy = PolicySet.parse(MODEL, policy_with("p, *, *, member:*, *, *, deny"), VOCABULARY)
    assert policy.decide({"practitioner"}, "clinic", "member:health", "read", "care") == Verdict(allowed=False, reason=Reason.DENIED_BY_RULE)
    assert policy.decide({"member"}, "self", "audit:events", "read", "-") == Verdict(allowed=False, reason=Reason.NO_MATCHING_RULE)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("p, *, *, *, *, *, allow", id="wildcard-everywhere"),
        pytest.param("p, member, self, member:*, write, self_service, deny", id="resource-wildcard"),
        pytest.param("p, member, self, audit:*, read, -, allow", id="other-resource-wildcard"),
    ],
)
def test_wildcards_are_accepted(line: str) -> None:
    assert PolicySet.parse(MODEL, policy_with(line), VOCABULARY).policy_text == policy_with(line)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param("p, nurse, clinic, member:health, read, care, allow", "line 3, role: unknown value 'nurse'", id="unknown-role"),
        pytest.param("p, practitioner, break_glass, member:health, read, care, allow", "line 3, domain: unknown value 'break_glass'", id="unknown-domain"),
        pytest.param("p, practitioner, clinic, member:dna, read, care, allow", "line 3, object: unknown value 'member:dna'", id="unknown-object"),
        pytest.param("p, practitioner, clinic, keys:*, read, care, allow", "line 3, object: unknown value 'keys:*'", id="wildcard-of-unknown-resource"),
        pytest.param("p, practitioner, clinic, member:he*, read, care, allow", "line 3, object: unknown value 'member:he*'", id="partial-wildcard"),
        pytest.param("p, practitioner, clinic, member:health, delete, care, allow", "line 3, action: unknown value 'delete'", id="unknown-action"),
        pytest.param(
            "p, practitioner, clinic, member:health, write, health_data, allow", "line 3, purpose: unknown value 'health_data'", id="consent-not-purpose"
        ),
        pytest.param("p, practitioner, clinic, member:health, read, care, permit", "line 3, effect: 'permit' is neither 'allow' nor 'deny'", id="bad-effect"),
        pytest.param("p, practitioner, clinic, member:health, read, care", "line 3: expected 7 fields separated by ', ', found 6", id="six-fields"),
        pytest.param("p, practitioner, clinic, member:health, read, care, allow, x", "line 3: expected 7 fields separated by ', ', found 8", id="eight-fields"),
        pytest.param("p,practitioner,clinic,member:health,read,care,allow", "line 3: expected 7 fields separated by ', ', found 1", id="no-spaces"),
        pytest.param("g, practitioner, clinic, member:health, read, care, allow", "line 3, type: expected 'p', found 'g'", id="not-a-p-line"),
        pytest.param('p, "practitioner", clinic, member:health, read, care, allow', "line 3, role: '\"practitioner\"' is not a plain token", id="quoted-field"),
        pytest.param(
            'p, practitioner, clinic, "member:health, member:contact", read, care, allow',
            "line 3: expected 7 fields separated by ', ', found 8",
            id="quoted-comma",
        ),
        pytest.param("p, practitioner,  clinic, member:health, read, care, allow", "line 3, domain: ' clinic' is not a plain token", id="double-space"),
        pytest.param("p, practitioner, clinic, member:health, read, care, allow\r", "line 3, effect: 'allow\\r' is not a plain token", id="carriage-return"),
        pytest.param(
            "p, practitioner, clinic, member:health, read, care, allow # why", "line 3, effect: 'allow # why' is not a plain token", id="trailing-comment"
        ),
        pytest.param("  # an indented comment", "line 3: expected 7 fields separated by ', ', found 1", id="indented-comment"),
        pytest.param(GOOD_LINE, "line 3: repeats line 2", id="repeated-line"),
    ],
)
def test_bad_policy_lines_are_refused_naming_line_field_and_token(line: str, message: str) -> None:
    with pytest.raises(PolicyValidationError) as refused:
        PolicySet.parse(MODEL, policy_with(line), VOCABULARY)
    assert str(refused.value) == message


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n\n# and another\n"])
def test_a_policy_without_rules_is_refused(text: str) -> None:
    with pytest.raises(PolicyValidationError, match=r"^policy: no rules$"):
        PolicySet.parse(MODEL, text, VOCABULARY)


REQUEST = "r = roles, dom, obj, act, purpose"
POLICY_DEFINITION = "p = role, dom, obj, act, purpose, eft"
EFFECT = "e = some(where (p.eft == allow)) && !some(where (p.eft == deny))"
MATCHER_ROLE = "hasRole(r.roles, p.role)"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        pytest.param(
            REQUEST,
            "r = sub, dom, obj, act, purpose",
            "model: request_definition must be 'r = roles, dom, obj, act, purpose', found 'r = sub, dom, obj, act, purpose'",
            id="other-request",
        ),
        pytest.param(
            POLICY_DEFINITION,
            "p = role, dom, obj, act, purpose",
            "model: policy_definition must be 'p = role, dom, obj, act, purpose, eft', found 'p = role, dom, obj, act, purpose'",
            id="policy-without-effect",
        ),
        pytest.param(REQUEST, "", "model: request_definition must be 'r = roles, dom, obj, act, purpose', found nothing", id="no-request"),
        pytest.param(
            EFFECT,
            "e = some(where (p.eft == allow))",
            "model: policy_effect must be 'e = some(where (p.eft == allow)) && !some(where (p.eft == deny))'",
            id="allow-override-effect",
        ),
        pytest.param("m = ", "x = ", "model: matchers 'm = ...' are missing", id="no-matcher"),
        pytest.param(
            "[matchers]",
            "[role_definition]\ng = _, _\n\n[matchers]",
            "model: role_definition is not part of this model (roles come in the request)",
            id="role-definition",
        ),
        pytest.param("[request_definition]", "[request_definition]\ngarbage", "model: casbin cannot parse it (RuntimeError)", id="unparseable"),
        pytest.param(MATCHER_ROLE, "nosuch(r.roles)", "model: the matcher cannot be evaluated (FunctionNotDefined)", id="unknown-function"),
        pytest.param(MATCHER_ROLE, "hasRole(r.subject, p.role)", "model: the matcher cannot be evaluated (NameNotDefined)", id="unknown-name"),
    ],
)
def test_bad_models_are_refused(old: str, new: str, message: str) -> None:
    assert old in MODEL
    with pytest.raises(PolicyValidationError) as refused:
        PolicySet.parse(MODEL.replace(old, new), POLICY, VOCABULARY)
    assert str(refused.value) == message


def test_a_matcher_failing_at_decision_time_raises_instead_of_deciding() -> None:
    """A matcher that loads but fails on some request fails closed: an error, never a verdict."""
    model = MODEL.replace('(p.dom == "*" || r.dom == p.dom)', '(r.dom == "clinic" || nosuch())')
    policy = PolicySet.parse(model, POLICY, VOCABULARY)
    assert policy.decide({"practitioner"}, "clinic", "member:health", "read", "care") == Verdict(allowed=True, reason=Reason.ALLOWED)
    with pytest.raises(PolicyError, match=r"^model: the matcher cannot be evaluated \(FunctionNotDefined\)$"):
        policy.decide({"practitioner"}, "self", "member:health", "read", "care")


@pytest.mark.parametrize(
    ("field", "value"),
    [("roles", "front desk"), ("domains", "*"), ("objects", "member:a,b"), ("actions", ""), ("purposes", "care\n")],
)
def test_vocabulary_refuses_tokens_that_are_not_plain(field: str, value: str) -> None:
    fields = {"roles": {"member"}, "domains": {"self"}, "objects": {"member:health"}, "actions": {"read"}, "purposes": {"care"}}
    fields[field] = {value}
    with pytest.raises(ValueError, match="is not a plain token") as refused:
        Vocabulary(**{name: frozenset(values) for name, values in fields.items()})
    assert str(refused.value) == f"vocabulary {field}: {value!r} is not a plain token"


def test_hash_is_sha256_over_the_length_prefixed_texts() -> None:
    model, policy = MODEL.encode("utf-8"), POLICY.encode("utf-8")
    encoding = len(model).to_bytes(8, "big") + model + len(policy).to_bytes(8, "big") + policy
    assert PolicySet.parse(MODEL, POLICY, VOCABULARY).hash == "sha256:" + hashlib.sha256(encoding).hexdigest()


def test_hash_changes_with_one_character_of_either_file() -> None:
    base = PolicySet.parse(MODEL, POLICY, VOCABULARY).hash
    assert PolicySet.parse(MODEL.replace("Reviewed", "reviewed", 1), POLICY, VOCABULARY).hash != base
    assert PolicySet.parse(MODEL, POLICY.replace("health data", "health-data"), VOCABULARY).hash != base


def test_hash_tells_where_the_model_ends_and_the_policy_begins() -> None:
    """Moving a character across the boundary keeps the concatenation and changes the hash."""
    before = PolicySet.parse(MODEL + "#", POLICY, VOCABULARY)
    after = PolicySet.parse(MODEL, "#" + POLICY, VOCABULARY)
    assert before.model_text + before.policy_text == after.model_text + after.policy_text
    assert before.hash != after.hash


def write_directory(directory: Path, model: bytes, policy: bytes) -> Path:
    (directory / MODEL_FILENAME).write_bytes(model)
    (directory / POLICY_FILENAME).write_bytes(policy)
    return directory


def test_from_directory_loads_the_exact_file_bytes(tmp_path: Path) -> None:
    directory = write_directory(tmp_path, MODEL.encode("utf-8"), POLICY.encode("utf-8"))
    assert PolicySet.from_directory(directory, VOCABULARY).hash == PolicySet.parse(MODEL, POLICY, VOCABULARY).hash


def test_from_directory_refuses_windows_line_endings(tmp_path: Path) -> None:
    directory = write_directory(tmp_path, MODEL.encode("utf-8"), POLICY.replace("\n", "\r\n").encode("utf-8"))
    with pytest.raises(PolicyValidationError, match=r"^line 2, effect: 'allow\\r' is not a plain token$"):
        PolicySet.from_directory(directory, VOCABULARY)


def test_from_directory_refuses_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / POLICY_FILENAME).write_bytes(POLICY.encode("utf-8"))
    with pytest.raises(PolicyValidationError, match=r"^model\.conf: cannot be read \(FileNotFoundError\)$"):
        PolicySet.from_directory(tmp_path, VOCABULARY)


def test_from_directory_refuses_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    directory = write_directory(tmp_path, MODEL.encode("utf-8"), POLICY.encode("utf-16"))
    with pytest.raises(PolicyValidationError, match=r"^default\.csv: not UTF-8$"):
        PolicySet.from_directory(directory, VOCABULARY)


def test_validation_errors_are_policy_errors() -> None:
    assert issubclass(PolicyValidationError, PolicyError)
