"""audit entries spread over chains side by side

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 11:45:33.984698

Each writing transaction appends its entries to one of many chains (``audit_entries.chain``, its
head in ``service_values`` as ``audit_chain_head/<chain>``), so writers seldom wait for the same
head; entries keep one numbering across the chains, and the number is hashed with each entry.
Entries written before keep ``chain`` NULL: their single chain is still verified, and every new
chain starts from its end. On PostgreSQL the trigger of 0003 now numbers entries from the table's
own sequence and chains them to the head of the chain the transaction chose.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHAIN = """
CREATE OR REPLACE FUNCTION oos_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head_name text := 'audit_chain_head/' || NEW.chain;
    head text;
    number integer;
    before text;
    digest text;
BEGIN
    -- One entry at a time, in the order the transaction inserted them, each found by its own
    -- provisional number: a search for every unnumbered entry would wade through the dead index
    -- entries that earlier renumberings left behind.
    SELECT value INTO STRICT head FROM service_values WHERE name = head_name FOR UPDATE;
    number := nextval('audit_entries_seq_seq');  -- under the head's lock: in order on its chain
    before := split_part(head, ' ', 2);
    UPDATE audit_entries
        SET seq = number,
            prev_hash = before,
            entry_hash = encode(
                sha256(convert_to(
                    '["' || before || '",' || number || ',' || NEW.chain || ',' || NEW.entry_hash,
                    'UTF8'
                )),
                'hex'
            )
        WHERE seq = NEW.seq
        RETURNING audit_entries.entry_hash INTO digest;
    UPDATE service_values SET value = number || ' ' || digest WHERE name = head_name;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chain", sa.Integer(), nullable=True))
        batch_op.create_index("ix_audit_entries_chain_seq", ["chain", "seq"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        # Entry numbers now come from the table's own sequence, which nothing used before.
        op.execute(
            "SELECT setval('audit_entries_seq_seq', coalesce(max(seq), 0) + 1, false)"
            " FROM audit_entries"
        )
        op.execute(CHAIN)
