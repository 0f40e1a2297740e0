"""Helpers shared by the codec tests."""

from typing import Any

from basinvcs.cid import CID

LINK = CID.for_block(b"a block")
LINK_V0 = CID(b"\x12\x20" + bytes(range(32)))


def typed(value: Any) -> Any:
    """value with every scalar paired with its type, so 1, 1.0, True and -0.0 stay distinct."""
    if type(value) is dict:
        return {k: typed(v) for k, v in value.items()}
    if type(value) is list:
        return [typed(v) for v in value]
    return (type(value), repr(value) if type(value) is float else value)
