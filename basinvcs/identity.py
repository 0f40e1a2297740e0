"""The user's Ed25519 identity and the textual form of public keys.

The identity lives in the user's config directory (``BASIN_HOME``, else ``$XDG_CONFIG_HOME/basin``,
else ``~/.config/basin``), never inside a repository, so pushing or copying one cannot leak it.
Public keys print as multibase base58btc of the multicodec ``ed25519-pub`` key (``z6Mk...``), the
form did:key uses, so they are recognisable and self-describing.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import base58
from .errors import BasinError, SignatureError

_ED25519_PUB = b"\xed\x01"  # multicodec varint for ed25519-pub
IDENTITY_FILE = "identity.json"


def basin_home() -> Path:
    if env := os.environ.get("BASIN_HOME"):
        return Path(env)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "basin"


def format_key(public: bytes) -> str:
    """The key's z6Mk... form; cached for bytes (base58 costs 10 µs a key, and a hive
    coordinator writes some 300 of the same signers' keys into the head of every round of
    1,000 updates)."""
    return (_cached_key if type(public) is bytes else _key_text)(public)


def _key_text(public: bytes) -> str:
    return "z" + base58.encode(_ED25519_PUB + public)


_cached_key = functools.lru_cache(maxsize=4096)(_key_text)


def parse_key(text: str) -> bytes:
    """A public key from its z6Mk... form (a did:key: prefix is accepted too)."""
    raw = text.removeprefix("did:key:")
    if len(raw) > 64:  # an Ed25519 key is 48 characters; never base58-decode a megabyte
        raise SignatureError(f"bad public key {text[:60]!r}...: too long for an Ed25519 key")
    if not raw.startswith("z"):
        raise SignatureError(f"bad public key {text!r}: expected base58btc multibase 'z6Mk...'")
    try:
        data = base58.decode(raw[1:])
    except ValueError as exc:
        raise SignatureError(f"bad public key {text!r}: {exc}") from None
    if len(data) != 34 or not data.startswith(_ED25519_PUB):
        raise SignatureError(f"bad public key {text!r}: not an Ed25519 public key")
    return data[2:]


@dataclass(frozen=True)
class Identity:
    """A signing identity: the 32-byte Ed25519 seed and a display name."""

    seed: bytes
    name: str

    @property
    def public_key(self) -> bytes:
        from nacl.signing import SigningKey

        return bytes(SigningKey(self.seed).verify_key)

    def sign(self, message: bytes) -> bytes:
        from nacl.signing import SigningKey

        return SigningKey(self.seed).sign(message).signature


def verify_signature(public: bytes, message: bytes, signature: bytes) -> bool:
    from nacl.exceptions import BadSignatureError
    from nacl.exceptions import ValueError as NaclValueError
    from nacl.signing import VerifyKey

    try:
        VerifyKey(public).verify(message, signature)
    except (BadSignatureError, NaclValueError, TypeError):
        return False
    return True


def identity_path(home: Path | None = None) -> Path:
    return (home or basin_home()) / IDENTITY_FILE


def load_identity(home: Path | None = None) -> Identity | None:
    path = identity_path(home)
    if not path.exists():
        return None
    from .inputs import parse_json, read_file

    try:
        doc = parse_json(read_file(path, 1 << 16, "identity file"), str(path))
        seed = base64.b64decode(doc["seed"], validate=True)
        name = str(doc.get("name", ""))
    except (BasinError, ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"unreadable identity file {path}: {exc}") from None
    if doc.get("type") != "ed25519" or len(seed) != 32:
        raise SignatureError(f"unreadable identity file {path}: not an Ed25519 seed")
    return Identity(seed, name)


def require_identity(home: Path | None = None) -> Identity:
    """The user's identity, or a SignatureError saying how to make one."""
    ident = load_identity(home)
    if ident is None:
        raise SignatureError("no identity yet: run 'basin key generate' (or 'basin init')")
    return ident


def create_identity(name: str, home: Path | None = None) -> Identity:
    """Make a new identity file (mode 0600, created exclusively so two inits cannot race)."""
    path = identity_path(home)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    ident = Identity(os.urandom(32), name)
    doc = {"type": "ed25519", "name": name, "seed": base64.b64encode(ident.seed).decode()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)
        fh.write("\n")
    return ident


def load_or_create_identity(name: str, home: Path | None = None) -> tuple[Identity, bool]:
    """The user's identity, creating it if there is none; the flag says whether it was created."""
    ident = load_identity(home)
    if ident is not None:
        return ident, False
    try:
        return create_identity(name, home), True
    except FileExistsError:
        return load_identity(home), False  # type: ignore[return-value]


def default_name() -> str:
    return os.environ.get("BASIN_AUTHOR") or os.environ.get("USER") or "basin user"
