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
