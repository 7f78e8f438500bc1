"""imports

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import emailkit.db.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

# Deep merge of two JSON objects, the second winning (same result as SQLite's json_patch for the null-free
# documents imports produce): an import that sets `address.zip` keeps an existing `address.city`.
JSON_MERGE_FUNCTION = """
CREATE OR REPLACE FUNCTION emailkit_json_merge(base jsonb, patch jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN base IS NULL OR jsonb_typeof(base) <> 'object' OR jsonb_typeof(patch) <> 'object' THEN patch
    ELSE base || COALESCE((
      SELECT jsonb_object_agg(
        p.key,
        CASE
          WHEN jsonb_typeof(base -> p.key) = 'object' AND jsonb_typeof(p.value) = 'object'
          THEN emailkit_json_merge(base -> p.key, p.value)
          ELSE p.value
        END
      )
      FROM jsonb_each(patch) AS p
    ), '{}'::jsonb)
  END
$$
"""


def upgrade() -> None:
    op.create_table(
        "imports",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "QUEUED", "RUNNING", "FINISHED", "FAILED", name="importstatus", native_enum=False, length=24
            ),
            nullable=False,
        ),
        sa.Column("source_name", sa.String(length=255), nullable=False),
        sa.Column("source_bytes", BIGINT, nullable=False),
        sa.Column("options", JSON, nullable=False),
        sa.Column("list_ids", JSON, nullable=False),
        sa.Column(
            "mode",
            sa.Enum("UPSERT", "SKIP_EXISTING", name="importmode", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column("total", BIGINT, nullable=False),
        sa.Column("processed", BIGINT, nullable=False),
        sa.Column("inserted", BIGINT, nullable=False),
        sa.Column("updated", BIGINT, nullable=False),
        sa.Column("skipped", BIGINT, nullable=False),
        sa.Column("failed", BIGINT, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", emailkit.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imports")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("imports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_imports_status"), ["status"], unique=False)

    op.create_table(
        "import_chunks",
        sa.Column("import_id", BIGINT, nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["import_id"], ["imports.id"], name=op.f("fk_import_chunks_import_id_imports"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("import_id", "seq", name=op.f("pk_import_chunks")),
    )
    op.create_table(
        "import_errors",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("import_id", BIGINT, nullable=False),
        sa.Column("row", BIGINT, nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["import_id"], ["imports.id"], name=op.f("fk_import_errors_import_id_imports"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_errors")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("import_errors", schema=None) as batch_op:
        batch_op.create_index("ix_import_errors_import_id_row", ["import_id", "row"], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(JSON_MERGE_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS emailkit_json_merge(jsonb, jsonb)")
    with op.batch_alter_table("import_errors", schema=None) as batch_op:
        batch_op.drop_index("ix_import_errors_import_id_row")
    op.drop_table("import_errors")
    op.drop_table("import_chunks")
    with op.batch_alter_table("imports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_imports_status"))
    op.drop_table("imports")
