"""Consent: notice versions, the append-only grant/withdraw history, the derived state, receipts, FHIR.

``vault.purposes`` holds the catalog's fixed part (legal basis, consent,
sensitivity); notice texts are versioned in the database (``notices``);
``service`` records events and derives the state (``state``) on every call;
``gate`` is how the edge reaches all of it, one audit event per call;
``receipts`` signs each event's receipt; ``fhir`` renders an event as a FHIR
R4B ``Consent``.
"""

from vault.consent.gate import ConsentGate, ConsentOverview, NoticeDraft
from vault.consent.model import (
    ConsentChannel,
    ConsentDecision,
    ConsentEvent,
    ConsentRequest,
    ConsentState,
    GivenBy,
    Notice,
    PurposeState,
    Recorder,
    RecorderRole,
)
from vault.consent.notices import NoticeBook
from vault.consent.service import ConsentService

__all__ = [
    "ConsentChannel",
    "ConsentDecision",
    "ConsentEvent",
    "ConsentGate",
    "ConsentOverview",
    "ConsentRequest",
    "ConsentService",
    "ConsentState",
    "GivenBy",
    "Notice",
    "NoticeBook",
    "NoticeDraft",
    "PurposeState",
    "Recorder",
    "RecorderRole",
]
