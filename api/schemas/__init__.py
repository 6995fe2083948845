"""Pydantic models of the HTTP API: built from the data map, never a second list of fields."""
