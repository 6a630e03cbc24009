"""Tokens from the command line, used and revoked through the API; clause history and the
validation of clause files (field-level errors with their line)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from clausewatch.cli import main
from tests.api.conftest import auth

pytestmark = pytest.mark.integration

GOOD = """\
standard: {code: T-1, title: test standard, edition: "1"}
clauses:
  - id: t.hot
    version: 1
    effective_from: 2026-01-01
    number: "1"
    title: not too hot
    domain: indoor_climate
    confidence: C
    check: {kind: threshold, metric: temperature, max: 30}
"""


def test_token_create_use_and_revoke(
    client: TestClient, api_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "token",
                "create",
                "--role",
                "facility_manager",
                "--site",
                "site-a",
                "--label",
                "王工",
                "--database-url",
                api_database_url,
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    token = captured.out.strip()
    assert token.startswith("cw_") and len(token) == 3 + 43
    token_id = int(captured.err.split()[1])

    alerts = client.get("/api/v1/alerts", params={"site": "site-a"}, headers=auth(token))
    assert alerts.status_code == 200
    assert (
        client.get("/api/v1/alerts", params={"site": "site-b"}, headers=auth(token)).status_code
        == 403
    )

    assert main(["token", "list", "--database-url", api_database_url]) == 0
    assert f"{token_id}\tfacility_manager\tsite-a\tlive, expires " in capsys.readouterr().out
    assert main(["token", "revoke", str(token_id), "--database-url", api_database_url]) == 0
    assert client.get("/api/v1/sites", headers=auth(token)).status_code == 401
    assert main(["token", "revoke", str(token_id), "--database-url", api_database_url]) == 1


def test_token_create_refuses_a_bad_site(api_database_url: str) -> None:
    assert (
        main(
            [
                "token",
                "create",
                "--role",
                "viewer",
                "--site",
                "Site A",
                "--database-url",
                api_database_url,
            ]
        )
        == 2
    )


def test_clause_history(client: TestClient, tokens: dict[tuple[str, str], str]) -> None:
    headers = auth(tokens[("viewer", "site-a")])
    clauses = {c["id"]: c for c in client.get("/api/v1/clauses", headers=headers).json()}
    assert clauses["temp.cooling.min"]["standard"]["code"] == "建科〔2008〕115号"
    assert clauses["temp.cooling.min"]["key"] is True
    versions = client.get("/api/v1/clauses/temp.cooling.min/versions", headers=headers).json()
    assert [v["version"] for v in versions] == list(range(1, len(versions) + 1))
    assert versions[0]["config"]["check"]["kind"] == "threshold"
    missing = client.get("/api/v1/clauses/no.such.clause/versions", headers=headers)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("text", "path", "line"),
    [
        (GOOD.replace("max: 30", "max: 30, colour: red"), "clauses[0].check.colour", 10),
        (GOOD.replace("    confidence: C\n", ""), "clauses[0].confidence", 3),
        (GOOD.replace("{kind: threshold", "{kind: thresh"), "clauses[0].check", 10),
        ("standard: [unclosed\n", "", 2),
    ],
)
def test_validation_names_the_field_and_line(
    client: TestClient, tokens: dict[tuple[str, str], str], text: str, path: str, line: int
) -> None:
    response = client.post(
        "/api/v1/clauses/validate", json={"yaml": text}, headers=auth(tokens[("admin", "all")])
    )
    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is False
    assert (body["errors"][0]["path"], body["errors"][0]["line"]) == (path, line), body["errors"]


def test_a_valid_file_and_an_alias_bomb(
    client: TestClient, tokens: dict[tuple[str, str], str]
) -> None:
    headers = auth(tokens[("admin", "all")])
    good = client.post("/api/v1/clauses/validate", json={"yaml": GOOD}, headers=headers).json()
    assert good["valid"] is True
    assert good["clauses"][0]["id"] == "t.hot" and len(good["clauses"][0]["content_hash"]) == 64
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
    )
    refused = client.post("/api/v1/clauses/validate", json={"yaml": bomb}, headers=headers).json()
    assert refused["valid"] is False
    assert "aliases" in refused["errors"][0]["message"]
