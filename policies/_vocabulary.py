"""The vocabulary a policy set is checked against, handed in by the edge.

Invariant: every entry is a plain token (letters, digits, ``_``, ``:``, ``-``):
never ``*``, never a space or a comma. So a policy line cannot be ambiguous,
a wildcard in a policy line can only be a wildcard, and the space-separated
encoding of a caller's roles (see ``_model``) cannot split one role into two.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VOCABULARY_TOKEN = re.compile(r"[A-Za-z0-9_:-]+")


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """The names a policy line may use, besides the wildcards.

    ``domains`` are the caller's relations to a member (``self``, ``clinic``,
    ``break_glass``, ``none``); ``objects`` are ``resource:category`` names;
    ``purposes`` are the statable purposes plus ``-`` for routes without one.
    """

    roles: frozenset[str]
    domains: frozenset[str]
    objects: frozenset[str]
    actions: frozenset[str]
    purposes: frozenset[str]

    def __post_init__(self) -> None:
        named = (("roles", self.roles), ("domains", self.domains), ("objects", self.objects), ("actions", self.actions), ("purposes", self.purposes))
        for name, values in named:
            for value in sorted(values):
                if not VOCABULARY_TOKEN.fullmatch(value):
                    msg = f"vocabulary {name}: {value!r} is not a plain token"
                    raise ValueError(msg)
