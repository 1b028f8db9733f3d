import hashlib
import hmac
import json

import duckdb
import pytest

from de_assets.lib import privacy


@pytest.fixture
def con():
    c = duckdb.connect()
    privacy.install_macros(c, "k3y")
    yield c
    c.close()


def one(con, sql, *params):
    return con.execute(sql, list(params)).fetchone()[0]


@pytest.mark.parametrize("key", ["k3y", "x" * 100])  # short key, and one longer than the SHA-256 block
def test_sql_pseudonym_is_keyed_hmac_sha256(key):
    c = duckdb.connect()
    privacy.install_macros(c, key)
    expected = hmac.new(key.encode(), b"cus_4821", hashlib.sha256).hexdigest()[:32]
    assert one(c, "SELECT pseudonym('cus_4821')") == expected == privacy.pseudonymize(key, "cus_4821")


def test_pseudonym_depends_on_key_and_ignores_blank(con):
    other = duckdb.connect()
    privacy.install_macros(other, "another")
    assert one(con, "SELECT pseudonym('u1')") != one(other, "SELECT pseudonym('u1')")
    assert one(con, "SELECT pseudonym(' u1 ')") == one(con, "SELECT pseudonym('u1')")
    assert one(con, "SELECT pseudonym('')") is None
    assert one(con, "SELECT pseudonym(NULL)") is None


@pytest.mark.parametrize(
    "ip, truncated",
    [("198.51.100.23", "198.51.100.0"), ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),
     ("2001:db8::1", "2001:db8::"), ("::1", "::"), ("not-an-ip", None), (None, None)],
)
def test_truncate_ip(con, ip, truncated):
    assert one(con, "SELECT truncate_ip(?)", ip) == truncated


def test_scrub_redacts_emails_and_full_ips_but_keeps_other_text(con):
    text = '{"note":"write to jane.doe+x@mail.example.co.uk","ip":"10.1.2.3","v":"1.70.0","t":"09:14:04"}'
    assert one(con, "SELECT scrub(?)", text) == '{"note":"write to [email]","ip":"10.1.2.0","v":"1.70.0","t":"09:14:04"}'
    assert one(con, "SELECT scrub('a 2001:db8:85a3:8d3:1319:8a2e:370:7348 b')") == "a 2001:db8:85a3:: b"


def test_strip_trait_pii_keeps_non_pii_traits(con):
    out = one(con, """SELECT strip_trait_pii('{"traits":{"email":"a@b.co","name":"A","plan":"pro"},"x":1}'::JSON)""")
    assert json.loads(out) == {"traits": {"plan": "pro"}, "x": 1}
    assert one(con, """SELECT strip_trait_pii('{"x":1}'::JSON)""") == '{"x":1}'


@pytest.mark.parametrize("text, scrubbed", [
    ("x 2001:db8:85a3::8a2e:370:7334 y", "x 2001:db8:85a3:: y"),          # compressed, /48 kept
    ("[2001:db8:1234:5678::1]:443", "[2001:db8:1234::]:443"),
    ('"ip":"2001:db8::1"', '"ip":"2001:db8::"'),                          # fewer than 3 groups before ::
    ("fe80::1ff:fe23:4567:890a%eth0", "fe80::%eth0"),
    ("at ::ffff:198.51.100.23.", "at ::ffff:198.51.100.0."),               # IPv4-mapped
    ("loopback ::1 end", "loopback :: end"),
    ("2001:db8:85a3::", "2001:db8:85a3::"),                                # already truncated: unchanged
    ("std::string at 09:14:04, 2026-11-01T10:00:00Z", "std::string at 09:14:04, 2026-11-01T10:00:00Z"),
])
def test_scrub_truncates_every_ipv6_form(con, text, scrubbed):
    assert one(con, "SELECT scrub(?)", text) == scrubbed


def test_no_raw_pii_sees_compressed_ipv6(con):
    from de_assets.lib.quality import no_raw_pii
    from de_assets.lib.tables import QUARANTINE_EVENTS, ensure_tables

    ensure_tables(con)
    con.execute("INSERT INTO quarantine.events (arrival_date, source_file, line_no, reason, raw_row) "
                "VALUES ('2026-11-01', 'f', 1, 'r', '{\"note\": \"from 2001:db8:85a3::8a2e:370:7334\"}')")
    passed, meta = no_raw_pii(con, QUARANTINE_EVENTS, __import__("datetime").date(2026, 11, 1),
                              __import__("datetime").date(2026, 11, 1))
    assert not passed and meta["rows_with_full_ip"] == 1


@pytest.mark.parametrize("text, emails, ips", [
    ("write to jane.doe@example.com", 1, 0),
    ("from 203.0.113.77", 0, 1),
    ("from 2001:0db8:85a3:0000:0000:8a2e:0370:7334", 0, 1),
    ("from 2001:db8::1", 0, 1),           # only the `::` pattern sees this one
    ("from ::ffff:198.51.100.9", 0, 1),   # IPv4-mapped: the IPv4 pattern
    ("from 203.0.113.0 and 2001:db8:85a3::/48 at 12:30:45", 0, 0),  # truncated forms, a time
])
def test_no_raw_pii_counts_each_form_once_in_both_forms_of_the_rule(con, text, emails, ips):
    """The rule's guarded regexes (`quality._PII_COUNTS`) see every form, per range and per day."""
    from datetime import date

    from de_assets.lib.quality import no_raw_pii
    from de_assets.lib.tables import QUARANTINE_EVENTS, ensure_tables

    ensure_tables(con)
    day = date(2026, 11, 1)
    con.execute("INSERT INTO quarantine.events (arrival_date, source_file, line_no, reason, raw_row) "
                "VALUES (?, 'f', 1, 'r', ?), (?, 'f', 2, 'r', '{\"note\": \"nothing here\"}')",
                [day, f'{{"note": "{text}"}}', day])
    passed, meta = no_raw_pii(con, QUARANTINE_EVENTS, day, day)
    assert (meta["rows_with_email"], meta["rows_with_full_ip"]) == (emails, ips)
    assert passed == (emails + ips == 0)
    assert no_raw_pii.by_day(con, QUARANTINE_EVENTS, day, day) == {day: (passed, meta)}
