"""consent: notice versions and the append-only consent history

Revision ID: 0005_consent
Revises: 0004_access
Create Date: 2026-11-22 21:30:00.000000

``consent_notices`` and ``consent_events`` are append-only at the database
level, as the audit tables are (see 0002): on SQLite BEFORE UPDATE/DELETE
triggers and a no-replace trigger; on PostgreSQL row triggers against UPDATE
and DELETE, a statement trigger against TRUNCATE, and every role but the
owner loses UPDATE, DELETE, TRUNCATE, REFERENCES and TRIGGER on them (and
UPDATE on the identity sequence of ``consent_events``).

Version 1 of every purpose's notice is published here, effective
2026-01-01T00:00:00Z, so a grant always has a current notice to name. Later
versions are published through ``POST /v1/purposes/{purpose}/notices``. The
hashes follow ``vault.consent.notices`` (a test recomputes them): each text's
SHA-256 in hex, and the notice hash the SHA-256 of the compact, key-sorted
JSON ``{"effective_at", "material", "purpose", "texts": {"en", "zh"}, "version"}``
with the texts' hashes in ``texts``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op


revision = '0005_consent'
down_revision = '0004_access'
branch_labels = None
depends_on = None

TABLES = ('consent_notices', 'consent_events')
MESSAGE = 'consent history is append-only'
REVOKED = ('UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER')
KEYS = {
    'consent_notices': 'purpose = NEW.purpose AND version = NEW.version',
    'consent_events': 'seq = NEW.seq OR consent_id = NEW.consent_id',
}


EFFECTIVE = datetime(2026, 1, 1, tzinfo=timezone.utc)
NOTICES = {
    'care': (
        '我们为履行会员卡及诊疗服务合同处理您的个人信息，包括为诊疗所必需的健康信息。',
        'We process your personal information to perform the membership card and treatment contract, including the health information that care requires.',
    ),
    'health_data': (
        '经您单独同意，我们记录您的过敏史、病史、禁忌症、肤质和妊娠状态等健康信息，仅用于您的诊疗安全。您可随时撤回同意。',
        'With your separate consent we record health information such as allergies, medical history, contraindications, skin type and pregnancy status, only for the safety of your care. You may withdraw at any time.',
    ),
    'marketing_contact': (
        '经您同意，我们会通过您选择的渠道向您发送优惠和活动信息。您可随时撤回同意。',
        'With your consent we send you offers and event news through the channel you chose. You may withdraw at any time.',
    ),
    'loyalty_profiling': (
        '经您同意，我们以假名化方式分析您的会员等级、消费和偏好，用于设计会员权益。您可随时撤回同意。',
        'With your consent we analyse your tier, spending and preferences under a pseudonym to design membership benefits. You may withdraw at any time.',
    ),
    'third_party_sharing': (
        '经您单独同意，我们向列明的合作方提供您的个人信息。您可随时撤回同意。',
        'With your separate consent we share your personal information with the partners listed. You may withdraw at any time.',
    ),
    'photo_use': (
        '经您单独同意，我们使用您的治疗前后照片，用于病历记录以外的用途。您可随时撤回同意。',
        'With your separate consent we use your before-and-after photos beyond your medical record. You may withdraw at any time.',
    ),
    'cross_border_transfer': (
        '经您单独同意，我们在完成法定程序后向境外接收方提供您的个人信息。您可随时撤回同意。',
        'With your separate consent, and after the legally required steps, we transfer your personal information to a recipient outside the country. You may withdraw at any time.',
    ),
    'self_service': (
        '您可以查阅、复制、更正和删除您的个人信息，我们为处理您的请求而使用您的信息。',
        'You may access, copy, correct and delete your personal information; we use it to handle your requests.',
    ),
    'legal_claims': (
        '依照法律规定，我们保存病历至少十五年，并仅在法律程序需要时使用。',
        'As the law requires, we keep medical records for at least fifteen years and use them only when legal proceedings require.',
    ),
}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def _notice_rows() -> list[dict[str, object]]:
    rows = []
    for purpose, (zh, en) in NOTICES.items():
        texts = {'en': _sha256(en), 'zh': _sha256(zh)}
        body = {'effective_at': '2026-01-01T00:00:00Z', 'material': True, 'purpose': purpose, 'texts': texts, 'version': 1}
        notice_hash = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(',', ':')).encode('ascii')).hexdigest()
        rows.append({
            'purpose': purpose, 'version': 1, 'text_zh': zh, 'text_en': en, 'sha256_zh': texts['zh'], 'sha256_en': texts['en'],
            'notice_hash': notice_hash, 'material': True, 'effective_at': EFFECTIVE, 'published_at': EFFECTIVE,
            'published_by': 'migration:0005_consent',
        })
    return rows


def upgrade() -> None:
    op.create_table('consent_notices',
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('text_zh', sa.Text(), nullable=False),
    sa.Column('text_en', sa.Text(), nullable=False),
    sa.Column('sha256_zh', sa.String(length=64), nullable=False),
    sa.Column('sha256_en', sa.String(length=64), nullable=False),
    sa.Column('notice_hash', sa.String(length=64), nullable=False),
    sa.Column('material', sa.Boolean(), nullable=False),
    sa.Column('effective_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('published_by', sa.String(length=256), nullable=False),
    sa.CheckConstraint('version >= 1', name=op.f('ck_consent_notices_version')),
    sa.PrimaryKeyConstraint('purpose', 'version', name=op.f('pk_consent_notices'))
    )
    op.create_table('consent_events',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=True), nullable=False),
    sa.Column('consent_id', sa.String(length=32), nullable=False),
    sa.Column('member_id', sa.String(length=32), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('decision', sa.String(length=16), nullable=False),
    sa.Column('notice_version', sa.Integer(), nullable=True),
    sa.Column('notice_hash', sa.String(length=64), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('given_by', sa.String(length=16), nullable=False),
    sa.Column('evidence', sa.LargeBinary(), nullable=True),
    sa.Column('recorded_by', sa.String(length=256), nullable=False),
    sa.Column('recorded_role', sa.String(length=32), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("channel = 'app' OR evidence IS NOT NULL", name=op.f('ck_consent_events_evidence_off_app')),
    sa.CheckConstraint("channel IN ('app', 'front_desk', 'paper', 'request')", name=op.f('ck_consent_events_channel')),
    sa.CheckConstraint("decision = 'withdrawn' OR (notice_version IS NOT NULL AND notice_hash IS NOT NULL)", name=op.f('ck_consent_events_grant_names_notice')),
    sa.CheckConstraint("decision IN ('granted', 'withdrawn')", name=op.f('ck_consent_events_decision')),
    sa.CheckConstraint("given_by IN ('member', 'guardian')", name=op.f('ck_consent_events_given_by')),
    sa.ForeignKeyConstraint(['member_id'], ['members.member_id'], name=op.f('fk_consent_events_member_id_members')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_consent_events')),
    sa.UniqueConstraint('consent_id', name=op.f('uq_consent_events_consent_id'))
    )
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consent_events_member_id_purpose_seq'), ['member_id', 'purpose', 'seq'], unique=False)

    typed = {'version': sa.Integer(), 'material': sa.Boolean(), 'effective_at': sa.DateTime(timezone=True), 'published_at': sa.DateTime(timezone=True)}
    names = ('purpose', 'version', 'text_zh', 'text_en', 'sha256_zh', 'sha256_en', 'notice_hash', 'material', 'effective_at', 'published_at', 'published_by')
    notices = sa.table('consent_notices', *(sa.column(name, typed.get(name, sa.String())) for name in names))
    op.bulk_insert(notices, _notice_rows())

    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        _sqlite_triggers(bind)
    elif bind.dialect.name == 'postgresql':
        _postgres_triggers(bind)
        _postgres_revoke(bind)
    else:
        raise RuntimeError(f'no append-only triggers for {bind.dialect.name}')


def downgrade() -> None:
    with op.batch_alter_table('consent_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consent_events_member_id_purpose_seq'))
    op.drop_table('consent_events')
    op.drop_table('consent_notices')
    if op.get_bind().dialect.name == 'postgresql':
        op.get_bind().exec_driver_sql('DROP FUNCTION consent_append_only()')


def _sqlite_triggers(bind: sa.Connection) -> None:
    for table in TABLES:
        for event in ('UPDATE', 'DELETE'):
            bind.exec_driver_sql(
                f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            )
        bind.exec_driver_sql(
            f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "
            f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {KEYS[table]}) "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
        )


def _postgres_triggers(bind: sa.Connection) -> None:
    bind.exec_driver_sql(
        "CREATE FUNCTION consent_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN RAISE EXCEPTION '{MESSAGE}' USING DETAIL = TG_OP || ' on ' || TG_TABLE_NAME || ' refused'; END $$"
    )
    for table in TABLES:
        bind.exec_driver_sql(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION consent_append_only()"
        )
        bind.exec_driver_sql(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION consent_append_only()"
        )


def _postgres_grants(bind: sa.Connection) -> list[tuple[str, str, str, str]]:
    """(TABLE or SEQUENCE, name, grantee, right) for each forbidden right a non-owner holds on the consent relations."""
    relations = [f"'{table}'::regclass" for table in TABLES]
    relations.append("pg_get_serial_sequence('consent_events', 'seq')::regclass")
    table_rights = ', '.join(f"'{right}'" for right in REVOKED)
    rows = bind.exec_driver_sql(
        "SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, c.oid::regclass::text, "
        "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, a.privilege_type "
        "FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a "
        f"WHERE c.oid IN ({', '.join(relations)}) AND a.grantee <> c.relowner "
        f"AND (c.relkind <> 'S' AND a.privilege_type IN ({table_rights}) OR c.relkind = 'S' AND a.privilege_type = 'UPDATE')"
    )
    return sorted({(str(kind), str(name), str(grantee), str(right)) for kind, name, grantee, right in rows})


def _postgres_revoke(bind: sa.Connection) -> None:
    for kind, name, grantee, right in _postgres_grants(bind):
        bind.exec_driver_sql(f'REVOKE {right} ON {kind} {name} FROM {grantee} CASCADE')
    left = _postgres_grants(bind)
    if left:
        raise RuntimeError(f'consent tables: {len(left)} UPDATE/DELETE/TRUNCATE-type grants could not be revoked by the owner; a DBA must revoke them')
