"""Errors of the policy loader.

    PolicyError
    └── PolicyValidationError   the model or policy file is refused (names the file or line, the field and the token)

Policy files are configuration reviewed like code, not personal data, so a
message may quote the offending token. A message never passes on casbin's own
text: the cause is chained with ``from`` for the logs.
"""

from __future__ import annotations


class PolicyError(Exception):
    """Root of the policy loader's errors."""


class PolicyValidationError(PolicyError):
    """The model or policy text is refused; nothing was loaded."""
