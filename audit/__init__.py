"""The append-only, tamper-evident audit log (RFC 6962 tree, signed checkpoints).

Built in the audit-log issue; see DESIGN.md, Audit. Imports only ``keys``.
"""
