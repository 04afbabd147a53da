"""Identifier columns unbounded: an EHR's hookInstance or card uuid longer than 128 characters must
not make the audit write (and so the request) fail.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = {
    "audit_record": {"hook_instance": 128, "hook": 64, "service_id": 128, "card_uuid": 128},
    "audit_card": {"card_uuid": 128, "rule_id": 128, "rule_version": 32},
}


def upgrade() -> None:
    # SQLite does not enforce VARCHAR lengths (and cannot ALTER a column type): nothing to do there.
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, cols in COLUMNS.items():
        for col, length in cols.items():
            op.alter_column(table, col, type_=sa.Text(), existing_type=sa.String(length))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, cols in COLUMNS.items():
        for col, length in cols.items():
            op.alter_column(table, col, type_=sa.String(length), existing_type=sa.Text())
