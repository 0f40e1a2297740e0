"""Update records ("basin/update"): what one hive instance sends after training a little.

An update is a signed DAG-CBOR map of a few hundred bytes: the change of z it computed from a head
commit of the shared basin (`parent`), encoded sparsely (`encoding`, `delta`), optionally the
Fisher values of the coordinates it sends and a change of β, how many samples or steps are behind
it, its round and its signer's sequence number. It is built like the heads and capability records
(records.py): strict, canonical-only decoding and an Ed25519 signature over the canonical encoding
of the map without `signature`.

Encodings ("topk-q8", the default, and "topk-q4") send the k coordinates of largest magnitude:
their indices packed at ceil(log2 d) bits, their values as signed 8- or 4-bit codes times one
scale. What is left out is not lost: `Compressor` keeps it as a residual and adds it to the next
change (error feedback), so the sum of what was sent tracks the sum of the changes.

Every value is checked on the way in, and nothing the record says about itself (a count, a length)
relaxes a check: k is the number of value codes actually present, and the index bytes, the Fisher
codes and the size limit are checked against it. The schema is in docs/format.md ("Update records").
"""

from __future__ import annotations

import heapq
import math
import operator
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from ..cid import CID, DAG_CBOR, SHA2_256
from ..codec import dagcbor
from ..errors import SchemaError
from ..identity import format_key
from ..numeric import FLOAT24_MAX
from ..objects import (
    FORMAT_VERSION,
    MAX_BETA,
    MAX_DIM,
    MAX_EXCLUDE,
    Chart,
    Entanglement,
    _check_type,
    _fields,
    _finite,
    _signature,
    _typed,
)
from ..records import _Signed

UPDATE_TYPE = "basin/update"
MAX_UPDATE_BYTES = 600  # the limit up to d = 1024; see update_limit
DEFAULT_ENCODING = "topk-q8"
FISHER_BITS = 4
_FISHER_TOP = (1 << FISHER_BITS) - 1  # code 15 is the maximum, code 0 "no information"
MAX_LINKS = 8  # concept links an update may report
_INT63 = 1 << 63
_SIGNATURE_ENTRY = len(dagcbor.encode({"signature": bytes(64)})) - 1  # 76 bytes
# What the largest chart's mask may add (16 patterns of 128 characters): the most bytes any update
# can have, checked before a block is decoded at all.
_MAX_MASK_BYTES = len(dagcbor.encode({"exclude": ["x" * 128] * MAX_EXCLUDE})) - 1
_ABSOLUTE_LIMIT = -(-MAX_UPDATE_BYTES * MAX_DIM // 1024) + _MAX_MASK_BYTES


def update_limit(chart: Chart) -> int:
    """Largest encoded update in `chart`: 600 bytes up to d = 1024, growing in proportion above
    (⌈600·d/1024⌉), plus the bytes of the chart's own mask (its `exclude` entry), which the
    repository chose and every update in it repeats."""
    limit = max(MAX_UPDATE_BYTES, -(-MAX_UPDATE_BYTES * chart.dim // 1024))
    if chart.exclude:
        limit += len(dagcbor.encode({"exclude": list(chart.exclude)})) - 1
    return limit


def index_bits(dim: int) -> int:
    """Bits per packed index: ceil(log2 d), at least 1."""
    return max(1, (dim - 1).bit_length())


# -- bit packing --------------------------------------------------------------------------------


def _pack(values: Sequence[int], bits: int) -> bytes:
    """Unsigned `bits`-bit fields, most significant bit first, zero-padded to whole bytes."""
    if bits == 8:
        return bytes(values)
    fields = np.asarray(values, dtype=np.uint32)[:, None] >> np.arange(bits - 1, -1, -1)
    return np.packbits((fields & 1).astype(np.uint8)).tobytes()


def _unpack(data: bytes, count: int, bits: int, what: str) -> list[int]:
    """Inverse of _pack: exactly `count` fields, refusing any other length or non-zero padding."""
    nbytes = (bits * count + 7) // 8
    if len(data) != nbytes:
        raise SchemaError(
            f"update {what} have {len(data)} bytes; {count} of {bits} bits need {nbytes}"
        )
    if bits == 8:
        return list(data)
    padding = 8 * nbytes - bits * count
    if data and data[-1] & ((1 << padding) - 1):
        raise SchemaError(f"update {what} have non-zero padding bits")
    fields = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: bits * count]
    weights = 1 << np.arange(bits - 1, -1, -1, dtype=np.int64)
    return (fields.reshape(count, bits) @ weights).tolist()


# -- the encoded change of z --------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """A sparse change of z: coordinate `indices[i]` changes by `scale * codes[i]`.

    Canonical by construction: indices strictly increasing and below `dim`, codes non-zero within
    the encoding's symmetric range, one of them at the range's end (so `scale` is the largest
    magnitude divided by that end, fixed by the change itself). The empty change has scale 0.0.
    """

    encoding: str
    dim: int
    indices: tuple[int, ...]
    codes: tuple[int, ...]
    scale: float

    def __post_init__(self) -> None:
        get_encoding(self.encoding).check(self)

    @property
    def k(self) -> int:
        return len(self.indices)

    def values(self) -> list[float]:
        """The change of each sent coordinate, in the order of `indices`."""
        return [self.scale * c for c in self.codes]

    def decode(self) -> list[float]:
        """The dense change of z: d floats, zero where nothing is sent."""
        out = [0.0] * self.dim
        for i, v in zip(self.indices, self.values(), strict=True):
            out[i] = v
        return out

    def to_node(self) -> dict:
        return get_encoding(self.encoding).to_node(self)


@dataclass(frozen=True)
class TopK:
    """Top-k by magnitude, indices at ceil(log2 d) bits, values as signed `bits`-bit codes
    (two's complement, range ±(2^(bits−1) − 1)) times one scale; `k_per_1024` coordinates per
    1024 of d by default."""

    name: str
    bits: int
    k_per_1024: int

    @property
    def top(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def default_k(self, dim: int) -> int:
        """k when none is given: k_per_1024 up to d = 1024, in proportion to d above (the size
        limit grows in proportion too), never more than d."""
        return min(dim, max(self.k_per_1024, self.k_per_1024 * dim // 1024))

    def encode(self, delta: Sequence[float], k: int | None = None) -> Change:
        """The k largest-magnitude coordinates of `delta`, quantised; ties go to the lower index.
        Coordinates whose code rounds to 0 are left out, so a change may send fewer than k."""
        delta = [float(v) for v in delta]
        dim = len(delta)
        k = self.default_k(dim) if k is None else k
        if not 0 <= _typed(k, int, "k") <= dim:
            raise SchemaError(f"k {k} is outside 0..{dim}")
        for i, v in enumerate(delta):
            if not math.isfinite(v):
                raise SchemaError(f"change of coordinate {i} is {v}: it must be finite")
            if abs(v) > FLOAT24_MAX:
                raise SchemaError(
                    f"change of coordinate {i} is {v:.6g}: beyond the largest coordinate a basin"
                    f" stores ({FLOAT24_MAX:.6g})"
                )
        chosen = sorted(heapq.nsmallest(k, range(dim), key=lambda i: (-abs(delta[i]), i)))
        largest = max((abs(delta[i]) for i in chosen), default=0.0)
        scale = largest / self.top
        if not scale >= sys.float_info.min:  # zero, or so small it loses precision: send nothing
            return Change(self.name, dim, (), (), 0.0)
        while scale * self.top > FLOAT24_MAX:  # rounded up past it: keep it decodable
            scale = math.nextafter(scale, 0.0)
        indices, codes = [], []
        for i in chosen:
            code = max(-self.top, min(self.top, round(delta[i] / scale)))
            if code:
                indices.append(i)
                codes.append(code)
        return Change(self.name, dim, tuple(indices), tuple(codes), scale)

    def check(self, change: Change) -> None:
        dim = _typed(change.dim, int, "update dimension")
        indices = _typed(change.indices, tuple, "update indices")
        codes = _typed(change.codes, tuple, "update value codes")
        scale = _finite(change.scale, "update scale")
        if len(indices) != len(codes):
            raise SchemaError(f"update has {len(indices)} indices but {len(codes)} values")
        # the common case in one pass over each tuple at C speed; the loops find what is wrong
        plain = set(map(type, indices)) <= {int} and set(map(type, codes)) <= {int}
        if not (
            plain
            and all(map(operator.lt, indices, indices[1:]))
            and (not indices or indices[0] >= 0 and indices[-1] < dim)
        ):
            previous = -1
            for i in indices:
                if not previous < _typed(i, int, "update index") < dim:
                    if i >= dim or i < 0:
                        raise SchemaError(f"update index {i} is outside the chart (d = {dim})")
                    raise SchemaError(
                        f"update indices must be strictly increasing ({i} after {previous})"
                    )
                previous = i
        top = max(max(codes), -min(codes)) if plain and codes else 0
        if not plain or 0 in codes or top > self.top:
            top = 0
            for c in codes:
                if not 0 < abs(_typed(c, int, "update value code")) <= self.top:
                    raise SchemaError(
                        f"{self.name} value code {c} is outside ±1..{self.top} (0 is not sent)"
                    )
                top = max(top, abs(c))
        if not codes:
            if scale != 0.0 or math.copysign(1.0, scale) < 0:
                raise SchemaError(f"update sends no coordinate but has scale {scale}: use 0.0")
            return
        if not scale > 0:
            raise SchemaError(f"update scale {scale} must be > 0")
        if not scale * self.top <= FLOAT24_MAX:  # else no basin could hold z after it
            raise SchemaError(
                f"update scale {scale:.6g} is too large: its largest change, {self.top} times it,"
                f" is beyond the largest coordinate a basin stores ({FLOAT24_MAX:.6g})"
            )
        if top != self.top:
            raise SchemaError(
                f"{self.name} value codes must reach ±{self.top} (the scale is the largest "
                f"change / {self.top}); the largest is {top}"
            )

    def to_node(self, change: Change) -> dict:
        mask = (1 << self.bits) - 1
        return {
            "indices": _pack(change.indices, index_bits(change.dim)),
            "values": _pack([c & mask for c in change.codes], self.bits),
            "scale": change.scale,
        }

    def from_node(self, node: Any, dim: int) -> Change:
        node = _fields(node, "update delta", {"indices", "values", "scale"})
        packed = _typed(node["values"], bytes, "update values")
        # k is the number of codes present: 8 bits per code, or 4 with a zero nibble padding an
        # odd count (a code is never 0, so the padding is unambiguous)
        k = (8 * len(packed)) // self.bits
        if self.bits == 4 and packed and not packed[-1] & 0xF:
            k -= 1
        sign = 1 << (self.bits - 1)
        codes = [(u ^ sign) - sign for u in _unpack(packed, k, self.bits, "values")]
        indices = _unpack(
            _typed(node["indices"], bytes, "update indices"), k, index_bits(dim), "indices"
        )
        return Change(self.name, dim, tuple(indices), tuple(codes), node["scale"])


ENCODINGS: dict[str, TopK] = {
    "topk-q8": TopK("topk-q8", 8, 52),
    "topk-q4": TopK("topk-q4", 4, 64),
}


def get_encoding(name: Any) -> TopK:
    try:
        return ENCODINGS[_typed(name, str, "update encoding")]
    except KeyError:
        known = ", ".join(sorted(ENCODINGS))
        raise SchemaError(f"unknown update encoding {name[:64]!r} (known: {known})") from None


def encode_change(
    delta: Sequence[float], encoding: str = DEFAULT_ENCODING, k: int | None = None
) -> Change:
    """`delta` (d floats) encoded without error feedback."""
    return get_encoding(encoding).encode(delta, k)


class Compressor:
    """Error feedback: what an encoding leaves out of one change is added to the next.

    `compress(delta)` encodes delta + residual and keeps residual = (delta + old residual) −
    decoded(change), so after any number of changes, the sum of the decoded changes plus the
    residual equals the sum of the deltas (to float rounding). Deterministic; the residual stays
    with the instance and never travels.
    """

    def __init__(self, dim: int, encoding: str = DEFAULT_ENCODING, k: int | None = None) -> None:
        if not 1 <= _typed(dim, int, "dimension") <= MAX_DIM:
            raise SchemaError(f"dimension {dim} is outside 1..{MAX_DIM}")
        self.dim = dim
        self.encoding = get_encoding(encoding)
        self.k = self.encoding.default_k(dim) if k is None else k
        if not 0 <= _typed(self.k, int, "k") <= dim:
            raise SchemaError(f"k {self.k} is outside 0..{dim}")
        self.residual = [0.0] * dim

    def compress(self, delta: Sequence[float], k: int | None = None) -> Change:
        """The next change: `k` coordinates (default: the compressor's k) of delta + residual."""
        k = self.k if k is None else k
        if len(delta) != self.dim:
            raise SchemaError(f"change has {len(delta)} coordinates; the chart has {self.dim}")
        target = [float(d) + r for d, r in zip(delta, self.residual, strict=True)]
        for i, v in enumerate(target):
            if not math.isfinite(v):
                raise SchemaError(f"change of coordinate {i} plus its residual is {v}")
            if abs(v) > FLOAT24_MAX:
                raise SchemaError(
                    f"change of coordinate {i} plus its residual is {v:.6g}: beyond the largest"
                    f" coordinate a basin stores ({FLOAT24_MAX:.6g})"
                )
        change = self.encoding.encode(target, k)
        sent = change.decode()
        self.residual = [t - s for t, s in zip(target, sent, strict=True)]
        return change

    def reset(self) -> None:
        self.residual = [0.0] * self.dim


# -- Fisher values of the sent coordinates ------------------------------------------------------


@dataclass(frozen=True)
class SentFisher:
    """Fisher values of the sent coordinates, in the order of the change's indices: 4-bit log
    codes relative to their maximum, code c > 0 meaning max·2^((c − 15)/2), code 0 meaning 0."""

    max: float
    codes: bytes

    @classmethod
    def encode(cls, values: Sequence[float]) -> SentFisher:
        for i, v in enumerate(values):
            if not math.isfinite(v) or v < 0:
                raise SchemaError(f"Fisher value {i} is {v}: it must be finite and >= 0")
        top = float(max(values, default=0.0))
        if not top > 0:
            raise SchemaError("Fisher values of the sent coordinates are all zero: leave them out")
        codes = []
        for v in values:
            ratio = v / top
            codes.append(0 if ratio <= 0 else max(0, round(_FISHER_TOP + 2 * math.log2(ratio))))
        return cls(top, _pack(codes, FISHER_BITS))

    @classmethod
    def for_change(cls, change: Change, fisher: Sequence[float]) -> SentFisher:
        """The values of a dense Fisher diagonal (d values) at the coordinates `change` sends."""
        if len(fisher) != change.dim:
            raise SchemaError(
                f"Fisher diagonal has {len(fisher)} values; the chart has {change.dim}"
            )
        return cls.encode([fisher[i] for i in change.indices])

    def check(self, k: int) -> list[int]:
        """The codes, checked against k sent coordinates."""
        _finite(self.max, "update fisher max")
        if not self.max > 0:
            raise SchemaError(f"update fisher max {self.max} must be > 0")
        codes = _unpack(
            _typed(self.codes, bytes, "update fisher codes"), k, FISHER_BITS, "fisher codes"
        )
        if _FISHER_TOP not in codes:
            raise SchemaError(
                f"update fisher codes never reach {_FISHER_TOP} (the maximum): not canonical"
            )
        return codes

    def decode(self, k: int) -> list[float]:
        """The k Fisher values."""
        return [self.max * 2.0 ** ((c - _FISHER_TOP) / 2) if c else 0.0 for c in self.check(k)]

    def to_node(self) -> dict:
        return {"max": self.max, "codes": self.codes}

    @classmethod
    def from_node(cls, node: Any) -> SentFisher:
        node = _fields(node, "update fisher", {"max", "codes"})
        return cls(node["max"], node["codes"])


# -- the record ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Update(_Signed):
    """A signed change of the shared basin, computed from the head commit `parent`."""

    TYPE = UPDATE_TYPE

    chart: Chart
    parent: CID  # the head commit the change was computed from
    round: int
    seq: int  # per signer, only grows
    change: Change
    samples: int  # samples or steps behind the change, ≥ 1
    author: bytes
    fisher: SentFisher | None = None
    beta: tuple[float, ...] | None = None  # the change of β's coefficients
    links: tuple[Entanglement, ...] | None = None  # concept links as the signer measures them
    signature: bytes = b""

    def __post_init__(self) -> None:
        _typed(self.chart, Chart, "update chart")
        parent = _typed(self.parent, CID, "update parent").buffer
        if len(parent) != 36 or parent[:4] != bytes([1, DAG_CBOR, SHA2_256, 32]):
            raise SchemaError(f"update parent {self.parent} is not a commit's CID (v1 dag-cbor)")
        if not 0 <= _typed(self.round, int, "update round") < _INT63:
            raise SchemaError(f"update round {self.round} is out of range")
        if not 0 <= _typed(self.seq, int, "update seq") < _INT63:
            raise SchemaError(f"update seq {self.seq} is out of range")
        change = _typed(self.change, Change, "update change")
        if change.dim != self.chart.dim:
            raise SchemaError(
                f"update change has {change.dim} coordinates; its chart has {self.chart.dim}"
            )
        if not 1 <= _typed(self.samples, int, "update samples") < _INT63:
            raise SchemaError(f"update samples {self.samples} must be 1..2^63-1")
        if len(_typed(self.author, bytes, "update author")) != 32:
            raise SchemaError("update author must be a 32-byte Ed25519 public key")
        if self.fisher is not None:
            if not change.k:
                raise SchemaError("update sends no coordinate but has Fisher values")
            _typed(self.fisher, SentFisher, "update fisher").check(change.k)
        if self.beta is not None:
            beta = _typed(self.beta, tuple, "update beta")
            for b in beta:
                _finite(b, "update beta change")
            if not 1 <= len(beta) <= MAX_BETA:
                raise SchemaError(
                    f"update beta has {len(beta)} coefficients; 1..{MAX_BETA} allowed"
                )
            if not any(beta):
                raise SchemaError("update beta change is all zero: leave it out")
        if self.links is not None:
            links = _typed(self.links, tuple, "update links")
            if not 1 <= len(links) <= MAX_LINKS:
                raise SchemaError(f"update has {len(links)} links; 1..{MAX_LINKS} allowed")
            pairs = [(_typed(e, Entanglement, "update link").a, e.b) for e in links]
            if any(p >= q for p, q in zip(pairs, pairs[1:], strict=False)):
                raise SchemaError("update links must be distinct pairs in increasing (a, b) order")
        _typed(self.signature, bytes, "update signature")
        size = len(self.signing_bytes()) + _SIGNATURE_ENTRY
        limit = update_limit(self.chart)
        if size > limit:
            raise SchemaError(
                f"update record is {size} bytes; the limit at d={self.chart.dim} is {limit}"
            )

    @property
    def encoding(self) -> str:
        return self.change.encoding

    @property
    def scope(self) -> str:
        """Whose sequence `seq` belongs to: the signer."""
        return format_key(self.author)

    def delta(self) -> list[float]:
        """The dense change of z (d floats)."""
        return self.change.decode()

    def fisher_values(self) -> list[float] | None:
        """The Fisher values of the sent coordinates, in the order of `change.indices`."""
        return None if self.fisher is None else self.fisher.decode(self.change.k)

    def unsigned_node(self) -> dict:
        return dict(self._node)

    def signing_bytes(self) -> bytes:
        return self._signing_bytes

    # Computed once per record: the size check, the canonical-form check and the signature each
    # need them, and a coordinator decodes thousands of updates a second. The record is frozen.
    @cached_property
    def _signing_bytes(self) -> bytes:
        return dagcbor.encode(self._node)

    def __getstate__(self) -> dict:
        """Pickled without the cached encodings: the server's decoding processes send records
        on to a coordinator that needs their fields, not their bytes."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_node", "_signing_bytes")}

    @cached_property
    def _node(self) -> dict:
        node: dict[str, Any] = {
            "type": UPDATE_TYPE,
            "version": FORMAT_VERSION,
            "chart": self.chart.to_node(),
            "parent": self.parent,
            "round": self.round,
            "seq": self.seq,
            "encoding": self.change.encoding,
            "delta": self.change.to_node(),
            "samples": self.samples,
            "author": self.author,
        }
        if self.fisher is not None:
            node["fisher"] = self.fisher.to_node()
        if self.beta is not None:
            node["beta"] = list(self.beta)
        if self.links is not None:
            node["links"] = [e.to_node() for e in self.links]
        return node

    @classmethod
    def from_node(cls, node: Any) -> Update:
        _check_type(node, UPDATE_TYPE)
        required = {"type", "version", "chart", "parent", "round", "seq", "encoding", "delta"}
        required |= {"samples", "author", "signature"}
        node = _fields(node, "update record", required, {"fisher", "beta", "links"})
        chart = Chart.from_node(node["chart"])
        change = get_encoding(node["encoding"]).from_node(node["delta"], chart.dim)
        return cls(
            chart=chart,
            parent=_typed(node["parent"], CID, "update parent"),
            round=node["round"],
            seq=node["seq"],
            change=change,
            samples=node["samples"],
            author=_typed(node["author"], bytes, "update author"),
            fisher=SentFisher.from_node(node["fisher"]) if "fisher" in node else None,
            beta=tuple(_typed(node["beta"], list, "update beta")) if "beta" in node else None,
            links=_links(node["links"]) if "links" in node else None,
            signature=_signature(node["signature"], "update record"),
        )

    @classmethod
    def decode(cls, data: bytes, *, chart: Chart | None = None) -> Update:
        """An update from its block, strictly: within the size limit, valid, canonical and
        correctly signed. With `chart` (the shared basin's), the limit is that chart's and an
        update in any other chart is refused."""
        data = _typed(data, bytes, "update block")
        limit = _ABSOLUTE_LIMIT if chart is None else update_limit(chart)
        if len(data) > limit:
            where = "" if chart is None else f" at d={chart.dim}"
            raise SchemaError(f"update record is {len(data)} bytes; the limit{where} is {limit}")
        # A record whose own encoding is `data` proves the bytes canonical DAG-CBOR, so the
        # codec's check (a second encoding) is needed only where that fails: there it names
        # what is wrong, as it always did. A coordinator decodes thousands a second.
        try:
            record = cls.from_node(dagcbor.parse(data))
            canonical = record.encode() == data
        except Exception:
            canonical = False
        if not canonical:
            record = cls.from_node(dagcbor.decode(data))
        if chart is not None and record.chart != chart:
            raise SchemaError(f"update is in chart {record.chart}, not in {chart}")
        if not canonical and record.encode() != data:
            raise SchemaError(f"{UPDATE_TYPE} record is not in canonical form")
        record.verify_signature()
        return record


def _links(node: Any) -> tuple[Entanglement, ...]:
    return tuple(Entanglement.from_node(e) for e in _typed(node, list, "update links"))


def fitting_k(update: Update, encoding: str = DEFAULT_ENCODING) -> int:
    """The most coordinates a change in `encoding` can send in `update`'s place, its other fields
    as they are, within 600 bytes at d = 1024 (⌈600·d/1024⌉ above; the chart's mask counted in
    them), or within the record's limit (update_limit) where the mask leaves no room for that.

    What a hive sender sends when no k is given: every update uses the bytes it may, since more
    coordinates per round carry more of each instance's change (docs/experiments/hive.md). A
    record grows with k (packed indices, codes, Fisher codes), so bisection finds the largest k.
    """
    enc = get_encoding(encoding)
    dim = update.chart.dim
    node = update.unsigned_node()
    node["encoding"] = enc.name

    def size(k: int) -> int:
        widest = Change(enc.name, dim, tuple(range(k)), (enc.top,) * k, 1.0 if k else 0.0)
        node["delta"] = enc.to_node(widest)
        if update.fisher is not None:
            node["fisher"] = {"max": 1.0, "codes": bytes(-(-k * FISHER_BITS // 8))}
        return len(dagcbor.encode(node)) + _SIGNATURE_ENTRY

    budget = max(MAX_UPDATE_BYTES, -(-MAX_UPDATE_BYTES * dim // 1024))
    if size(1) > budget:
        budget = update_limit(update.chart)
    low, high = 0, dim  # size(low) fits (or nothing does); find the largest k that fits
    while low < high:
        mid = (low + high + 1) // 2
        if size(mid) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


def next_update(
    compressor: Compressor, delta: Sequence[float], *, k: int | None = None, **fields: Any
) -> Update:
    """The unsigned update with `fields` (chart, parent, round, seq, samples, author) sending the
    compressor's next change of `delta`: k coordinates, or as many as fit (fitting_k)."""
    nothing = Change(compressor.encoding.name, compressor.dim, (), (), 0.0)
    template = Update(change=nothing, **fields)
    if k is None:
        k = fitting_k(template, compressor.encoding.name)
    return replace(template, change=compressor.compress(delta, k))
