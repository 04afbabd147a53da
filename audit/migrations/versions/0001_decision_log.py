"""Decision log: hash-chained audit records, chain head, card index.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64


def upgrade() -> None:
    head = op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_audit_chain_head_single_row"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])
    op.create_table(
        "audit_record",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("recorded_at", sa.String(32), nullable=False),
        sa.Column("hook_instance", sa.String(128)),
        sa.Column("hook", sa.String(64)),
        sa.Column("service_id", sa.String(128)),
        sa.Column("patient_key", sa.String(64)),
        sa.Column("card_uuid", sa.String(128)),
        sa.Column("feedback_key", sa.String(64)),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("feedback_key", name="uq_audit_record_feedback_key"),
    )
    op.create_index("ix_audit_record_hook_instance", "audit_record", ["hook_instance"])
    op.create_index("ix_audit_record_recorded_at", "audit_record", ["recorded_at"])
    op.create_index("ix_audit_record_patient_key", "audit_record", ["patient_key"])
    op.create_index("ix_audit_record_card_uuid", "audit_record", ["card_uuid"])
    op.create_table(
        "audit_card",
        sa.Column("card_uuid", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),  # derived index, no FK: records are the truth
        sa.Column("rule_id", sa.String(128)),
        sa.Column("rule_version", sa.String(32)),
        sa.PrimaryKeyConstraint("card_uuid", "seq"),
    )


def downgrade() -> None:
    op.drop_table("audit_card")
    op.drop_table("audit_record")
    op.drop_table("audit_chain_head")
