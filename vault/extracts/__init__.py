"""Pseudonymized, consent-gated, k-anonymous profile extracts for downstream consumers."""
