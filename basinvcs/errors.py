"""Every error basinvcs raises on purpose.

Each one carries a single-line message fit to print after ``error:``; the CLI catches
``BasinError`` and exits non-zero, so anything else escaping is a bug, not bad input.
"""

from __future__ import annotations


class BasinError(Exception):
    """Base of all expected failures: bad input, missing objects, refused operations.

    `subject` is what the error is about when there is one thing: the CID of a block, the path
    of a file, the name of a ref, so that callers (a server answering a request) need not parse
    the message.
    """

    exit_code = 1

    def __init__(self, message: str, *, subject: object = None) -> None:
        super().__init__(message)
        self.subject = subject


class CodecError(BasinError):
    """Bytes or values that are not valid DAG-CBOR / DAG-JSON (strictly, per the IPLD spec)."""


class CIDError(BasinError):
    """A string or byte sequence that is not a CID we can use."""


class HashMismatch(BasinError):
    """Stored bytes whose hash differs from the CID they are stored under."""


class BlockNotFound(BasinError):
    """A CID that the block store does not hold."""


class BlockTooLarge(BasinError):
    """A block over the per-block size limit."""


class SchemaError(BasinError):
    """A well-formed block that is not a valid basin packet or commit."""


class RefError(BasinError):
    """A bad ref name, a ref that does not exist, or one that cannot be resolved."""


class RefConflict(BasinError):
    """A compare-and-swap ref update that lost the race: the ref moved underneath us."""


class SignatureError(BasinError):
    """A commit signature that does not verify, or a key that is malformed."""


class RepositoryError(BasinError):
    """No repository here, an unreadable or corrupt database, or a config we cannot use."""


class CarError(BasinError):
    """A CARv1 stream that is malformed or truncated, or holds a block that fails verification."""


class RemoteError(BasinError):
    """An IPFS node that cannot be reached, refuses a request, or answers with something wrong."""


class InputError(BasinError):
    """A file or stream handed to us that is not what it must be: too large, not a regular file
    where one is needed, or not strict JSON."""


class NotJSON(InputError):
    """Text that does not parse as JSON at all (as opposed to JSON we refuse)."""


class SubstrateError(BasinError):
    """A substrate name that is unknown, ambiguous, taken or bad, or a broken registry entry."""


class MergeRefused(BasinError):
    """A merge refused by the conflict check before anything was written; `report` says why,
    line by line."""

    def __init__(self, message: str, report: list[str]):
        super().__init__(message)
        self.report = report


class MergeArithmeticError(BasinError):
    """A merge whose arithmetic left the finite numbers: refused, nothing is written."""
