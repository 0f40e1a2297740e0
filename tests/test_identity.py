import json
import os
import stat

import pytest

from basinvcs import identity
from basinvcs.errors import SignatureError


def test_identity_is_created_once_with_mode_0600(basin_home):
    ident, made = identity.load_or_create_identity("ada")
    again, made_again = identity.load_or_create_identity("someone else")
    assert made and not made_again
    assert again == ident and again.name == "ada"
    path = basin_home / "identity.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_keys_print_as_did_key_multibase_and_parse_back():
    ident, _ = identity.load_or_create_identity("ada")
    text = identity.format_key(ident.public_key)
    assert text.startswith("z6Mk")
    assert identity.parse_key(text) == ident.public_key
    assert identity.parse_key("did:key:" + text) == ident.public_key


@pytest.mark.parametrize(
    "bad", ["", "z", "hello", "zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"]
)
def test_bad_keys_are_refused(bad):
    with pytest.raises(SignatureError, match="bad public key"):
        identity.parse_key(bad)


def test_signatures_verify_and_tampering_fails():
    ident, _ = identity.load_or_create_identity("ada")
    sig = ident.sign(b"message")
    assert identity.verify_signature(ident.public_key, b"message", sig)
    assert not identity.verify_signature(ident.public_key, b"messagf", sig)
    assert not identity.verify_signature(ident.public_key, b"message", bytes(64))


def test_unreadable_identity_file_is_a_clear_error(basin_home):
    (basin_home / "identity.json").write_text(json.dumps({"type": "ed25519", "seed": "AAAA"}))
    with pytest.raises(SignatureError, match="unreadable identity file"):
        identity.load_identity()


@pytest.mark.parametrize(
    "content",
    ["[" * 100_000, '{"type": "ed25519", "seed": NaN}', "[]", '"x"', "\xff", "x" * 70_000],
)
def test_a_damaged_identity_file_is_one_line(basin_home, content, cli, tmp_path):
    (basin_home / "identity.json").write_text(content)
    with pytest.raises(SignatureError, match="unreadable identity file"):
        identity.load_identity()
    assert "unreadable identity file" in cli.fails("init", str(tmp_path / "r")).stderr


def test_an_identity_file_that_is_a_fifo_is_refused(basin_home, no_hang):
    os.mkfifo(basin_home / "identity.json")
    with pytest.raises(SignatureError, match="is not a regular file"):
        identity.load_identity()
