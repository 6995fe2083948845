"""The casbin model: its expected shape, and a typed wrapper around casbin's enforcer.

The model file is free in its matcher but fixed in its shape, because the
loader's callers and the reason codes depend on it:

    [request_definition]  r = roles, dom, obj, act, purpose
    [policy_definition]   p = role, dom, obj, act, purpose, eft
    [policy_effect]       e = some(where (p.eft == allow)) && !some(where (p.eft == deny))
    [matchers]            m = ... (may call ``hasRole`` and casbin's built-ins such as ``keyMatch``)

and it has no ``[role_definition]``: roles come in the request.

Roles reach casbin as one string, ``encode_roles``: the caller's known roles,
sorted and joined by single spaces (vocabulary tokens hold no space, so the
encoding is unambiguous). ``hasRole(r.roles, p.role)`` is true when the line's
role is one of them, or the line's role is ``*`` and the caller has at least
one known role.

``CasbinMatcher`` keeps casbin's untyped objects inside; it is not thread-safe
on its own (its callers hold a lock).
"""

from __future__ import annotations

from collections.abc import Sequence

import casbin
from casbin.model import Model

from policies.errors import PolicyError, PolicyValidationError

ROLE_SEPARATOR = " "
EXPECTED_SECTIONS = (
    ("r", "request_definition", "roles, dom, obj, act, purpose"),
    ("p", "policy_definition", "role, dom, obj, act, purpose, eft"),
)
EXPECTED_EFFECT = "some(where (p.eft == allow)) && !some(where (p.eft == deny))"
_ESCAPED_EFFECT = EXPECTED_EFFECT.replace("p.eft", "p_eft")  # casbin rewrites ``p.`` to ``p_`` when it loads an effect

Request = tuple[str, str, str, str, str]


def encode_roles(roles: frozenset[str]) -> str:
    """The canonical string of a role set for ``r.roles``."""
    return ROLE_SEPARATOR.join(sorted(roles))


def has_role(encoded_roles: str, policy_role: str) -> bool:
    """The ``hasRole`` matcher function: does a policy line's role apply to the caller's roles?"""
    roles = encoded_roles.split(ROLE_SEPARATOR) if encoded_roles else []
    return policy_role in roles or (policy_role == "*" and len(roles) > 0)


def load_model(model_text: str) -> Model:
    """Parse the model text with casbin and check its shape."""
    model = Model()
    try:
        model.load_model_from_text(model_text)
    except Exception as exc:  # casbin raises untyped errors of several classes; each one means the model is refused
        msg = f"model: casbin cannot parse it ({type(exc).__name__})"
        raise PolicyValidationError(msg) from exc
    for key, section, expected in EXPECTED_SECTIONS:
        found = _definition(model, key)
        if found is None or [token.strip() for token in found.split(",")] != expected.split(", "):
            shown = "nothing" if found is None else f"'{key} = {found}'"
            msg = f"model: {section} must be '{key} = {expected}', found {shown}"
            raise PolicyValidationError(msg)
    if _definition(model, "e") != _ESCAPED_EFFECT:
        msg = f"model: policy_effect must be 'e = {EXPECTED_EFFECT}'"
        raise PolicyValidationError(msg)
    if _definition(model, "m") is None:
        msg = "model: matchers 'm = ...' are missing"
        raise PolicyValidationError(msg)
    if model["g"] is not None:
        msg = "model: role_definition is not part of this model (roles come in the request)"
        raise PolicyValidationError(msg)
    return model


def _definition(model: Model, key: str) -> str | None:
    section = model[key]
    if section is None or key not in section:
        return None
    return str(section[key].value)


class CasbinMatcher:
    """A casbin enforcer over checked rules, with typed calls."""

    __slots__ = ("_enforcer",)

    def __init__(self, model_text: str, rules: Sequence[Sequence[str]]) -> None:
        self._enforcer = casbin.Enforcer(load_model(model_text))
        self._enforcer.add_function("hasRole", has_role)
        self.replace_rules(rules)

    def replace_rules(self, rules: Sequence[Sequence[str]]) -> None:
        self._enforcer.clear_policy()
        if rules:
            self._enforcer.add_policies([list(rule) for rule in rules])

    def enforce(self, request: Request) -> tuple[bool, tuple[str, ...]]:
        """Casbin's decision, and the fields of the line it names (the deny line that decided, or the last allow line; none if no line matched)."""
        try:
            allowed, rule = self._enforcer.enforce_ex(*request)
        except Exception as exc:  # casbin's untyped evaluator raises errors of many classes; each one means no decision
            msg = f"model: the matcher cannot be evaluated ({type(exc).__name__})"
            raise PolicyError(msg) from exc
        return allowed is True, tuple(str(field) for field in rule)
