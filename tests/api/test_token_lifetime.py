"""Tokens expire and can be rotated (issue 18, finding 11): an expiry per token (90 days unless
given), an expired token refused with a 401 that says so, `token rotate` replacing the secret
(the old one refused at once), the expiry given to tokens made before there was one."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.tokens import DEFAULT_LIFETIME, create_token, parse_lifetime
from clausewatch.cli import main
from store.migrate import migrate
from tests.api.conftest import auth

pytestmark = pytest.mark.integration


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Runs `clausewatch ARGS` (each argument split at spaces): exit code, stdout, stderr."""
    code = main([word for arg in args for word in arg.split(" ")])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_token_lives_90_days_unless_told_and_is_refused_once_expired(
    client: TestClient, api_database_url: str
) -> None:
    assert dt.timedelta(days=90) == DEFAULT_LIFETIME
    with psycopg.connect(api_database_url) as conn:
        token, record = create_token(conn, "viewer", ("site-a",), "default lifetime")
        (now,) = conn.execute("SELECT now()").fetchone() or (None,)
    assert now is not None
    assert abs(record.expires_at - (now + DEFAULT_LIFETIME)) < dt.timedelta(minutes=1)
    assert client.get("/api/v1/alerts", headers=auth(token)).status_code == 200

    with psycopg.connect(api_database_url) as conn:
        conn.execute(
            "UPDATE api_tokens SET created_at = now() - interval '91 days',"
            " expires_at = now() - interval '1 day' WHERE id = %s",
            (record.id,),
        )
    refused = client.get("/api/v1/alerts", headers=auth(token))
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "expired" in refused.json()["detail"]


def test_token_create_with_expires_in_list_and_rotate(
    client: TestClient, api_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"--database-url {api_database_url}"
    create = "token create --role facility_manager --site site-a --label 王工 --expires-in 30d"
    code, out, err = _cli(capsys, create, db)
    assert code == 0, err
    old = out.strip()
    old_id = int(err.split()[1])
    assert "expires" in err
    with psycopg.connect(api_database_url) as conn:
        row = conn.execute(
            "SELECT expires_at - created_at FROM api_tokens WHERE id = %s", (old_id,)
        ).fetchone()
    assert row is not None and row[0] == dt.timedelta(days=30)
    assert client.get("/api/v1/alerts", headers=auth(old)).status_code == 200

    code, out, err = _cli(capsys, f"token rotate {old_id}", db)
    assert code == 0, err
    new = out.strip()
    assert new.startswith("cw_") and new != old
    new_id = int(err.split()[1])
    assert new_id != old_id and f"replaces token {old_id}" in err

    # The old secret is refused at once; the new one has the old one's role, sites and label.
    assert client.get("/api/v1/alerts", headers=auth(old)).status_code == 401
    assert client.get("/api/v1/alerts", params={"site": "site-a"}, headers=auth(new)).json()
    assert (
        client.get("/api/v1/alerts", params={"site": "site-b"}, headers=auth(new)).status_code
        == 403
    )
    with psycopg.connect(api_database_url) as conn:
        rows = conn.execute(
            "SELECT id, role, sites, label, expires_at - created_at, replaced_by,"
            " revoked_at IS NOT NULL FROM api_tokens WHERE id IN (%s, %s) ORDER BY id",
            (old_id, new_id),
        ).fetchall()
    assert rows == [
        (old_id, "facility_manager", ["site-a"], "王工", dt.timedelta(days=30), new_id, True),
        (new_id, "facility_manager", ["site-a"], "王工", dt.timedelta(days=30), None, False),
    ]

    code, out, _ = _cli(capsys, "token list", db)
    assert code == 0
    listed = {line.split("\t")[0]: line for line in out.splitlines()}
    assert "expires" in listed[str(new_id)] and f"rotated to {new_id}" in listed[str(old_id)]

    # A revoked (here: rotated) token cannot be rotated again; an unknown id neither.
    assert _cli(capsys, f"token rotate {old_id}", db)[0] == 1
    assert _cli(capsys, "token rotate 999999", db)[0] == 1
    # A shorter lifetime for the rotated token.
    code, _, err = _cli(capsys, f"token rotate {new_id} --expires-in 12h", db)
    assert code == 0, err


@pytest.mark.parametrize("text", ["0d", "-3d", "30", "30x", "d", "3651d", "1e3d", ""])
def test_bad_lifetimes_are_refused(
    text: str, api_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError):
        parse_lifetime(text)
    code, out, err = _cli(
        capsys,
        "token create --role viewer",
        f"--expires-in={text}",
        "--database-url",
        api_database_url,
    )
    assert code == 2 and not out and "--expires-in" in err


def test_lifetimes() -> None:
    assert parse_lifetime("30d") == dt.timedelta(days=30)
    assert parse_lifetime("12h") == dt.timedelta(hours=12)
    assert parse_lifetime("90m") == dt.timedelta(minutes=90)
    assert parse_lifetime("2w") == dt.timedelta(weeks=2)
    assert parse_lifetime("3650d") == dt.timedelta(days=3650)


def test_tokens_made_before_expiry_existed_get_one(empty_database_url: str) -> None:
    """The upgrade gives old tokens 90 days from their creation, but never less than 30 days
    from the upgrade, so nobody is cut off without notice."""
    migrate(empty_database_url, target=40)
    with psycopg.connect(empty_database_url) as conn:
        for digest, age in ((b"a" * 32, "1 day"), (b"b" * 32, "400 days")):
            conn.execute(
                "INSERT INTO api_tokens (token_hash, role, created_at)"
                " VALUES (%s, 'admin', now() - %s::interval)",
                (digest, age),
            )
    migrate(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute(
            "SELECT round(extract(epoch FROM expires_at - now()) / 86400)"
            " FROM api_tokens ORDER BY token_hash"
        ).fetchall()
    assert [int(r[0]) for r in rows] == [89, 30]
