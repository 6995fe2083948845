"""Members: the member record, its field history and its blind-index search."""

from vault.members.repository import MemberRepository, MemberView

__all__ = ["MemberRepository", "MemberView"]
