"""The policy file's strict grammar and its check against the vocabulary.

Grammar, one line at a time (lines are separated by ``\\n`` only):

    blank    an empty line
    comment  a line starting with ``#`` in the first column
    rule     ``p, role, domain, object, action, purpose, effect``: seven plain
             tokens (letters, digits, ``_ : * -``) separated by exactly ``, ``

Anything else is refused, so casbin's own CSV reading (quotes, brackets,
indented comments) never comes into play: the loader hands casbin the parsed
fields, and the text that was hashed is the text that was checked.

Invariants of the rules returned: at least one; no line repeated; every field
known to the vocabulary or a wildcard (``*`` in any field but the effect;
``resource:*`` for an object when some known object starts with
``resource:``); the effect is ``allow`` or ``deny``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from policies._vocabulary import Vocabulary
from policies.errors import PolicyValidationError

FIELDS = ("type", "role", "domain", "object", "action", "purpose", "effect")
SEPARATOR = ", "
WILDCARD = "*"
EFFECTS = frozenset({"allow", "deny"})
_POLICY_TOKEN = re.compile(r"[A-Za-z0-9_:*-]+")


@dataclass(frozen=True, slots=True)
class Rule:
    """One checked policy line: its number and text as written, and its fields after ``p``."""

    number: int
    text: str
    fields: tuple[str, str, str, str, str, str]

    @property
    def effect(self) -> str:
        return self.fields[5]


def parse_rules(policy_text: str, vocabulary: Vocabulary) -> tuple[Rule, ...]:
    """Check every line of the policy text and return its rules, in file order."""
    rules: list[Rule] = []
    first_seen: dict[str, int] = {}
    for number, line in enumerate(policy_text.split("\n"), start=1):
        if line == "" or line.startswith("#"):
            continue
        rule = _parse_rule(number, line, vocabulary)
        if line in first_seen:
            msg = f"line {number}: repeats line {first_seen[line]}"
            raise PolicyValidationError(msg)
        first_seen[line] = number
        rules.append(rule)
    if not rules:
        msg = "policy: no rules"
        raise PolicyValidationError(msg)
    return tuple(rules)


def _parse_rule(number: int, line: str, vocabulary: Vocabulary) -> Rule:
    tokens = line.split(SEPARATOR)
    if len(tokens) != len(FIELDS):
        msg = f"line {number}: expected {len(FIELDS)} fields separated by {SEPARATOR!r}, found {len(tokens)}"
        raise PolicyValidationError(msg)
    for field, token in zip(FIELDS, tokens, strict=True):
        if not _POLICY_TOKEN.fullmatch(token):
            msg = f"line {number}, {field}: {token!r} is not a plain token"
            raise PolicyValidationError(msg)
    kind, role, domain, obj, action, purpose, effect = tokens
    if kind != "p":
        msg = f"line {number}, type: expected 'p', found {kind!r}"
        raise PolicyValidationError(msg)
    _check_name(number, "role", role, vocabulary.roles)
    _check_name(number, "domain", domain, vocabulary.domains)
    _check_object(number, obj, vocabulary.objects)
    _check_name(number, "action", action, vocabulary.actions)
    _check_name(number, "purpose", purpose, vocabulary.purposes)
    if effect not in EFFECTS:
        msg = f"line {number}, effect: {effect!r} is neither 'allow' nor 'deny'"
        raise PolicyValidationError(msg)
    return Rule(number=number, text=line, fields=(role, domain, obj, action, purpose, effect))


def _check_name(number: int, field: str, token: str, known: frozenset[str]) -> None:
    if token != WILDCARD and token not in known:
        msg = f"line {number}, {field}: unknown value {token!r}"
        raise PolicyValidationError(msg)


def _check_object(number: int, token: str, known: frozenset[str]) -> None:
    if token == WILDCARD or token in known:
        return
    prefix = token.removesuffix(WILDCARD)
    is_resource_wildcard = prefix != token and prefix.endswith(":") and WILDCARD not in prefix and len(prefix) > 1
    if is_resource_wildcard and any(name.startswith(prefix) for name in known):
        return
    msg = f"line {number}, object: unknown value {token!r}"
    raise PolicyValidationError(msg)
