"""Pseudonymization and PII scrubbing as DuckDB macros, so they run inside the scan.

* ``pseudonym(x)``   keyed HMAC-SHA256 of a user id (hex, 128 bits), computed in SQL;
                     equal to ``hmac.new(key, x, sha256).hexdigest()[:32]``.
* ``truncate_ip(x)`` IPv4 -> /24 (last octet 0), IPv6 -> /48; anything else -> NULL.
* ``scrub(x)``       redacts e-mail addresses and truncates full IPv4/IPv6 addresses in free text.
* ``strip_trait_pii(j)`` removes ``PII_TRAIT_KEYS`` (e-mail, names, phone, ...) from ``j.traits``.

The key never appears in a persisted object: the macros are TEMP, per connection.
"""

from __future__ import annotations

import hashlib
import hmac

EMAIL_RE = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
IPV4_RE = r"\b(\d{1,3}\.\d{1,3}\.\d{1,3})\.\d{1,3}\b"
# IPv6 in free text, in every written form, is truncated to its /48 network (three groups):
# * three groups with more after them (full or compressed): the first three are kept (an address
#   starts after a character that is neither hex nor `:`, so its tail is never taken for one);
IPV6_RE = r"(^|[^0-9A-Fa-f:])([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}):[0-9A-Fa-f:]*[0-9A-Fa-f]"
# * at most two groups, then `::` and a host part (`2001:db8::1`, `::1`, `fe80::1:2`): what precedes
#   `::` is kept. The characters around the address are matched too (and put back), so an
#   IPv4-mapped address (`::ffff:192.0.2.1`, whose IPv4 part IPV4_RE truncates) is left whole.
IPV6_SHORT_RE = (
    r"(^|[^0-9A-Fa-f:])((?:[0-9A-Fa-f]{1,4}:)?[0-9A-Fa-f]{0,4})::[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,5}"
    r"([^0-9A-Fa-f:.]|$)"
)
REDACTED_EMAIL = "[email]"
# Cheap pre-test: only text that may hold an e-mail or an IP address pays for the replacements.
# An IPv4 address ending in .0 is already truncated (a /24 network), so it does not count.
SUSPECT_RE = (
    r"@|\d\.\d{1,3}\.\d{1,3}\.(?:[1-9]|0\d)"
    r"|[0-9A-Fa-f]:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]|::[0-9A-Fa-f]"
)

PII_TRAIT_KEYS = (
    "email",
    "name",
    "firstName",
    "lastName",
    "first_name",
    "last_name",
    "phone",
    "address",
    "username",
    "birthday",
)
PSEUDONYM_HEX_CHARS = 32
# Columns holding a person's pseudonym: kept out of previews (Dagster's event storage) and of the
# lake's manifest statistics, so forget-user can erase a person everywhere.
PSEUDONYM_COLUMNS = ("user_key", "user_id", "anonymous_id")


def pseudonymize(key: str, value: str) -> str:
    """Reference implementation of the SQL ``pseudonym`` macro (used by tests and forget-user)."""
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]


def _pads(key: str) -> tuple[str, str]:
    k = key.encode()
    if len(k) > 64:
        k = hashlib.sha256(k).digest()
    k = k.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in k).hex(), bytes(b ^ 0x5C for b in k).hex()


def install_macros(con, key: str) -> None:
    """Define the privacy macros on a DuckDB connection (TEMP: gone when it closes)."""
    ipad, opad = _pads(key)
    trait_patch = '{"traits":{' + ",".join(f'"{k}":null' for k in PII_TRAIT_KEYS) + "}}"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP MACRO pseudonym(x) AS
            CASE WHEN nullif(trim(x), '') IS NULL THEN NULL ELSE
            left(sha256(unhex('{opad}') || unhex(sha256(unhex('{ipad}') || encode(trim(x))))),
                 {PSEUDONYM_HEX_CHARS}) END;
        CREATE OR REPLACE TEMP MACRO truncate_ip(x) AS
            CASE
              WHEN regexp_full_match(trim(x), '\\d{{1,3}}\\.\\d{{1,3}}\\.\\d{{1,3}}\\.\\d{{1,3}}')
                THEN regexp_replace(trim(x), '\\.\\d{{1,3}}$', '.0')
              WHEN contains(x, ':')  -- IPv6: keep at most the first three groups before any '::'
                THEN array_to_string(string_split(split_part(trim(x), '::', 1), ':')[1:3], ':') || '::'
              ELSE NULL
            END;
        CREATE OR REPLACE TEMP MACRO scrub(x) AS
            CASE WHEN regexp_matches(x, '{SUSPECT_RE}') THEN
              regexp_replace(
                regexp_replace(
                  regexp_replace(
                    CASE WHEN contains(x, '@') THEN regexp_replace(x, '{EMAIL_RE}', '{REDACTED_EMAIL}', 'g') ELSE x END,
                    '{IPV4_RE}', '\\1.0', 'g'),
                  '{IPV6_RE}', '\\1\\2::', 'g'),
                '{IPV6_SHORT_RE}', '\\1\\2::\\3', 'g')
            ELSE x END;
        CREATE OR REPLACE TEMP MACRO strip_trait_pii(j) AS
            CASE WHEN NOT contains(j::VARCHAR, '"traits"') THEN j
                 WHEN json_type(j, '$.traits') = 'OBJECT' THEN json_merge_patch(j, '{trait_patch}')
                 ELSE j END;
        """
    )
