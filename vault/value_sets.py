"""Closed value sets of the data map.

Every enum a member, treatment or ledger field can take lives here, once. The
API publishes them in its OpenAPI schema; storage, validation and extracts
read them from here. Values are stable identifiers: renaming one is a data
migration, not an edit.
"""

from __future__ import annotations

from enum import StrEnum


class Tier(StrEnum):
    standard = "standard"
    silver = "silver"
    gold = "gold"
    platinum = "platinum"
    diamond = "diamond"


class MemberStatus(StrEnum):
    active = "active"
    suspended = "suspended"
    closed = "closed"


class IdType(StrEnum):
    resident_id = "resident_id"
    passport = "passport"
    hk_macau_permit = "hk_macau_permit"
    taiwan_permit = "taiwan_permit"
    foreign_permanent_resident = "foreign_permanent_resident"


class Gender(StrEnum):
    female = "female"
    male = "male"
    other = "other"
    undisclosed = "undisclosed"


class Channel(StrEnum):
    sms = "sms"
    phone = "phone"
    email = "email"
    wechat = "wechat"
    app = "app"
    none = "none"


class Education(StrEnum):
    primary = "primary"
    secondary = "secondary"
    vocational = "vocational"
    bachelor = "bachelor"
    master = "master"
    doctorate = "doctorate"
    undisclosed = "undisclosed"


class IncomeBand(StrEnum):
    below_5k = "below_5k"
    from_5k_to_10k = "5k_10k"
    from_10k_to_20k = "10k_20k"
    from_20k_to_50k = "20k_50k"
    above_50k = "above_50k"
    undisclosed = "undisclosed"


class MaritalStatus(StrEnum):
    single = "single"
    married = "married"
    divorced = "divorced"
    widowed = "widowed"
    undisclosed = "undisclosed"


class SkinType(StrEnum):
    normal = "normal"
    dry = "dry"
    oily = "oily"
    combination = "combination"
    sensitive = "sensitive"


class PregnancyStatus(StrEnum):
    not_pregnant = "not_pregnant"
    pregnant = "pregnant"
    breastfeeding = "breastfeeding"
    not_applicable = "not_applicable"
    undisclosed = "undisclosed"


class TreatmentCategory(StrEnum):
    injectable = "injectable"
    laser = "laser"
    skin_care = "skin_care"
    body_contouring = "body_contouring"
    hair_removal = "hair_removal"
    thread_lift = "thread_lift"
    consultation = "consultation"


class LedgerEntryType(StrEnum):
    top_up = "top_up"
    spend = "spend"
    refund = "refund"
    points_earn = "points_earn"
    points_redeem = "points_redeem"
