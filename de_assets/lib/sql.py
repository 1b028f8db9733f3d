"""SQL text helpers shared by the core: quoting for the few places DuckDB takes no parameter
(file paths in COPY / read_*, names, literal lists baked into a query) and one transaction block.

Values that DuckDB can bind are bound as parameters; these are for the rest.
"""

from __future__ import annotations

from contextlib import contextmanager


def literal(value) -> str:
    """``value`` (a str, or a path: anything with a str form) as a SQL string literal: ``it's`` -> ``'it''s'``."""
    return "'" + str(value).replace("'", "''") + "'"


def ident(name: str) -> str:
    """``name`` as a quoted SQL identifier: ``a"b`` -> ``"a""b"``."""
    return '"' + name.replace('"', '""') + '"'


@contextmanager
def transaction(con):
    """``with transaction(con): ...`` runs the block in one transaction: COMMIT when it ends,
    ROLLBACK (and re-raise) when it raises."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
