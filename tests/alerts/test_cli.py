"""`clausewatch webhook add|change|list|allow|disallow|allowlist`: the URL and the secret come
from files and are never printed back (a generated secret once, at creation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from clausewatch.cli import main

pytestmark = pytest.mark.integration

TOKEN = "access_token=tok-cli-0123456789"


def test_webhook_add_change_and_list(
    conn: psycopg.Connection[Any],
    alerts_db_url: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    db = ["--database-url", alerts_db_url]
    (tmp_path / "url").write_text(f"https://oapi.example.com:8443/robot/send?{TOKEN}\n")
    (tmp_path / "secret").write_text("a-secret-the-receiver-knows-42\n")
    url_file = ["--url-file", str(tmp_path / "url")]
    add = ["webhook", "add", "sms-gw", *url_file, "--level", "1", *db]
    assert main([*add, "--secret-file", str(tmp_path / "secret")]) == 0
    assert main(["webhook", "add", "dingtalk", *url_file, "--party-only", *db]) == 0
    assert main(["webhook", "list", *db]) == 0
    out = capsys.readouterr().out
    assert "webhook 1 sms-gw: https://oapi.example.com:8443/…" in out
    assert "1  sms-gw  webhook  *  1  yes  yes  0  0  0  https://oapi.example.com:8443/…" in out
    assert "2  dingtalk  webhook  *  *  no  yes  0  0  0" in out
    (generated,) = [line for line in out.splitlines() if line.startswith("signing secret")]
    stored = conn.execute("SELECT secret FROM webhook_targets WHERE name = 'dingtalk'").fetchone()
    assert stored is not None and generated.endswith(stored[0]) and len(stored[0]) >= 32
    assert TOKEN not in out and "a-secret-the-receiver-knows" not in out

    assert main(["webhook", "change", "sms-gw", "--new-secret", "--disable", *db]) == 0
    out = capsys.readouterr().out
    assert "changed enabled, secret" in out
    row = conn.execute("SELECT secret, enabled FROM webhook_targets WHERE id = 1").fetchone()
    assert row is not None and row[1] is False and row[0] in out

    (tmp_path / "ftp").write_text("ftp://example/x")
    assert main(["webhook", "add", "bad", "--url-file", str(tmp_path / "ftp"), *db]) == 2
    assert main(["webhook", "add", "sms-gw", *url_file, *db]) == 2  # the name is taken
    assert "exists" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # a URL on the command line is not taken
        main(["webhook", "add", "x", f"https://x.example/?{TOKEN}", *db])
    assert refused.value.code == 2


def test_channel_targets_from_the_command_line(
    conn: psycopg.Connection[Any],
    alerts_db_url: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """Issue 20: a target's kind, language and options; no secret is made up for a robot."""
    db = ["--database-url", alerts_db_url]
    (tmp_path / "url").write_text(f"https://oapi.dingtalk.com/robot/send?{TOKEN}\n")
    (tmp_path / "secret").write_text("SEC0123456789abcdef\n")
    (tmp_path / "mail.url").write_text("smtp://10.1.2.3:587\n")
    (tmp_path / "mail.json").write_text('{"sender": "alerts@example.cn", "to": ["a@example.cn"]}')
    (tmp_path / "bad.json").write_text('{"sender": "alerts@example.cn", "cc": []}')
    ding = ["webhook", "add", "ding", "--kind", "dingtalk", "--url-file", str(tmp_path / "url")]
    assert main([*ding, *db]) == 2  # a DingTalk robot is sent signed
    assert "secret" in capsys.readouterr().err
    assert main([*ding, "--secret-file", str(tmp_path / "secret"), "--language", "en", *db]) == 0
    out = capsys.readouterr().out
    assert "signing secret" not in out and "dingtalk 1 ding: https://oapi.dingtalk.com/…" in out
    mail = ["webhook", "add", "mail", "--kind", "email", "--url-file", str(tmp_path / "mail.url")]
    assert main([*mail, "--options-file", str(tmp_path / "bad.json"), *db]) == 2
    assert "cc" in capsys.readouterr().err
    assert (
        main([*mail, "--options-file", str(tmp_path / "mail.json"), "--repeat-minutes", "30", *db])
        == 0
    )
    rows = conn.execute(
        "SELECT kind, language, options, repeat_interval_s FROM webhook_targets ORDER BY id"
    )
    assert rows.fetchall() == [
        ("dingtalk", "en", {}, None),
        ("email", "zh", {"sender": "alerts@example.cn", "to": ["a@example.cn"]}, 1800),
    ]
    assert main(["webhook", "list", *db]) == 0
    out = capsys.readouterr().out
    assert "1  ding  dingtalk  *  *  yes  yes  0  0  0  https://oapi.dingtalk.com/…" in out
    assert "2  mail  email  *  *  yes  yes  0  0  0  smtp://10.1.2.3:587/…" in out
    assert TOKEN not in out and "SEC0123456789abcdef" not in out


def test_webhook_allowlist(
    conn: psycopg.Connection[Any], alerts_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database-url", alerts_db_url]
    assert main(["webhook", "allow", "10.0.0.0/24", "--note", "SMS gateway", *db]) == 0
    assert main(["webhook", "allow", "SMS-GW.lan", *db]) == 0
    assert main(["webhook", "allow", "not a host", *db]) == 2
    assert main(["webhook", "allowlist", *db]) == 0
    out = capsys.readouterr().out
    assert "1  network  10.0.0.0/24  cli  SMS gateway" in out
    assert "2  host  sms-gw.lan  cli" in out
    assert main(["webhook", "disallow", "1", *db]) == 0
    assert main(["webhook", "disallow", "1", *db]) == 2
    assert conn.execute("SELECT entry FROM webhook_allowlist").fetchall() == [("sms-gw.lan",)]
