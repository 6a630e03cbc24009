"""Signed anchors of the ledger's tip, kept outside the database.

A hash chain shows any change in its middle, but not a tail cut off, nor a chain rewritten and
re-hashed from some entry on: both still link up. An anchor pins the chain from outside: the
sequence number and hash of the last entry at some moment, signed with an Ed25519 key the
database never sees, written as a small JSON file to a folder of its own (a mount the database
host cannot write, a WORM bucket, a copy sent off-site). `alerts.audit` then requires the
chain to reach every anchored entry and that entry to have the anchored hash.

    {"format": "clausewatch-ledger-anchor/1", "seq": 1042, "hash": "9f86...",
     "at": "2026-07-01T08:00:00.000000+00:00", "key_id": "3b2a...", "signature": "base64..."}

The signature covers the canonical JSON (sorted keys, no whitespace) of every field but
`signature`. The key: `generate_key` (`clausewatch ledger keygen --out FILE`) writes the private
key (PKCS#8 PEM, mode 0600) and the public key beside it (`FILE.pub`, SubjectPublicKeyInfo PEM).
The service signs on a schedule (`anchor_tip`, clausewatch/service.py); the `ledger_anchors`
table keeps a copy for convenience, which verification never trusts.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from store import ledger

ANCHOR_FORMAT = "clausewatch-ledger-anchor/1"
FILE_PREFIX = "ledger-anchor-"
FILE_SUFFIX = ".json"
ANCHOR_FIELDS = ("format", "seq", "hash", "at", "key_id", "signature")
# How many bytes of an anchor file are read: they are about 300.
MAX_FILE_BYTES = 4096


class AnchorError(Exception):
    """A key or anchor folder that cannot be used (missing, unreadable, too open)."""


def public_key_path(private_key_file: Path) -> Path:
    """Where `generate_key` puts the public key of `private_key_file`: beside it, `.pub`."""
    return private_key_file.with_name(private_key_file.name + ".pub")


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short name of a key: the first 16 hex digits of the SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key(out: Path) -> Path:
    """Writes a new Ed25519 private key to `out` (mode 0600) and its public key beside it;
    returns the public key's path. Refuses to replace either file."""
    private = Ed25519PrivateKey.generate()
    public_path = public_key_path(out)
    for path in (out, public_path):
        if path.exists():
            raise AnchorError(f"{path} exists: a key is never overwritten")
    _write_new(
        out,
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _write_new(
        public_path,
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        0o644,
    )
    return public_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The signing key; refused when group or others may read it (like ssh does)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise AnchorError(f"cannot read the ledger key {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AnchorError(f"the ledger key {path} is readable by others: chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise AnchorError(f"{path} is not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AnchorError(f"{path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AnchorError(f"cannot read the public key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise AnchorError(f"{path} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise AnchorError(f"{path} is not an Ed25519 public key")
    return key


@dataclass(frozen=True, slots=True)
class Anchor:
    """The ledger's last entry `seq` (0: the ledger was empty) had hash `hash` at `at`."""

    seq: int
    hash: str
    at: dt.datetime
    key_id: str
    signature: str = ""
    file: str = ""

    def signed_bytes(self) -> bytes:
        return ledger.canonical_json(
            {
                "format": ANCHOR_FORMAT,
                "seq": self.seq,
                "hash": self.hash,
                "at": ledger.format_at(self.at),
                "key_id": self.key_id,
            }
        )

    def document(self) -> bytes:
        body = orjson.loads(self.signed_bytes())
        body["signature"] = self.signature
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"

    @property
    def file_name(self) -> str:
        stamp = self.at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        return f"{FILE_PREFIX}{self.seq:012d}-{stamp}{FILE_SUFFIX}"

    def describe(self) -> str:
        return f"entry {self.seq} anchored {ledger.format_at(self.at)} ({self.file or 'table'})"


def sign(private_key: Ed25519PrivateKey, seq: int, tip_hash: str, at: dt.datetime) -> Anchor:
    unsigned = Anchor(seq, tip_hash, at.astimezone(dt.UTC), key_id(private_key.public_key()))
    signature = base64.b64encode(private_key.sign(unsigned.signed_bytes())).decode()
    return dataclasses.replace(unsigned, signature=signature, file=unsigned.file_name)


def anchor_tip(
    conn: psycopg.Connection[Any], key_file: Path, folder: Path, now: dt.datetime
) -> Anchor | None:
    """Signs the ledger's current tip, writes it to `folder` (created if missing) and records
    it in `ledger_anchors`; None when the newest anchor in the folder already holds this tip.
    The file is written first, atomically (a temporary name, fsync, rename). Does not commit
    the table row."""
    private_key = load_private_key(key_file)
    row = conn.execute(ledger.TIP_QUERY).fetchone()
    seq, tip_hash = (int(row[0]), str(row[1])) if row else (0, ledger.GENESIS_HASH)
    folder.mkdir(parents=True, exist_ok=True)
    newest = max(_anchor_files(folder), default=None)
    if newest is not None and newest.name.startswith(f"{FILE_PREFIX}{seq:012d}-"):
        previous = _read_document(newest)
        if previous is not None and previous.get("hash") == tip_hash:
            return None
    anchor = sign(private_key, seq, tip_hash, now)
    _write_atomically(folder / anchor.file_name, anchor.document())
    conn.execute(
        "INSERT INTO ledger_anchors (seq, hash, at, key_id, signature, file)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (anchor.seq, anchor.hash, anchor.at, anchor.key_id, anchor.signature, anchor.file),
    )
    return anchor


def _anchor_files(folder: Path) -> Iterable[Path]:
    return (
        path
        for path in folder.iterdir()
        if path.name.startswith(FILE_PREFIX) and path.name.endswith(FILE_SUFFIX)
    )


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    _write_new(temporary, data, 0o644)
    os.replace(temporary, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a crash
    finally:
        os.close(fd)


def _read_document(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
        document = orjson.loads(data) if len(data) <= MAX_FILE_BYTES else None
    except (OSError, orjson.JSONDecodeError):
        return None
    return document if isinstance(document, dict) else None


@dataclass
class AnchorSet:
    """The anchors of a folder whose signatures check out, and what is wrong with the rest."""

    folder: Path
    anchors: list[Anchor] = field(default_factory=list)  # by seq, then time
    problems: list[str] = field(default_factory=list)

    @property
    def latest(self) -> Anchor | None:
        return self.anchors[-1] if self.anchors else None

    def expected_hashes(self) -> dict[int, str]:
        """seq → hash for `store.ledger.verify` (the empty-ledger anchor, seq 0, needs no
        check)."""
        return {a.seq: a.hash for a in self.anchors if a.seq > 0}

    def describe(self, seq: int) -> str:
        """The newest anchor of entry `seq`, in words, for a report."""
        matching = [a for a in self.anchors if a.seq == seq]
        return matching[-1].describe() if matching else f"entry {seq}"


def load_anchors(folder: Path, public_keys: Iterable[Path]) -> AnchorSet:
    """Reads every anchor file of `folder` and keeps those validly signed by one of
    `public_keys`; a file that is malformed, signed by an unknown key or whose signature does
    not verify is a problem (someone wrote or altered it), as are two anchors of one entry
    with different hashes. Raises AnchorError when no public key can be read or the folder is
    missing."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in public_keys:
        key = load_public_key(path)
        keys[key_id(key)] = key
    if not keys:
        raise AnchorError("no public key to check anchors with")
    if not folder.is_dir():
        raise AnchorError(f"the anchor folder {folder} does not exist")
    result = AnchorSet(folder)
    for path in sorted(_anchor_files(folder)):
        anchor, problem = _checked(path, keys)
        if problem is not None:
            result.problems.append(f"{path.name}: {problem}")
        elif anchor is not None:
            result.anchors.append(anchor)
    result.anchors.sort(key=lambda a: (a.seq, a.at))
    by_seq: dict[int, Anchor] = {}
    for anchor in result.anchors:
        earlier = by_seq.setdefault(anchor.seq, anchor)
        if earlier.hash != anchor.hash:
            result.problems.append(
                f"{anchor.file} and {earlier.file} anchor entry {anchor.seq} with different "
                "hashes: the signing key was used on two different chains"
            )
    return result


def _checked(path: Path, keys: Mapping[str, Ed25519PublicKey]) -> tuple[Anchor | None, str | None]:
    document = _read_document(path)
    if document is None or set(document) != set(ANCHOR_FIELDS):
        return None, "not an anchor file (unreadable, or not the fields of an anchor)"
    if document["format"] != ANCHOR_FORMAT:
        return None, f"unknown format {document['format']!r}"
    try:
        anchor = Anchor(
            seq=int(document["seq"]),
            hash=str(document["hash"]),
            at=dt.datetime.fromisoformat(str(document["at"])),
            key_id=str(document["key_id"]),
            signature=str(document["signature"]),
            file=path.name,
        )
        signature = base64.b64decode(anchor.signature, validate=True)
    except (TypeError, ValueError):
        return None, "not an anchor file (a field has the wrong type)"
    key = keys.get(anchor.key_id)
    if key is None:
        return None, f"signed by key {anchor.key_id}, which is not among the public keys given"
    try:
        key.verify(signature, anchor.signed_bytes())
    except InvalidSignature:
        return None, "the signature does not verify: the file was altered or forged"
    return anchor, None


@dataclass(frozen=True, slots=True)
class AnchorSource:
    """Where anchors are read from for a verification: their folder and the public keys that
    may have signed them (several while a key is being replaced)."""

    folder: Path
    public_keys: tuple[Path, ...]

    def load(self) -> AnchorSet:
        return load_anchors(self.folder, self.public_keys)
