"""Casbin model and policy files and their thin typed loader: load, hash, decide, explain.

The default policy lives next to this module (``model.conf`` and
``default.csv``, reviewed like code; see DESIGN.md, Access control). The edge
builds a ``Vocabulary`` from the data map and purpose catalog, loads a
``PolicySet`` once, asks it for decisions, and swaps in a new one when the
policy version changes. Imports nothing of ours; casbin stays inside.
"""

from __future__ import annotations

from pathlib import Path

from policies._decision import Explanation, Reason, Verdict
from policies._policy_set import MODEL_FILENAME, POLICY_FILENAME, PolicySet
from policies._vocabulary import Vocabulary
from policies.errors import PolicyError, PolicyValidationError

DEFAULT_DIRECTORY: Path = Path(__file__).resolve().parent

__all__ = [
    "DEFAULT_DIRECTORY",
    "MODEL_FILENAME",
    "POLICY_FILENAME",
    "Explanation",
    "PolicyError",
    "PolicySet",
    "PolicyValidationError",
    "Reason",
    "Verdict",
    "Vocabulary",
]
