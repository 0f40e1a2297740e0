"""Substrates: a model architecture together with its base weights θ0, behind one interface.

A substrate tells the rest of basinvcs what a model file must hold (`specs`: every tensor's name,
shape, dtype, depth for β and whether the chart projects it), hands out θ0 one tensor at a time,
builds a runnable module, and has a fingerprint that pins all of that. Two families implement it,
one module each under `families/`:

- `gpt`: our own GPT-style decoder (presets `tiny` … `10B` with generated θ0, and user checkpoints);
- `hf`: any Hugging Face transformers architecture kept as a folder (config.json + safetensors).

The registry (`registry.py`) finds substrates by name or by a model file's tensors.
Only floating-point parameters are projected; other tensors (integer position ids, masks, buffers)
are carried as fixed θ0.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from ..errors import SchemaError, SubstrateError  # noqa: F401  (SubstrateError: its users import it here)
from .modelio import read_safetensors_header

Header = dict[str, tuple[str, tuple[int, ...]]]  # tensor name -> (safetensors dtype, shape)
DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}  # float θ0 in files
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a substrate: what a model file must hold, where β evaluates it, and whether
    the chart's projection moves it (only floating-point parameters are projected)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    depth: float
    projected: bool = True

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class Substrate:
    """The interface every family implements; see the module docstring."""

    family: str
    name: str
    kind: str  # "preset" or "user"
    specs: list[TensorSpec]
    theta0_digest: bytes
    fingerprint: bytes
    num_layers: int
    weights: Path | None = None  # the file θ0 is read from; None where θ0 is generated (presets)

    @property
    def num_params(self) -> int:
        """Floating-point parameters: what a model of this substrate has to learn with."""
        return sum(s.numel for s in self.specs if s.dtype.is_floating_point)

    def __repr__(self) -> str:
        return f"Substrate({self.name!r}, {self.family} {self.kind}, {self.num_params} parameters)"

    def spec(self, name: str) -> TensorSpec:
        for s in self.specs:
            if s.name == name:
                return s
        raise SchemaError(f"tensor {name} is not part of substrate {self.name}")

    def theta0(self, spec: TensorSpec) -> torch.Tensor:
        """The base value of one tensor, freshly allocated: float32 for floating-point tensors,
        the stored dtype for the others."""
        raise NotImplementedError

    def theta0_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor of θ0 at once: for small substrates, the 10B one needs 40 GB."""
        return {s.name: self.theta0(s) for s in self.specs}

    @contextmanager
    def theta0_pieces(self, size: int) -> Iterator[Callable[[TensorSpec], Iterator[torch.Tensor]]]:
        """`pieces(spec)`: θ0 of one tensor flattened, `size` values at a time, as `theta0` has
        it, for streaming all of θ0 once (a checkout). Here pieces of `theta0(spec)`; a family
        whose θ0 is a file reads it piece by piece instead (`hf`)."""
        yield lambda spec: iter(self.theta0(spec).reshape(-1).split(size))

    def build(self) -> nn.Module:
        """A runnable model holding θ0 (float32), in eval mode."""
        raise NotImplementedError

    def skeleton(self) -> nn.Module:
        """A module to run with `torch.func.functional_call`: the caller supplies every projected
        tensor; tensors the module holds on the meta device must be supplied too."""
        raise NotImplementedError

    def tensor_map(self, header: Header, *, check_dtype: bool = True) -> dict[str, str]:
        """Spec name -> tensor name in a model file with this header, or SchemaError naming the
        first difference. Files of this family name tensors as the specs do."""
        if problem := mismatch(self.specs, header, check_dtype=check_dtype):
            raise SchemaError(f"model does not fit substrate {self.name}: {problem}")
        return {s.name: s.name for s in self.specs}

    def fits(self, header: Header) -> bool:
        """Whether a file's tensors are this substrate's by name and shape (dtypes aside)."""
        try:
            self.tensor_map(header, check_dtype=False)
        except SchemaError:
            return False
        return True

    def match(self, header: Header) -> None:
        """Refuse a model file (its header) that is not this substrate, naming the first problem."""
        self.tensor_map(header)

    def folder_files(self) -> dict[str, Path]:
        """Files a checkout writes beside the weights (config, tokenizer): name -> source."""
        return {}


def mismatch(specs: list[TensorSpec], header: Header, *, check_dtype: bool) -> str | None:
    """The first difference between specs and a header, in spec order; unexpected tensors last."""
    for s in specs:
        if s.name not in header:
            return f"missing tensor {s.name}"
        dtype, shape = header[s.name]
        if tuple(shape) != s.shape:
            return f"tensor {s.name} has shape {list(shape)}, expected {list(s.shape)}"
        if check_dtype and s.projected and dtype not in DTYPES:
            return f"tensor {s.name} has unsupported dtype {dtype} (accepted: {', '.join(DTYPES)})"
    names = {s.name for s in specs}
    extra = sorted(k for k in header if k not in names)
    return f"unexpected tensor {extra[0]}" if extra else None


def likeness(specs: list[TensorSpec], header: Header) -> int:
    """Tensors that agree in name and shape, less those that do not: to pick the nearest."""
    agree = sum(1 for s in specs if s.name in header and tuple(header[s.name][1]) == s.shape)
    return 2 * agree - len(specs) - len(header)


def read_header(path: Path) -> Header:
    """Tensor names, dtypes and shapes of a safetensors file, without loading any tensor."""
    if Path(path).is_dir():
        raise SchemaError(f"{path} is a directory, not a safetensors file")
    return read_safetensors_header(Path(path))[0]


def file_digest(
    weights: Path, specs: list[TensorSpec], progress: Callable[[int], None] | None = None
) -> bytes:
    """sha2-256 of the tensors' stored bytes in canonical order, one tensor in memory at a time:
    the θ0 digest of a registered substrate. `progress(n)` hears of every n bytes hashed."""
    h = hashlib.sha256()
    with safe_open(str(weights), framework="pt") as fh:
        for s in specs:
            data = fh.get_tensor(s.name).reshape(-1).view(torch.uint8).numpy()
            h.update(data)
            if progress is not None:
                progress(data.nbytes)
    return h.digest()
