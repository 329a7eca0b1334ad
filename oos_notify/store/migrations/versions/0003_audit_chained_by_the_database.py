"""audit entries chained by PostgreSQL as each transaction commits

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 11:40:00

Writers on PostgreSQL insert their audit entries with their content's canonical JSON (without
the hash before it) in ``entry_hash``, an empty ``prev_hash`` and a provisional negative number
(``-nextval``); this deferred trigger numbers them one by one, in the order they were inserted,
and chains them to the head while the transaction commits, with the same SHA-256 formula the
service uses (``audit._link``), so ``audit verify`` is unchanged. The head's row is locked only
inside the commit. Nothing changes on SQLite.
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
    before text;
    digest text;
BEGIN
    SELECT value INTO STRICT head FROM service_values
        WHERE name = 'audit_chain_head' FOR UPDATE;
    number := split_part(head, ' ', 1)::integer + 1;
    before := split_part(head, ' ', 2);
    digest := encode(sha256(convert_to('["' || before || '",' || NEW.entry_hash, 'UTF8')), 'hex');
    UPDATE audit_entries SET seq = number, prev_hash = before, entry_hash = digest
        WHERE seq = NEW.seq;
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
