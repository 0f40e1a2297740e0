"""Block stores: where blocks live. The embedded SQLite store is the default."""

from .base import MAX_BLOCK_SIZE, BlockStore, check_block

__all__ = ["MAX_BLOCK_SIZE", "BlockStore", "check_block"]
