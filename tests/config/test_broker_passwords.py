"""HTTP ingest checks a device's password against the broker's own password file
(config.broker.verify_mosquitto_password): the hashes `clausewatch broker files` writes and those
`mosquitto_passwd` writes, and a topic against a login's rights as the broker matches them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from config.broker import (
    PasswordFileError,
    mosquitto_password_hash,
    read_password_file,
    topic_matches,
    verify_mosquitto_password,
)


def test_our_hashes_verify_and_a_wrong_password_does_not() -> None:
    hashed = mosquitto_password_hash("s3cret")
    assert verify_mosquitto_password("s3cret", hashed)
    assert not verify_mosquitto_password("s3cret ", hashed)
    assert not verify_mosquitto_password("s3cret", "$7$101$bm90$aGFzaA==")  # malformed digest
    assert not verify_mosquitto_password("s3cret", "plain")


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="no mosquitto_passwd")
def test_hashes_written_by_mosquitto_passwd_verify(tmp_path: Path) -> None:
    path = tmp_path / "passwords"
    path.write_text("demo-hq/th-201:Zq7secret\nclausewatch:other\n")
    subprocess.run(["mosquitto_passwd", "-U", str(path)], check=True)
    hashes = read_password_file(path.read_text())
    assert verify_mosquitto_password("Zq7secret", hashes["demo-hq/th-201"])
    assert not verify_mosquitto_password("other", hashes["demo-hq/th-201"])
    assert verify_mosquitto_password("other", hashes["clausewatch"])


def test_a_password_file_with_a_plain_password_is_refused_naming_the_line() -> None:
    good = f"a/b:{mosquitto_password_hash('x')}\n"
    with pytest.raises(PasswordFileError, match="line 3") as refused:
        read_password_file(good + "# comment\nc/d:plain-password\n")
    assert "plain-password" not in str(refused.value)
    assert read_password_file("\n# only a comment\n" + good).keys() == {"a/b"}


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("cw/hq/th-1/#", "cw/hq/th-1/telemetry", True),
        ("cw/hq/th-1/#", "cw/hq/th-1", True),
        ("cw/hq/th-1/#", "cw/hq/th-10/telemetry", False),
        ("cw/hq/gw/status", "cw/hq/gw/status", True),
        ("cw/hq/gw/status", "cw/hq/gw/telemetry", False),
        ("cw/+/th-1/+", "cw/hq/th-1/event", True),
        ("cw/+/th-1/+", "cw/hq/th-1/event/x", False),
        ("cw/#", "other/hq/th-1/event", False),
    ],
)
def test_topic_filters_match_as_the_broker_does(
    topic_filter: str, topic: str, matches: bool
) -> None:
    assert topic_matches(topic_filter, topic) is matches
