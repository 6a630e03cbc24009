"""Property-based API testing from the OpenAPI schema (schemathesis): generated requests to every
operation, with an admin token, must never produce a 500, and every response must match the
documented schema, status codes and content types. Bounded to a few examples per operation so
the module runs in well under two minutes."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.tokens import create_token
from tests.api.conftest import TEST_STREAM

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
# The stream never ends by itself: a generated request would wait on it forever.
ENDLESS = "/api/v1/stream"
MAX_EXAMPLES = 15  # per operation: about 30 operations, so the module stays near a minute


@pytest.fixture(scope="module")
def admin_token(api_database_url: str) -> str:
    with psycopg.connect(api_database_url) as conn:
        token, _ = create_token(conn, "admin", (), "schemathesis")
    return token


@pytest.fixture(scope="module")
def api_schema(api_database_url: str) -> Any:
    app = create_app(api_database_url, stream=TEST_STREAM)
    return schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path=ENDLESS)


def test_generated_requests_never_fail_or_break_the_schema(
    api_schema: Any, admin_token: str
) -> None:
    headers = {"Authorization": f"Bearer {admin_token}"}
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            exercise()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 20
    assert not failures, "\n\n".join(failures)
