"""`clausewatch webhook add|list`."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from clausewatch.cli import main

pytestmark = pytest.mark.integration


def test_webhook_add_and_list(
    conn: psycopg.Connection[Any], alerts_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database-url", alerts_db_url]
    assert main(["webhook", "add", "http://127.0.0.1:9000/sms", "--level", "1", *db]) == 0
    assert main(["webhook", "list", *db]) == 0
    out = capsys.readouterr().out
    assert "webhook 1: http://127.0.0.1:9000/sms" in out
    assert "1  *  1  yes  0  0  0  http://127.0.0.1:9000/sms" in out
    with pytest.raises(SystemExit) as refused:
        main(["webhook", "add", "ftp://example/x", *db])
    assert refused.value.code == 2
