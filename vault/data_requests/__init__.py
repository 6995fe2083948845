"""Data-subject requests (PIPL Art. 44–47, GDPR Art. 15–21): filing, the workflow, its effects, the queue.

``model`` holds the values, ``workflow`` the pure rules (transitions, reason
codes, due dates), ``service`` the storage (notes, details and evidence
encrypted under the member's key), ``gate`` the audited way in and what
completing a request does.
"""

from vault.data_requests.gate import DataRequestGate, Move
from vault.data_requests.model import OPEN, REJECTION_REASONS, DataRequest, FiledBy, ReasonCode, RequestType, Status, Step
from vault.data_requests.service import DataRequestService, Filer, Filing

__all__ = [
    "OPEN",
    "REJECTION_REASONS",
    "DataRequest",
    "DataRequestGate",
    "DataRequestService",
    "FiledBy",
    "Filer",
    "Filing",
    "Move",
    "ReasonCode",
    "RequestType",
    "Status",
    "Step",
]
