"""A pseudonym is the first 128 bits, hex, of HMAC-SHA256 of the member id under the key derived for (consumer, epoch)."""

from __future__ import annotations

import hashlib
import hmac
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from keys.derive import derive_key
from vault.extracts.pseudonyms import Pseudonymizer, pseudonym_label

MEMBER_IDS = st.text(alphabet="0123456789abcdef", min_size=1, max_size=32)


@settings(max_examples=100, deadline=None)
@given(member_ids=st.lists(MEMBER_IDS, min_size=1, max_size=5), epoch=st.integers(1, 50))
def test_a_pseudonym_is_the_truncated_hmac_of_the_member_id_under_the_derived_key(member_ids: list[str], epoch: int) -> None:
    """Computed afresh with ``hmac`` for each id: a pseudonymizer reused for many members gives each its own MAC."""
    root = os.urandom(32)
    pseudonym = Pseudonymizer(root, "loyalty-app", epoch)
    key = derive_key(root, pseudonym_label("loyalty-app", epoch))

    assert [pseudonym(m) for m in member_ids] == [hmac.new(key, m.encode("ascii"), hashlib.sha256).hexdigest()[:32] for m in member_ids]
