"""Record seals (HMAC with a key outside the database) and the shared JWT replay (jti) table.

`audit_record.seal` is HMAC-SHA256(seal key, seq + chain hash); records already in the log are sealed by
`AuditStore.migrate` in the same transaction as this upgrade (it holds the key, a migration does not).
`pacecds_jti` holds each accepted token's (iss, jti) until it expires, so that every host on one database
refuses a token replayed to any of them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_record") as batch:
        batch.add_column(sa.Column("seal", sa.String(64), nullable=True))
    op.create_table(
        "pacecds_jti",
        sa.Column("iss", sa.Text, nullable=False),
        sa.Column("jti", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("iss", "jti"),
    )
    op.create_index("ix_pacecds_jti_expires_at", "pacecds_jti", ["expires_at"])


def downgrade() -> None:
    op.drop_table("pacecds_jti")
    with op.batch_alter_table("audit_record") as batch:
        batch.drop_column("seal")
