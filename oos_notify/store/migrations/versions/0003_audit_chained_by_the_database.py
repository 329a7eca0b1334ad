"""audit entries chained by PostgreSQL as each transaction commits

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 11:40:00

Writers on PostgreSQL insert their audit entries with their content's canonical JSON (without
the hash before it) in ``entry_hash``, an empty ``prev_hash`` and a provisional negative number
(``-nextval``, so the most recent is the lowest); this deferred trigger numbers them in the order
they were recorded and chains them to the head while the transaction commits, with the same
SHA-256 formula the service uses (``audit._link``), so ``audit verify`` is unchanged. The head's
row is locked only inside the commit. Nothing changes on SQLite.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHAIN = """
CREATE FUNCTION oos_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head text;
    number integer;
    digest text;
    entry record;
BEGIN
    -- The first row's trigger chains all of the transaction's entries (the only ones it can
    -- see unnumbered); the triggers of the other rows find nothing left to do.
    PERFORM 1 FROM audit_entries WHERE seq < 0 LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT value INTO STRICT head FROM service_values
        WHERE name = 'audit_chain_head' FOR UPDATE;
    number := split_part(head, ' ', 1)::integer;
    digest := split_part(head, ' ', 2);
    FOR entry IN SELECT seq, entry_hash FROM audit_entries WHERE seq < 0 ORDER BY seq DESC LOOP
        number := number + 1;
        UPDATE audit_entries
            SET seq = number,
                prev_hash = digest,
                entry_hash = encode(
                    sha256(convert_to('["' || digest || '",' || entry.entry_hash, 'UTF8')), 'hex'
                )
            WHERE seq = entry.seq
            RETURNING audit_entries.entry_hash INTO digest;
    END LOOP;
    UPDATE service_values SET value = number || ' ' || digest WHERE name = 'audit_chain_head';
    RETURN NULL;
END
$$
"""
TRIGGER = """
CREATE CONSTRAINT TRIGGER audit_entries_chain AFTER INSERT ON audit_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.seq < 0)
    EXECUTE FUNCTION oos_audit_chain()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE SEQUENCE audit_entries_pending_seq")
    op.execute(CHAIN)
    op.execute(TRIGGER)
