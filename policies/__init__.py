"""Casbin model and policy files and their thin typed loader.

Built in the HTTP API issue; see DESIGN.md, Access control. Imports nothing of ours.
"""
