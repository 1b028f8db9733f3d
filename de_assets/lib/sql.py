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


def insert_rows(con, table: str, columns: list[str], rows: list) -> None:
    """INSERT many rows (sequences in `columns` order) in one statement: each column is bound as one
    list and unnested (DuckDB's executemany runs the statement once per row, ~1 ms each)."""
    if not rows:
        return
    names = ", ".join(ident(c) for c in columns)
    lists = ", ".join(f"unnest(${i + 1})" for i in range(len(columns)))
    con.execute(f"INSERT INTO {table} ({names}) SELECT {lists}", [list(col) for col in zip(*rows)])


def copy_rows(src, dst, table: str, where: str = "true", params: list | None = None, into: str | None = None) -> None:
    """Insert into ``into`` (default ``table``) of connection ``dst`` the rows of ``table`` in connection
    ``src`` matching ``where``, by column name, through Arrow (two DuckDB connections share no tables)."""
    insert_arrow(dst, into or table, src.sql(f"SELECT * FROM {table} WHERE {where}", params=params or []).to_arrow_table())


def insert_arrow(con, table: str, rows, where: str = "true", params: list | None = None) -> None:
    """Insert the rows of Arrow table ``rows`` matching ``where`` into ``table`` of connection ``con``, by
    column name."""
    con.register("_arrow_rows", rows)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _arrow_rows WHERE {where}", params or [])
    finally:
        con.unregister("_arrow_rows")
