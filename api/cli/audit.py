"""``vaultctl audit …``: the audit log's keys, for pinning out of band.

``audit keys`` prints the C2SP verifier key string
(``<origin>+<key id>+<base64(0x01 ‖ public key)>``) of every audit signing key
a verifier should accept now — the current key first, then the older keys
still in their rotation overlap — one per line, and nothing else on standard
output. The first audit key is created if there is none yet.
"""

from __future__ import annotations

import typer

from api.cli._common import runtime
from audit.checkpoint import verifier_key_string
from keys.signing import SigningPurpose

audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")


@audit_app.command("keys")
def audit_keys() -> None:
    """Print the verifier keys of the audit checkpoints, current first, one per line."""
    with runtime() as rt:
        rt.signing.current(SigningPurpose.audit)
        listed = rt.signing.verification_keys(SigningPurpose.audit)
        origin = rt.settings.audit_origin
    for key in listed:
        typer.echo(verifier_key_string(origin, key.public_key))
