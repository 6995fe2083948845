"""A loaded, immutable policy set: model text, policy text, their hash, and decisions.

Invariants:

- A ``PolicySet`` exists only for texts that passed every check (``_rules``
  and ``_model``); it never changes afterwards. A new policy version is a new
  ``PolicySet``, so its decision cache needs no version in the key.
- Default deny: a request is allowed only when an allow line of one of the
  caller's known roles matches and no deny line of any of them does. Role
  names outside the vocabulary are dropped before deciding; other request
  values are taken as given and simply match no line they do not name.
- ``decide`` and ``explain`` are thread-safe: casbin is called under the
  set's lock, and the bounded cache is ``functools.lru_cache``.

The hash, ``"sha256:" + hex``, is SHA-256 over this byte string, where M and
P are the UTF-8 bytes of the model text and the policy text exactly as loaded:

    len(M) as 8 bytes big-endian || M || len(P) as 8 bytes big-endian || P
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Self

from policies._decision import Explanation, Reason, Verdict
from policies._model import CasbinMatcher, Request, encode_roles
from policies._rules import parse_rules
from policies._vocabulary import Vocabulary
from policies.errors import PolicyError, PolicyValidationError

MODEL_FILENAME = "model.conf"
POLICY_FILENAME = "default.csv"
DECISION_CACHE_SIZE = 4096
_LENGTH_BYTES = 8


def policy_set_hash(model_text: str, policy_text: str) -> str:
    """The hash of a policy set, as described in the module docstring."""
    digest = hashlib.sha256()
    for text in (model_text, policy_text):
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(_LENGTH_BYTES, "big"))
        digest.update(data)
    return "sha256:" + digest.hexdigest()


class PolicySet:
    """A checked model and policy, ready to decide. Build one with ``parse`` or ``from_directory``."""

    __slots__ = ("_decide_cached", "_enforcer", "_hash", "_lock", "_model_text", "_policy_text", "_probe", "_rules", "_vocabulary")

    def __init__(self, model_text: str, policy_text: str, vocabulary: Vocabulary) -> None:
        self._rules = parse_rules(policy_text, vocabulary)
        self._enforcer = CasbinMatcher(model_text, [rule.fields for rule in self._rules])
        self._probe = CasbinMatcher(model_text, [])
        try:
            self._enforcer.enforce(self._rules[0].fields[:5])
        except PolicyError as exc:
            raise PolicyValidationError(str(exc)) from exc
        self._model_text = model_text
        self._policy_text = policy_text
        self._vocabulary = vocabulary
        self._hash = policy_set_hash(model_text, policy_text)
        self._lock = threading.Lock()
        self._decide_cached: Callable[[frozenset[str], str, str, str, str], Verdict] = functools.lru_cache(maxsize=DECISION_CACHE_SIZE)(self._decide)

    @classmethod
    def parse(cls, model_text: str, policy_text: str, vocabulary: Vocabulary) -> Self:
        """Check both texts against casbin and the vocabulary; raise ``PolicyValidationError`` on the first problem."""
        return cls(model_text, policy_text, vocabulary)

    @classmethod
    def from_directory(cls, directory: Path, vocabulary: Vocabulary) -> Self:
        """Load ``model.conf`` and ``default.csv`` from a directory (UTF-8, read as bytes so the hash covers them exactly)."""
        return cls(_read(directory / MODEL_FILENAME), _read(directory / POLICY_FILENAME), vocabulary)

    @property
    def hash(self) -> str:
        return self._hash

    @property
    def model_text(self) -> str:
        return self._model_text

    @property
    def policy_text(self) -> str:
        return self._policy_text

    def decide(self, roles: Collection[str], domain: str, obj: str, action: str, purpose: str) -> Verdict:
        """May callers holding these roles take this action on this object, in this domain, for this purpose?"""
        return self._decide_cached(self._known_roles(roles), domain, obj, action, purpose)

    def explain(self, roles: Collection[str], domain: str, obj: str, action: str, purpose: str) -> Explanation:
        """The decision, with every line that matched the request (each line checked alone by casbin)."""
        known = self._known_roles(roles)
        verdict = self._decide_cached(known, domain, obj, action, purpose)
        request: Request = (encode_roles(known), domain, obj, action, purpose)
        lines: list[str] = []
        with self._lock:
            for rule in self._rules:
                self._probe.replace_rules([rule.fields])
                _, matched = self._probe.enforce(request)
                if matched:
                    lines.append(rule.text)
        return Explanation(allowed=verdict.allowed, reason=verdict.reason, lines=tuple(lines))

    def __repr__(self) -> str:
        return f"PolicySet(hash={self._hash!r}, rules={len(self._rules)})"

    def _known_roles(self, roles: Collection[str]) -> frozenset[str]:
        if isinstance(roles, str):
            msg = "roles must be a collection of role names, not one str"
            raise TypeError(msg)
        return frozenset(roles) & self._vocabulary.roles

    def _decide(self, roles: frozenset[str], domain: str, obj: str, action: str, purpose: str) -> Verdict:
        with self._lock:
            allowed, rule = self._enforcer.enforce((encode_roles(roles), domain, obj, action, purpose))
        if allowed:
            return Verdict(allowed=True, reason=Reason.ALLOWED)
        if rule and rule[-1] == "deny":
            return Verdict(allowed=False, reason=Reason.DENIED_BY_RULE)
        return Verdict(allowed=False, reason=Reason.NO_MATCHING_RULE)


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        msg = f"{path.name}: cannot be read ({type(exc).__name__})"
        raise PolicyValidationError(msg) from exc
    except UnicodeDecodeError as exc:
        msg = f"{path.name}: not UTF-8"
        raise PolicyValidationError(msg) from exc
