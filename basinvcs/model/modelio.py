"""Model files in and out: safetensors (single or sharded) and torch state dicts, never pickle.

Models go up to 10B parameters, so nothing here holds a whole model in memory. Readers parse
only the safetensors header and hand out one tensor at a time through `safe_open`, which mmaps.
`write_model` knows every name, shape and the output dtype up front, so it writes the header
first and then each tensor's bytes as the tensor arrives, in chunks: peak memory is about the one
tensor the producer is holding, or one piece of it (`Pieces`).

Torch files (`.pt`, `.pth`, `.bin`) are read only through
`torch.load(weights_only=True, mmap=True)`: a pickle that would call anything outside torch's
allowlist is refused before it runs, and so are legacy (non-zip) files, which cannot be mmapped.
What loads must be a flat dict of name -> tensor.

Output layout: `write_model(OUT, ...)` writes `OUT/model.safetensors` when OUT is a directory
(created if missing), or OUT itself when it ends with `.safetensors`. Past `max_shard_bytes` it
writes Hugging Face shards where the single file would go: `model-00001-of-0000N.safetensors`
and `model.safetensors.index.json` (for `OUT=dir/name.safetensors`:
`dir/name-00001-of-0000N.safetensors` and `dir/name.safetensors.index.json`). Every shard's
`__metadata__` holds `"format": "pt"`, which transformers requires. Data is little-endian, as
safetensors specifies and as every platform torch ships for is.
"""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import torch
from safetensors import SafetensorError, safe_open

from ..atomic import replacing, temp_beside
from ..errors import SchemaError
from ..inputs import open_regular, parse_json, read_file

Header = dict[str, tuple[str, tuple[int, ...]]]
Progress = Callable[[int], None]

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit; more means "not a safetensors file"
MAX_INDEX_BYTES = 100_000_000  # a sharded index: a name and a shard per tensor
CHUNK_BYTES = 64 * 1024**2  # converted, checked and written at a time

DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint64: "U64",
    torch.uint32: "U32",
    torch.uint16: "U16",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
DTYPE_BYTES = {name: dtype.itemsize for dtype, name in DTYPES.items()}
WRITE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


class ModelReader:
    """A model file open for reading one tensor at a time; a context manager."""

    path: Path

    def header(self) -> Header:
        """Every tensor's name -> (safetensors dtype, shape), in on-disk order."""
        raise NotImplementedError

    def metadata(self) -> dict[str, str]:
        """The safetensors `__metadata__` strings (of the first shard); empty for torch files."""
        raise NotImplementedError

    def tensor(self, name: str) -> torch.Tensor:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) in header order: reads the files front to back, one tensor at a time."""
        for name in self.header():
            yield name, self.tensor(name)

    def __enter__(self) -> ModelReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_model(path: str | os.PathLike[str]) -> ModelReader:
    """Open a `.safetensors` file, a sharded index, a directory holding either, or a torch file."""
    path = Path(path)
    if path.is_dir():
        present = [path / name for name in (SINGLE_FILE, INDEX_FILE) if (path / name).is_file()]
        if not present:
            raise SchemaError(f"directory {path} holds neither {SINGLE_FILE} nor {INDEX_FILE}")
        if len(present) > 1:
            raise SchemaError(f"directory {path} holds both {SINGLE_FILE} and {INDEX_FILE}")
        path = present[0]
    open_regular(path, "model file").close()  # exists, and is no FIFO or device to block on
    if path.name.endswith(".safetensors.index.json"):
        return SafetensorsReader(path, _read_index(path))
    if path.suffix == ".safetensors":
        return SafetensorsReader(path, None)
    if path.suffix in TORCH_SUFFIXES:
        return TorchReader(path)
    raise SchemaError(
        f"{path} is not a model file basin reads: use .safetensors, .safetensors.index.json, "
        f"{', '.join(TORCH_SUFFIXES)} or a directory"
    )


class SafetensorsReader(ModelReader):
    """One safetensors file, or the shards a Hugging Face index names (`weight_map`)."""

    def __init__(self, path: Path, weight_map: dict[str, Path] | None) -> None:
        self.path = path
        self._header: Header = {}
        self._shard_of: dict[str, Path] = {}
        self._metadata: dict[str, str] = {}
        self._handles: dict[Path, safe_open] = {}
        shards = sorted(set(weight_map.values())) if weight_map is not None else [path]
        for i, shard in enumerate(shards):
            header, metadata = read_safetensors_header(shard)
            if i == 0:
                self._metadata = metadata
            for name, entry in header.items():
                if weight_map is not None and weight_map.get(name) != shard:
                    raise SchemaError(f"{shard} holds tensor {name!r}, which index {path} does not")
                self._header[name] = entry
                self._shard_of[name] = shard
        if weight_map is not None:
            for name, shard in weight_map.items():
                if name not in self._shard_of:
                    raise SchemaError(
                        f"index {path} puts tensor {name!r} in {shard}, which lacks it"
                    )

    def header(self) -> Header:
        return dict(self._header)

    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def tensor(self, name: str) -> torch.Tensor:
        shard = self._shard_of.get(name)
        if shard is None:
            raise SchemaError(f"model {self.path} has no tensor {name!r}")
        try:
            handle = self._handles.get(shard)
            if handle is None:
                handle = self._handles[shard] = safe_open(str(shard), framework="pt")
            return handle.get_tensor(name)
        except (SafetensorError, OSError) as exc:
            raise SchemaError(f"cannot read tensor {name!r} from {shard}: {exc}") from None

    def close(self) -> None:
        self._handles.clear()  # dropping a handle unmaps its file


class TorchReader(ModelReader):
    """A torch state dict of tensors, mmapped; loaded with `weights_only=True` and nothing else."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tensors = _load_state_dict(path)

    def header(self) -> Header:
        return {name: (DTYPES[t.dtype], tuple(t.shape)) for name, t in self._tensors.items()}

    def metadata(self) -> dict[str, str]:
        return {}

    def tensor(self, name: str) -> torch.Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            raise SchemaError(f"model {self.path} has no tensor {name!r}") from None

    def close(self) -> None:
        self._tensors = {}


class TensorFile:
    """A safetensors file read by ranges into the caller's buffers (seek and readinto), for a
    reader that streams it once: unlike `safe_open`'s mapping, nothing is page-faulted in and
    unmapped again, and a small buffer reused range after range stays in cache while it is worked
    on (a checkout offsets, checks and writes each piece of θ0 there). A context manager.

    `known`: the file's header as parsed before (`parse_header`), taken again if the file still
    holds those very bytes and is as long: parsing MiniLM's (11 KB, 106 tensors) again took
    0.35 ms of each checkout."""

    def __init__(self, path: Path, known: ParsedHeader | None = None) -> None:
        self.path = path
        self._fh = open_regular(path, "model file")  # reads past its buffer go straight through
        try:
            self._header = _parse_header(self._fh, path, known)
        except BaseException:
            self._fh.close()
            raise

    def header(self) -> Header:
        return self._header.header()

    def read_into(self, name: str, start: int, out: torch.Tensor) -> None:
        """Values start .. start + out.numel() of tensor `name` (flattened) into `out`, a
        contiguous tensor of the stored dtype."""
        entry = self._header.entries.get(name)
        if entry is None:
            raise SchemaError(f"model {self.path} has no tensor {name!r}")
        begin, dtype, shape = entry
        if DTYPES.get(out.dtype) != dtype or not out.is_contiguous():
            raise SchemaError(f"tensor {name!r} of {self.path} is {dtype}, read as {out.dtype}")
        stop = start + out.numel()
        if start < 0 or stop > math.prod(shape):
            raise SchemaError(f"tensor {name!r} of {self.path} has no values {start}..{stop}")
        view = memoryview(out.view(-1).view(torch.uint8).numpy())
        try:
            self._fh.seek(self._header.data + begin + start * out.element_size())
            done = 0
            while done < len(view):
                got = self._fh.readinto(view[done:])
                if not got:
                    raise SchemaError(f"{self.path} is truncated: tensor {name!r} ends early")
                done += got
        except OSError as exc:
            raise SchemaError(f"cannot read tensor {name!r} from {self.path}: {exc}") from None

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> TensorFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_safetensors_header(path: Path) -> tuple[Header, dict[str, str]]:
    """Parse and check a safetensors header (tensors sorted by offset) without reading data."""
    parsed = parse_header(path)
    return parsed.header(), parsed.metadata


_Entry = tuple[int, str, tuple[int, ...]]  # a tensor's data offset, dtype, shape


@dataclass(frozen=True)
class ParsedHeader:
    """A safetensors header parsed and checked: its bytes and the file's size (all the parse
    depends on), name -> (data offset, dtype, shape) sorted by offset, and `__metadata__`."""

    raw: bytes
    size: int
    entries: dict[str, _Entry]
    metadata: dict[str, str]

    @property
    def data(self) -> int:
        """Where the tensors' data starts in the file."""
        return 8 + len(self.raw)

    def header(self) -> Header:
        return {name: (dtype, shape) for name, (_, dtype, shape) in self.entries.items()}


def parse_header(path: Path) -> ParsedHeader:
    """The header of the safetensors file at `path`, parsed and checked; data is not read."""
    with open_regular(path, "model file") as fh:
        return _parse_header(fh, path, None)


def _parse_header(fh: BinaryIO, path: Path, known: ParsedHeader | None) -> ParsedHeader:
    """The header of the file `fh` just opened: `known` where the file holds its very bytes and
    size, else parsed."""
    try:
        size = os.fstat(fh.fileno()).st_size
        prefix = fh.read(8)
        length = int.from_bytes(prefix, "little")
        if len(prefix) < 8 or length > MAX_HEADER_BYTES:
            raise SchemaError(f"{path} is not a safetensors file")
        if length > size - 8:
            raise SchemaError(
                f"{path} has a truncated header: {length} bytes declared, {size - 8} present"
            )
        raw = fh.read(length)
    except OSError as exc:
        raise SchemaError(f"cannot read {path}: {exc.strerror or exc}") from None
    if known is not None and known.raw == raw and known.size == size:
        return known
    if not raw.startswith(b"{"):
        raise SchemaError(f"{path} is not a safetensors file")
    doc = parse_json(raw, f"the JSON header of {path}")
    if not isinstance(doc, dict):
        raise SchemaError(f"{path} has a bad JSON header: not an object")
    metadata = doc.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise SchemaError(f"{path} has bad __metadata__: it must map strings to strings")
    data_bytes = size - 8 - length
    entries = sorted(
        (_header_entry(path, name, info, data_bytes), name) for name, info in doc.items()
    )
    return ParsedHeader(raw, size, {name: entry for entry, name in entries}, metadata)


def _header_entry(
    path: Path, name: str, info: object, data_bytes: int
) -> tuple[int, str, tuple[int, ...]]:
    """(begin offset, dtype, shape) of one header entry, checked against the file's data size."""
    if not isinstance(info, dict):
        raise SchemaError(f"{path}: header entry {name!r} is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise SchemaError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_size(n) for n in shape):
        raise SchemaError(f"{path}: tensor {name!r} has bad shape {shape!r}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_size, offsets)):
        raise SchemaError(f"{path}: tensor {name!r} has bad data_offsets {offsets!r}")
    begin, end = offsets
    if end - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise SchemaError(f"{path}: tensor {name!r} data_offsets do not match its dtype and shape")
    if end > data_bytes:
        raise SchemaError(
            f"{path} is truncated: tensor {name!r} ends at data byte {end}, "
            f"the file holds {data_bytes}"
        )
    return begin, dtype, tuple(shape)


def _is_size(n: object) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def _read_index(path: Path) -> dict[str, Path]:
    """An index's weight_map as tensor name -> shard path, every shard checked to exist."""
    doc = parse_json(read_file(path, MAX_INDEX_BYTES, "index"), str(path))
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise SchemaError(f"{path} has no weight_map")
    out: dict[str, Path] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
            raise SchemaError(f"{path} names shard {shard!r}: shards must be files beside it")
        out[name] = path.parent / shard
        if not out[name].exists():  # that it is a regular file is checked as it is opened
            raise SchemaError(f"{path} names shard {shard}, which does not exist")
    return out


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
    except pickle.UnpicklingError as exc:
        call = re.search(r"GLOBAL (\S+)", str(exc))
        what = f"its pickle would call {call[1]}" if call else "its pickle holds more than tensors"
        raise SchemaError(
            f"refusing to load {path}: {what}; only tensor state dicts are read"
        ) from None
    except RuntimeError as exc:
        if "mmap can only be used" in str(exc):
            raise SchemaError(
                f"refusing to load {path}: it is a bare pickle or legacy torch file, not torch's "
                "zip format; re-save it with torch.save or as safetensors"
            ) from None
        first = str(exc).split(". ")[0]
        raise SchemaError(f"{path} is not a readable torch file: {first}") from None
    except (EOFError, ValueError, OSError) as exc:
        raise SchemaError(f"{path} is not a readable torch file: {exc}") from None
    if not isinstance(obj, dict):
        raise SchemaError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise SchemaError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")
        if value.layout != torch.strided:
            raise SchemaError(f"{path}: tensor {name!r} is {value.layout}, not a dense tensor")
        if value.dtype not in DTYPES:
            raise SchemaError(f"{path}: tensor {name!r} has unsupported dtype {value.dtype}")
    return obj


TensorDecl = tuple[str, tuple[int, ...]] | tuple[str, tuple[int, ...], torch.dtype]


@dataclass(frozen=True)
class Pieces:
    """A tensor handed to `write_model` a piece at a time: its shape, and its values flattened,
    in order, as consecutive tensors of any shape. Each piece is checked and written before the
    next is asked for, so a producer may compute every piece in one reused buffer and never hold
    the whole tensor (bridge.write_decoded does)."""

    shape: tuple[int, ...]
    pieces: Iterable[torch.Tensor]


def model_nbytes(specs: Iterable[TensorDecl], dtype: torch.dtype) -> int:
    """Bytes of tensor data `write_model` writes (the index's total_size; a progress total)."""
    return sum(math.prod(shape) * d.itemsize for _, shape, d in _declared(specs, dtype))


def write_model(
    out: str | os.PathLike[str],
    specs: list[TensorDecl],
    tensors: Iterable[tuple[str, torch.Tensor]],
    *,
    dtype: torch.dtype,
    max_shard_bytes: int = 2 * 1024**3,
    metadata: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> list[Path]:
    """Stream `tensors` (in `specs` order, finite) to safetensors; return the files written.

    Each spec is (name, shape), written as `dtype`, or (name, shape, own dtype) for a tensor that
    keeps its own (integer position ids, masks); a tensor may come whole or as `Pieces`.
    Everything goes to temporary files beside the targets and is renamed into place only when all
    tensors arrived and checked out, so on any error the previous output is untouched.
    `progress(n)` is called with the bytes just written.
    """
    if dtype not in WRITE_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in WRITE_DTYPES)
        raise SchemaError(f"cannot write models as {dtype}; use one of {names}")
    meta = {"format": "pt", **(metadata or {})}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise SchemaError("model metadata must map strings to strings")
    declared = _declared(specs, dtype)
    _check_specs(declared)
    shards = _plan_shards(declared, max_shard_bytes)
    targets, index = _layout(Path(out), len(shards))
    temps: list[Path] = []
    stream = iter(tensors)
    try:
        targets[0].parent.mkdir(parents=True, exist_ok=True)
        for shard, target in zip(shards, targets, strict=True):
            with _temp_beside(target, temps) as fh:
                header = _header_bytes(shard, meta)
                _reserve(fh, len(header) + model_nbytes(shard, dtype))
                fh.write(header)
                for name, shape, tdtype in shard:
                    _write_tensor(fh, name, shape, next(stream, None), tdtype, progress)
        extra = next(stream, None)
        if extra is not None:
            raise SchemaError(f"unexpected tensor {_name_of(extra)!r} after the last declared one")
        if index is not None:
            doc = {
                "metadata": {"total_size": model_nbytes(declared, dtype)},
                "weight_map": {
                    name: target.name
                    for shard, target in zip(shards, targets, strict=True)
                    for name, _, _ in shard
                },
            }
            with _temp_beside(index, temps) as fh:
                fh.write(json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n")
        written = [*targets, *([index] if index is not None else [])]
        for temp, target in zip(temps, written, strict=True):
            os.replace(temp, target)  # the index last: it never names a shard not yet in place
        return written
    except OSError as exc:
        raise SchemaError(f"cannot write model {out}: {exc.strerror or exc}") from None
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)


Declared = tuple[str, tuple[int, ...], torch.dtype]


def _declared(specs: Iterable[TensorDecl], dtype: torch.dtype) -> list[Declared]:
    out = []
    for spec in specs:
        if len(spec) == 3 and spec[2] not in DTYPES:
            raise SchemaError(f"tensor {spec[0]!r} has unsupported dtype {spec[2]}")
        out.append((spec[0], spec[1], spec[2] if len(spec) == 3 else dtype))
    return out


def _check_specs(specs: list[Declared]) -> None:
    seen: set[str] = set()
    for name, shape, _ in specs:
        if not isinstance(name, str) or name == "__metadata__" or name in seen:
            raise SchemaError(f"tensor name {name!r} is reserved, repeated or not a string")
        if not all(_is_size(n) for n in shape):
            raise SchemaError(f"tensor {name!r} has bad shape {shape!r}")
        seen.add(name)


def _plan_shards(specs: list[Declared], max_shard_bytes: int) -> list[list[Declared]]:
    """Greedy in order, like Hugging Face: a tensor larger than a shard gets a shard of its own."""
    shards: list[list[Declared]] = [[]]
    filled = 0
    for name, shape, dtype in specs:
        nbytes = math.prod(shape) * dtype.itemsize
        if shards[-1] and filled + nbytes > max_shard_bytes:
            shards.append([])
            filled = 0
        shards[-1].append((name, tuple(shape), dtype))
        filled += nbytes
    return shards


def _layout(out: Path, count: int) -> tuple[list[Path], Path | None]:
    """Target files (and index) for `count` shards; see the module docstring."""
    if out.suffix == ".safetensors":
        folder, stem = out.parent, out.name.removesuffix(".safetensors")
        single = out
    else:
        folder, stem = out, "model"
        single = out / SINGLE_FILE
    if count == 1:
        return [single], None
    shards = [folder / f"{stem}-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    return shards, folder / f"{stem}.safetensors.index.json"


def _temp_beside(target: Path, temps: list[Path]) -> BinaryIO:
    """A new hidden temporary file next to `target`, recorded in `temps` for rename or cleanup."""
    fd, name = temp_beside(target)
    temps.append(name)
    return os.fdopen(fd, "wb")


FALLOC_FL_KEEP_SIZE = 1  # linux/falloc.h: reserve blocks, leave the size to the writes


def _reserve(fh: BinaryIO, size: int) -> None:
    """Reserve the blocks of a file about to be written `size` bytes long, where the system
    can: on ext4, writing 91 MB into blocks reserved at once takes 11 ms, against 17 ms
    allocating them write by write. Where it cannot, the writes allocate as before."""
    fallocate = _fallocate()
    if fallocate is not None and size:
        fallocate(fh.fileno(), FALLOC_FL_KEEP_SIZE, 0, size)  # a failure only costs the speed


@functools.cache
def _fallocate() -> Callable[[int, int, int, int], int] | None:
    """Linux's fallocate(2) through libc, or None. Not os.posix_fallocate: where a filesystem
    lacks fallocate, glibc emulates it by writing to every block, slower than not reserving.
    64-bit only, where glibc's `fallocate` takes 64-bit offsets (torch runs on nothing else)."""
    if not sys.platform.startswith("linux") or sys.maxsize < 2**63 - 1:
        return None
    import ctypes

    try:
        fallocate = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fallocate.restype = ctypes.c_int
    return fallocate


def copy_file(source: Path, target: Path) -> None:
    """Copy through a temporary file beside the target, so a crash leaves no half-written file."""
    try:
        with replacing(target) as dst, open(source, "rb") as src:
            shutil.copyfileobj(src, dst)
    except OSError as exc:
        raise SchemaError(f"cannot write {target}: {exc.strerror or exc}") from None


def _header_bytes(shard: list[Declared], meta: dict[str, str]) -> bytes:
    """Length prefix and JSON header, space-padded so the data starts 8-byte aligned."""
    header: dict[str, object] = {"__metadata__": meta}
    offset = 0
    for name, shape, dtype in shard:
        end = offset + math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def _write_tensor(
    fh: BinaryIO,
    name: str,
    shape: tuple[int, ...],
    item: object,
    dtype: torch.dtype,
    progress: Progress | None,
) -> None:
    """Check one arriving (name, tensor or Pieces) against its spec and write it a chunk at a
    time."""
    if item is None:
        raise SchemaError(f"tensors ended before {name!r}")
    got, tensor = item
    if got != name:
        raise SchemaError(f"expected tensor {name!r}, got {got!r}: tensors must come in order")
    if not isinstance(tensor, (torch.Tensor, Pieces)):
        raise SchemaError(f"tensor {name!r} is a {type(tensor).__name__}, not a tensor")
    if tuple(tensor.shape) != shape:
        raise SchemaError(f"tensor {name!r} has shape {tuple(tensor.shape)}, declared {shape}")
    pieces = tensor.pieces if isinstance(tensor, Pieces) else (tensor,)
    left = math.prod(shape)
    step = CHUNK_BYTES // dtype.itemsize
    for piece in pieces:
        flat = piece.detach().reshape(-1)
        if flat.numel() > left:
            raise SchemaError(f"tensor {name!r} has more values than its shape {shape} holds")
        left -= flat.numel()
        for start in range(0, flat.numel(), step):
            chunk = flat[start : start + step].to(device="cpu", dtype=dtype)
            # integer and bool tensors are finite by construction
            if dtype.is_floating_point and not all_finite(chunk):
                raise SchemaError(f"tensor {name!r} has values that are not finite as {dtype}")
            fh.write(chunk.view(torch.uint8).numpy())  # bytes of any dtype, bfloat16 included
            if progress is not None:
                progress(chunk.numel() * dtype.itemsize)
    if left:
        raise SchemaError(f"tensor {name!r} ended {left} values short of its shape {shape}")


def all_finite(values: torch.Tensor) -> bool:
    """Whether every value of a floating-point tensor is finite. NaN and ±inf carry through a
    sum, so a finite sum settles it, at a third (float32) to a half (bfloat16) of the cost of
    aminmax; a sum that is not finite (a value that is not, or finite values whose sum
    overflows) is settled by aminmax, which propagates NaN, so both ends are finite exactly when
    every value is. isfinite() would allocate a tensor the values' size, and is slower still."""
    if math.isfinite(values.sum().item()):
        return True
    low, high = torch.aminmax(values)
    return math.isfinite(low.item()) and math.isfinite(high.item())


def _name_of(item: object) -> object:
    return item[0] if isinstance(item, tuple) and item else item
