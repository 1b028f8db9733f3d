"""SQL that renders the simulation's numeric columns into text: Segment NDJSON lines, a JSON
array, flat CSV/Parquet columns, and request-log lines. The queries read a registered table
``src`` (one row per record); constant string lists are DuckDB variables (``SqlVariables``)."""

from __future__ import annotations

import json

import duckdb

from de_assets.generator.config import ExperimentSpec
from de_assets.lib.sql import literal as sql_literal
from de_assets.generator.vocabulary import (
    APP_CTX,
    BAD_LATENCY,
    BAD_REVENUE,
    BOGUS_TYPES,
    CAMPAIGNS,
    CATALOG,
    D_MALFORMED,
    D_NO_MID,
    D_NO_TS,
    D_NO_USER,
    D_PROPS_STR,
    D_REV_STR,
    D_TS_NUM,
    D_UNKNOWN,
    EMAIL_DOMAINS,
    ENDPOINTS,
    FIRST_NAMES,
    K_ADD,
    K_CHECKOUT,
    K_EXP,
    K_IDENTIFY,
    K_ORDER,
    K_PAGE,
    K_PV,
    K_SCREEN,
    K_SIGNUP,
    KIND_EVENT,
    KIND_TYPE,
    LAST_NAMES,
    LOCALES,
    PATHS,
    PLANS,
    R_LAT_STR,
    R_MALFORMED,
    R_NO_SERVICE,
    REFERRERS,
    SCREENS,
    SERVICES,
    SIGNUP_METHODS,
    SITE,
    TITLES,
    UAS,
)

# NDJSON lines go through the CSV writer: one column, no header, no quoting -> written verbatim.
LINES_COPY_OPTS = "(FORMAT csv, HEADER false, QUOTE '', ESCAPE '')"

MID_SQL = (
    "printf('ajs-next-%08x%08x%08x%08x', (mid_a >> 32) & 4294967295, mid_a & 4294967295, "
    "(mid_b >> 32) & 4294967295, mid_b & 4294967295)"
)
ANON_SQL = (
    "printf('%08x-%04x-4%03x-%04x-%012x', (a1 >> 32) & 4294967295, (a1 >> 16) & 65535, "
    "a1 & 4095, ((a2 >> 48) & 16383) | 32768, a2 & 281474976710655)"
)
USERID_SQL = "('cus_' || (100000 + uidx)::VARCHAR)"
IP_SQL = (
    "(((ip >> 24) & 255)::VARCHAR || '.' || ((ip >> 16) & 255)::VARCHAR || '.' || "
    "((ip >> 8) & 255)::VARCHAR || '.' || (ip & 255)::VARCHAR)"
)


def json_sql_literal(s: str) -> str:
    """SQL literal of ``s`` escaped for use inside a JSON string."""
    return sql_literal(json.dumps(s, ensure_ascii=False)[1:-1])


class SqlVariables:
    """Constant string lists for the SQL, held as DuckDB variables (``getvariable``): binding a
    query that inlines big list literals costs ~50 ms per COPY, a variable costs ~nothing."""

    def __init__(self) -> None:
        self.literals: dict[str, str] = {}

    def __call__(self, items: list[str], json_escape: bool = False) -> str:
        """SQL expression of the list ``items`` (one variable per distinct list)."""
        quote = json_sql_literal if json_escape else sql_literal
        literal = "[" + ",".join(quote(s) for s in items) + "]"
        for name, lit in self.literals.items():
            if lit == literal:
                return f"getvariable('{name}')"
        name = f"gen_v{len(self.literals)}"
        self.literals[name] = literal
        return f"getvariable('{name}')"

    def install(self, con: duckdb.DuckDBPyConnection) -> None:
        for name, literal in self.literals.items():
            con.execute(f"SET VARIABLE {name} = {literal}::VARCHAR[]")


def iso_sql(col: str) -> str:
    return f"strftime(epoch_ms({col}), '%Y-%m-%dT%H:%M:%S.%gZ')"


def money_sql(col: str) -> str:
    return f"printf('%d.%02d', {col} // 100, {col} % 100)"


def _truncated_line_sql(malformed_code: int, line_sql: str, source: str) -> str:
    """Lines of ``source``; a malformed record's line is cut at ``cut`` per mille of its length."""
    return (
        f"SELECT CASE WHEN dirt = {malformed_code} "
        f"THEN left(line, greatest(8, (length(line) * cut) // 1000)) ELSE line END "
        f"FROM (SELECT {line_sql} AS line, dirt, cut FROM {source})"
    )


# ---- events --------------------------------------------------------------------------------


def _person_sql(var: SqlVariables) -> tuple[str, str]:
    """The user's e-mail and full name."""
    first_lower = var([s.lower() for s in FIRST_NAMES])
    last_lower = var([s.lower() for s in LAST_NAMES])
    email = (
        f"({first_lower}[first + 1] || '.' || {last_lower}[last + 1] || "
        f"CASE WHEN num > 0 THEN num::VARCHAR ELSE '' END || '@' || {var(EMAIL_DOMAINS)}[dom + 1])"
    )
    fullname = f"({var(FIRST_NAMES)}[first + 1] || ' ' || {var(LAST_NAMES)}[last + 1])"
    return email, fullname


def _page_sql(var: SqlVariables) -> tuple[str, str]:
    """The page object's members (path, referrer, title, url) and the campaign JSON list."""
    path = f"{var(PATHS)}[page + 1]"
    title = f"{var(TITLES)}[page + 1]"
    ref = f"{var(REFERRERS)}[ref + 1]"
    camp_qs = var([f"?utm_source={s}&utm_medium={m}&utm_campaign={n}" for s, m, n, _ in CAMPAIGNS])
    camp_json = var([f'{{"medium":"{m}","name":"{n}","source":"{s}"}}' for s, m, n, _ in CAMPAIGNS])
    url = (
        f"('{SITE}' || {path} || CASE WHEN pos0 = 1 AND camp >= 0 "
        f"THEN {camp_qs}[camp + 1] ELSE '' END)"
    )
    page_obj = (
        f"""'"path":"' || {path} || '","referrer":"' || {ref} || '","title":"' || {title}"""
        f""" || '","url":"' || {url} || '"'"""
    )
    return page_obj, camp_json


def _type_sql(var: SqlVariables) -> str:
    """The ``type`` field: unknown, padded (" Track", "TRACK", ...) or plain."""
    padded = []
    for t in KIND_TYPE:
        cap = t[0].upper() + t[1:]
        padded += [" " + cap, t.upper(), t + " ", "  " + cap + " "]
    return (
        f"CASE WHEN dirt = {D_UNKNOWN} THEN {var(BOGUS_TYPES)}[(mid_a & 3) + 1] "
        f"WHEN pad >= 0 THEN {var(padded)}[kind * 4 + pad + 1] "
        f"ELSE {var(KIND_TYPE)}[kind + 1] END"
    )


def _variant_sql(spec: ExperimentSpec, var: SqlVariables) -> tuple[str, str]:
    """Lists of the variant ids and display names (index ``var``)."""
    variants = var(list(spec.variants), json_escape=True)
    variant_names = var([v.replace("_", " ").replace("-", " ").capitalize() for v in spec.variants], True)
    return variants, variant_names


def _properties_sql(spec: ExperimentSpec, var: SqlVariables, page_obj: str, email: str,
                    variants: str, variant_names: str) -> str:
    products = f"'[{{' || {var(CATALOG['line'])}[prod + 1] || ',\"quantity\":' || qty::VARCHAR || '}}]'"
    money_rev, money_tot = money_sql("rev_c"), money_sql("tot_c")
    money_ship, money_tax, money_disc = money_sql("ship_c"), money_sql("tax_c"), money_sql("disc_c")
    exp_id, exp_name = json_sql_literal(spec.experiment_id), json_sql_literal(spec.experiment_name)
    return f"""(CASE kind
        WHEN {K_PAGE} THEN '{{' || {page_obj}
        WHEN {K_SCREEN} THEN '{{"name":"' || {var(SCREENS)}[screen + 1] || '"'
        WHEN {K_PV} THEN '{{' || {var(CATALOG['view'])}[prod + 1]
        WHEN {K_ADD} THEN '{{"cart_id":"cart-' || sess::VARCHAR || '",' || {var(CATALOG['view'])}[prod + 1]
            || ',"quantity":' || qty::VARCHAR
        WHEN {K_CHECKOUT} THEN '{{"order_id":"ord-' || sess::VARCHAR || '","value":' || {money_rev}
            || ',"revenue":' || {money_rev} || ',"currency":"EUR","products":' || {products}
        WHEN {K_ORDER} THEN '{{"order_id":"ord-' || sess::VARCHAR || '","total":' || {money_tot}
            || CASE WHEN has_rev = 0 THEN ''
                    WHEN dirt = {D_REV_STR} THEN ',"revenue":"' || {var(BAD_REVENUE)}[(mid_a & 3) + 1] || '"'
                    ELSE ',"revenue":' || {money_rev} END
            || ',"shipping":' || {money_ship} || ',"tax":' || {money_tax} || ',"discount":' || {money_disc}
            || ',"coupon":' || CASE WHEN coupon = 1 THEN '"SAVE10"' ELSE 'null' END
            || ',"currency":"EUR","products":' || {products}
        WHEN {K_SIGNUP} THEN '{{"method":"' || {var(SIGNUP_METHODS)}[method + 1] || '"'
        WHEN {K_EXP} THEN '{{"experiment_id":"' || {exp_id} || '","experiment_name":"' || {exp_name}
            || '","variant_id":"' || {variants}[var + 1] || '","variant_name":"' || {variant_names}[var + 1] || '"'
        ELSE '{{' END
        || CASE pii WHEN 1 THEN ',"note":"contact ' || {email} || '"'
                    WHEN 2 THEN ',"client_ip":"' || {IP_SQL} || '"' ELSE '' END
        || '}}')"""


def _context_sql(var: SqlVariables, page_obj: str, camp_json: str, email: str, fullname: str) -> str:
    app_device = var([a for a, _, _ in APP_CTX])
    app_library = var([b for _, b, _ in APP_CTX])
    app_os = var([c for _, _, c in APP_CTX])
    locale = f"{var(LOCALES)}[loc + 1]"
    return f"""('{{' || CASE WHEN plat = 0 THEN
            CASE WHEN camp >= 0 THEN '"campaign":' || {camp_json}[camp + 1] || ',' ELSE '' END
            || '"ip":"' || {IP_SQL} || '","library":{{"name":"analytics.js","version":"next-1.70.0"}},"locale":"'
            || {locale} || '","page":{{' || {page_obj} || '}}'
        ELSE {app_device}[plat] || ',"ip":"' || {IP_SQL} || '",' || {app_library}[plat]
            || ',"locale":"' || {locale} || '",' || {app_os}[plat]
        END
        || CASE WHEN kind = {K_IDENTIFY}
                THEN ',"traits":{{"email":"' || {email} || '","name":"' || {fullname} || '"}}' ELSE '' END
        || ',"userAgent":"' || {var(UAS)}[ua + 1] || '"}}')"""


# The NDJSON object of one event, from the columns of the inner query of ``events_sql``.
_EVENT_LINE_SQL = f"""('{{'
        || CASE WHEN dirt = {D_NO_USER} THEN '' ELSE '"anonymousId":"' || anon || '",' END
        || '"channel":"' || CASE WHEN plat = 0 THEN 'client' ELSE 'mobile' END || '","context":' || ctx || ','
        || CASE WHEN kind >= {K_PV} THEN '"event":"' || event_s || '",' ELSE '' END
        || '"integrations":{{}},'
        || CASE WHEN dirt = {D_NO_MID} THEN '' ELSE '"messageId":"' || mid || '",' END
        || CASE WHEN dirt = {D_NO_TS} THEN '' WHEN dirt = {D_TS_NUM} THEN '"originalTimestamp":' || ts::VARCHAR || ','
                ELSE '"originalTimestamp":"' || ts_iso || '",' END
        || CASE WHEN kind = {K_IDENTIFY} THEN ''
                WHEN dirt = {D_PROPS_STR} THEN '"properties":' || to_json(props)::VARCHAR || ','
                ELSE '"properties":' || props || ',' END
        || '"receivedAt":"' || recv_iso || '","sentAt":"' || sent_iso || '",'
        || CASE WHEN dirt = {D_NO_TS} THEN '' WHEN dirt = {D_TS_NUM} THEN '"timestamp":' || ts::VARCHAR || ','
                ELSE '"timestamp":"' || ts_iso || '",' END
        || CASE WHEN kind = {K_IDENTIFY} THEN '"traits":' || traits || ',' ELSE '' END
        || '"type":"' || type_s || '","userId":'
        || CASE WHEN has_uid = 1 AND dirt <> {D_NO_USER} THEN '"' || uid || '"' ELSE 'null' END
        || ',"version":2}}')"""

# The flat (CSV / Parquet) columns of one event, from the same inner query.
_EVENT_FLAT_COLUMNS_SQL = f"""
        CASE WHEN dirt = {D_NO_MID} THEN NULL ELSE mid END AS "messageId",
        type_s AS "type",
        CASE WHEN kind >= {K_PV} THEN event_s END AS "event",
        CASE WHEN has_uid = 1 AND dirt <> {D_NO_USER} THEN uid END AS "userId",
        CASE WHEN dirt = {D_NO_USER} THEN NULL ELSE anon END AS "anonymousId",
        CASE WHEN dirt = {D_NO_TS} THEN NULL ELSE ts_iso END AS "timestamp",
        sent_iso AS "sentAt",
        recv_iso AS "receivedAt",
        CASE WHEN dirt = {D_NO_TS} THEN NULL ELSE ts_iso END AS "originalTimestamp",
        CASE WHEN kind = {K_IDENTIFY} THEN NULL ELSE props END AS "properties",
        ctx AS "context",
        traits AS "traits"
"""


def events_sql(spec: ExperimentSpec, var: SqlVariables) -> dict[str, str]:
    """Queries over ``src`` (one row per event) for each file kind: ``ndjson`` (one line per
    event, malformed ones cut short), ``json`` (the lines of one JSON array) and ``flat``."""
    email, fullname = _person_sql(var)
    page_obj, camp_json = _page_sql(var)
    variants, variant_names = _variant_sql(spec, var)
    type_sql = _type_sql(var)
    event_sql = f"{var(KIND_EVENT)}[kind + 1]"
    props = _properties_sql(spec, var, page_obj, email, variants, variant_names)
    ctx = _context_sql(var, page_obj, camp_json, email, fullname)
    traits = (
        f"""('{{"createdAt":"' || strftime(epoch_ms(created), '%Y-%m-%dT%H:%M:%SZ') || '","email":"' || {email}"""
        f""" || '","name":"' || {fullname} || '","plan":"' || {var(PLANS)}[plan + 1] || '"}}')"""
    )
    # inner query: compute each piece once
    inner = f"""SELECT dirt, cut, kind, rn, nrows,
        {MID_SQL} AS mid, {ANON_SQL} AS anon, {USERID_SQL} AS uid, has_uid, plat,
        {iso_sql('ts')} AS ts_iso, ts, {iso_sql('sent')} AS sent_iso, {iso_sql('recv')} AS recv_iso,
        {type_sql} AS type_s, {event_sql} AS event_s, {props} AS props, {ctx} AS ctx,
        CASE WHEN kind = {K_IDENTIFY} THEN {traits} END AS traits
      FROM src"""
    json_array = (
        f"SELECT CASE WHEN rn = 0 THEN '[' ELSE ',' END || line "
        f"|| CASE WHEN rn = nrows - 1 THEN ']' ELSE '' END "
        f"FROM (SELECT {_EVENT_LINE_SQL} AS line, rn, nrows FROM ({inner}))"
    )
    return {
        "ndjson": _truncated_line_sql(D_MALFORMED, _EVENT_LINE_SQL, f"({inner})"),
        "json": json_array,
        "flat": f"SELECT{_EVENT_FLAT_COLUMNS_SQL}      FROM ({inner})",
    }


# ---- request logs --------------------------------------------------------------------------


def requests_sql(ts_style: str, var: SqlVariables) -> dict[str, str]:
    """Queries over ``src`` (one row per request) for NDJSON lines and CSV columns; the NDJSON
    timestamp is ISO 8601 (``iso``), epoch ms (``ms``) or epoch seconds (``s``)."""
    svc = f"{var(SERVICES)}[svc + 1]"
    host = f"({svc} || '-' || printf('%02d', host + 1) || '.prod.internal')"
    method = f"{var([m for _, m, _ in ENDPOINTS])}[ep + 1]"
    endpoint = f"{var([p for _, _, p in ENDPOINTS])}[ep + 1]"
    lat_num = "((lat_t / 10.0)::DECIMAL(12, 1))::VARCHAR"
    bad_lat = f"{var(BAD_LATENCY)}[(rid & 3) + 1]"
    ts_iso = iso_sql("ts")
    ts_json = {
        "iso": f"('\"' || {ts_iso} || '\"')",
        "ms": "ts::VARCHAR",
        "s": "printf('%d.%03d', ts // 1000, ts % 1000)",
    }[ts_style]
    line = f"""('{{"timestamp":' || {ts_json}
        || CASE WHEN dirt = {R_NO_SERVICE} THEN '' ELSE ',"service":"' || {svc} || '"' END
        || ',"method":"' || {method} || '","endpoint":"' || {endpoint} || '","host":"' || {host}
        || '","status":' || status::VARCHAR
        || ',"latency_ms":' || CASE WHEN dirt = {R_LAT_STR} THEN '"' || {bad_lat} || '"' ELSE {lat_num} END
        || CASE WHEN cpu_t >= 0 THEN ',"cpu_pct":' || ((cpu_t / 10.0)::DECIMAL(5, 1))::VARCHAR ELSE '' END
        || CASE WHEN mem >= 0 THEN ',"memory_mb":' || mem::VARCHAR ELSE '' END
        || '}}')"""
    csv = f"""SELECT {ts_iso} AS "timestamp",
        CASE WHEN dirt = {R_NO_SERVICE} THEN NULL ELSE {svc} END AS service,
        {method} AS method, {endpoint} AS endpoint, {host} AS host, status,
        CASE WHEN dirt = {R_LAT_STR} THEN {bad_lat} ELSE {lat_num} END AS latency_ms,
        CASE WHEN cpu_t >= 0 THEN (cpu_t / 10.0)::DECIMAL(5, 1) END AS cpu_pct,
        CASE WHEN mem >= 0 THEN mem END AS memory_mb
      FROM src"""
    return {"ndjson": _truncated_line_sql(R_MALFORMED, line, "src"), "csv": csv}
