"""The `hf` family: any Hugging Face transformers architecture kept as a folder.

`basin substrate add NAME --from DIR` reads DIR's ``config.json`` (through transformers, local
files only, never remote code) and its safetensors weights (``model.safetensors`` or a sharded
index), builds the architecture on the meta device to learn its tensors, and writes a registry
entry that is itself a folder transformers loads: config.json, the tokenizer and other small files
copied from DIR, ``model.safetensors`` holding θ0 under the architecture's own tensor names, and
meta.json.

What counts as a tensor of the substrate (its specs, in the module's state_dict order):
- every parameter, once: tied weights (an LM head tied to the embeddings) are one tensor, stored
  and projected under their first name, as save_pretrained writes them;
- buffers the checkpoint holds (integer position ids, masks), carried as fixed θ0, never projected;
  buffers it lacks (rotary ``inv_freq``) are left to the architecture, which computes them;
- parameters the checkpoint lacks are refused, unless named by a ``zero_init`` pattern: a new task
  head starts at zero inside θ0, so the basin carries the whole specialist.
Checkpoint names may carry or lack the architecture's base-model prefix (``bert.``, ``model.``);
both are read. Checkpoint tensors the architecture has no place for are left out (and listed in
meta.json), as transformers does.

Depth for β: tensors in numbered block stacks (``layers.N.``, ``layer.N.``, ``h.N.``,
``blocks.N.``, ``block.N.``) are placed in order, several stacks one after another (encoder
stacks before decoder stacks), at (position + 1) / (total layers + 1); other tensors sit at 0 before
the first stack and at the depth of the stack they follow, 1 after the last. The rule's name
and every depth are in the fingerprint; the transformers version is recorded in meta.json.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from fnmatch import fnmatchcase
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from ...errors import SchemaError
from ...inputs import parse_json, read_file
from ...progress import progress_bar
from ..modelio import DTYPES as ST_NAMES
from ..modelio import (
    INDEX_FILE,
    SINGLE_FILE,
    TORCH_SUFFIXES,
    TensorFile,
    open_model,
    parse_header,
    write_model,
)
from ..substrate import (
    DTYPES,
    Header,
    Substrate,
    TensorSpec,
    file_digest,
)

WEIGHTS = SINGLE_FILE
CONFIG = "config.json"
DEPTH_RULE = "stacks/v1"
_STACK = re.compile(r"(?:^|\.)(layers|layer|h|blocks|block)\.(\d+)\.")
_WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")
_SKIP_FILES = {"meta.json", CONFIG, INDEX_FILE}
# transformers' progress-bar switch is process-wide: `build` turns it off and back under this
_QUIET = threading.Lock()
MAX_COPIED_FILE = 64 * 1024**2  # tokenizers and small configs; anything larger is not one
_BY_NAME = {code: dtype for dtype, code in ST_NAMES.items()}  # safetensors name -> torch dtype


class HFSubstrate(Substrate):
    """A registered Hugging Face folder: θ0 from its safetensors, the module from transformers."""

    family = "hf"
    kind = "user"

    def __init__(self, name: str, path: Path, meta: dict) -> None:
        self.name = name
        self.path = path
        self.weights = path / WEIGHTS
        self.architecture: str = meta["architecture"]
        self.specs = [
            TensorSpec(n, tuple(shape), _dtype(d), float(depth), bool(projected))
            for n, shape, d, depth, projected in meta["tensors"]
        ]
        self.theta0_digest = bytes.fromhex(meta["theta0_sha256"])
        self.num_layers = int(meta["num_layers"])
        self.prefix: str = meta.get("prefix", "")
        self.tied: dict[str, str] = dict(meta.get("tied", {}))  # alias -> stored name
        config = read_config(path)
        self.fingerprint = fingerprint(self.architecture, config, self.specs, self.theta0_digest)
        # θ0's header, parsed once: checked against the specs on loading, then taken again by
        # every checkout's TensorFile while the file holds the same bytes
        self.weights_header = parse_header(self.weights)

    def theta0(self, spec: TensorSpec) -> torch.Tensor:
        if self.spec(spec.name) != spec:
            raise SchemaError(f"tensor {spec.name} is not part of substrate {self.name}")
        with safe_open(str(self.weights), framework="pt") as fh:
            t = fh.get_tensor(spec.name)
        # callers write into θ0 in place: never hand out a view of the mapped file
        return t.to(torch.float32, copy=True) if t.dtype.is_floating_point else t.clone()

    @contextmanager
    def theta0_pieces(self, size: int) -> Iterator[Callable[[TensorSpec], Iterator[torch.Tensor]]]:
        """`pieces(spec)`: θ0 of one tensor flattened, `size` values at a time, as `theta0` has it
        (float32, or the stored dtype), read from the file into one buffer that every piece
        reuses: a piece is valid until the next is asked for. For streaming all of θ0 once (a
        checkout): no mapping to fault in and unmap, no tensor-sized allocation, and the piece
        stays in cache while the caller works on it."""
        buffer = torch.empty(size, dtype=torch.float32)
        scratch = torch.empty(size * 8, dtype=torch.uint8)  # stored dtypes other than float32
        known = set(self.specs)

        def pieces(spec: TensorSpec) -> Iterator[torch.Tensor]:
            if spec not in known:
                raise SchemaError(f"tensor {spec.name} is not part of substrate {self.name}")
            for start in range(0, spec.numel, size):
                n = min(size, spec.numel - start)
                if spec.dtype == torch.float32:
                    fh.read_into(spec.name, start, buffer[:n])
                    yield buffer[:n]
                else:
                    raw = scratch[: n * spec.dtype.itemsize].view(spec.dtype)
                    fh.read_into(spec.name, start, raw)
                    yield buffer[:n].copy_(raw) if spec.dtype.is_floating_point else raw

        with TensorFile(self.weights, self.weights_header) as fh:
            yield pieces

    def build(self) -> nn.Module:
        """The architecture with θ0 loaded by transformers itself (ties and buffers its way)."""
        from transformers.utils import logging

        cls = architecture_class(self.architecture)
        with _QUIET:  # threads building at once (hive instances) restore the setting in turn
            bars = logging.is_progress_bar_enabled()
            logging.disable_progress_bar()  # ours show on a terminal only; its own would not
            try:
                model = cls.from_pretrained(
                    str(self.path), dtype=torch.float32, local_files_only=True
                )
            finally:
                if bars:
                    logging.enable_progress_bar()
        return model.eval()

    def skeleton(self) -> nn.Module:
        return self.build()

    def tensor_map(self, header: Header, *, check_dtype: bool = True) -> dict[str, str]:
        """Spec name -> file tensor name: the file may add or drop the base-model prefix, hold
        tied aliases (ignored) and lack buffers (θ0 then stands for them)."""
        names = {s.name for s in self.specs} | set(self.tied)
        rename = _best_rename(names, set(header), self.prefix)
        out: dict[str, str] = {}
        for s in self.specs:
            key = rename(s.name)
            if key not in header:
                if not s.projected:
                    continue
                raise SchemaError(f"model does not fit substrate {self.name}: missing tensor {key}")
            dtype, shape = header[key]
            if tuple(shape) != s.shape:
                raise SchemaError(
                    f"model does not fit substrate {self.name}: tensor {key} has shape "
                    f"{list(shape)}, expected {list(s.shape)}"
                )
            if check_dtype and s.projected and dtype not in DTYPES:
                raise SchemaError(f"model tensor {key} has unsupported dtype {dtype}")
            out[s.name] = key
        known = set(out.values()) | {rename(a) for a in self.tied}
        if extra := sorted(set(header) - known):
            raise SchemaError(
                f"model does not fit substrate {self.name}: unexpected tensor {extra[0]}"
            )
        return out

    def folder_files(self) -> dict[str, Path]:
        return {
            p.name: p
            for p in sorted(self.path.iterdir())
            if p.is_file() and p.name != "meta.json" and not p.name.endswith(_WEIGHT_FILES)
        }


# -- adding a folder ----------------------------------------------------------------------------


MAX_CONFIG_BYTES = 16 << 20


def read_config(folder: Path) -> object:
    """A folder's config.json, read as strict, bounded JSON."""
    return parse_json(read_file(folder / CONFIG, MAX_CONFIG_BYTES, "config"), str(folder / CONFIG))


def check_source(source: Path) -> None:
    """Refuse, in one line, what is not a Hugging Face folder of safetensors weights."""
    if not source.is_dir():
        if source.suffix == ".gguf":
            raise SchemaError(
                f"{source} is a GGUF file: convert it to a Hugging Face folder first "
                "(python scripts/gguf_to_hf.py FILE -o DIR), then add DIR"
            )
        raise SchemaError(f"{source} is not a folder: give the model's Hugging Face folder")
    if not (source / CONFIG).exists():
        raise SchemaError(f"{source} has no config.json: not a Hugging Face model folder")
    # strictly, before transformers reads it (it would recurse into any nesting, take NaN)
    if not isinstance(read_config(source), dict):
        raise SchemaError(f"{source / CONFIG} is not a JSON object")
    if (source / SINGLE_FILE).is_file() or (source / INDEX_FILE).is_file():
        return
    if list(source.glob("*.gguf")):
        raise SchemaError(
            f"{source} holds GGUF weights only: convert them first "
            "(python scripts/gguf_to_hf.py FILE -o DIR)"
        )
    pickles = sorted(p.name for p in source.iterdir() if p.suffix in TORCH_SUFFIXES)
    if pickles:
        raise SchemaError(
            f"{source} holds only {pickles[0]}, a pickle, which basin never unpickles: convert it "
            "where you trust it, e.g. AutoModel.from_pretrained(DIR).save_pretrained(OUT), which "
            "writes model.safetensors"
        )
    raise SchemaError(f"{source} holds no {SINGLE_FILE} or {INDEX_FILE}")


def architecture_class(name: str) -> type:
    """The transformers class of an architecture name (never remote code)."""
    import transformers

    cls = getattr(transformers, name, None) if name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise SchemaError(
            f"transformers {transformers.__version__} cannot build architecture {name!r}"
        )
    return cls


def add_user(
    name: str,
    source: Path,
    folder: Path,
    *,
    architecture: str | None,
    config_overrides: dict,
    zero_init: Sequence[str],
) -> tuple[HFSubstrate, dict]:
    """Write an `hf` registry entry for `source` into `folder`; return it and its meta fields."""
    import transformers

    config = _config(source, config_overrides)
    arch = architecture or (getattr(config, "architectures", None) or [None])[0]
    if arch is None:
        raise SchemaError(f"{source / CONFIG} names no architecture: give --architecture")
    cls = architecture_class(arch)
    config.architectures = [arch]
    with open_model(source) as reader:
        header = reader.header()
        _check_depth(config, header)
        model = _skeleton(cls, config)
        prefix = getattr(model, "base_model_prefix", "") or ""
        plan, tied, ignored = _plan(model, header, prefix, zero_init)
        depths = _depths([n for n, *_ in plan])
        specs = [
            TensorSpec(n, shape, dtype, depth, projected)
            for (n, shape, dtype, projected, _), depth in zip(plan, depths, strict=True)
        ]

        def stream():
            for s, (_, _, _, _, key) in zip(specs, plan, strict=True):
                t = reader.tensor(key) if key is not None else torch.zeros(s.shape, dtype=s.dtype)
                yield s.name, t.to(s.dtype)

        total = sum(s.numel * s.dtype.itemsize for s in specs)
        with progress_bar(total, f"add {name}") as update:
            write_model(
                folder / WEIGHTS,
                [(s.name, s.shape, s.dtype) for s in specs],
                stream(),
                dtype=torch.float32,
                max_shard_bytes=1 << 62,
                metadata={"basinvcs.substrate": name},
                progress=update,
            )
    config.save_pretrained(str(folder))
    _copy_small_files(source, folder)
    meta = {
        "architecture": arch,
        "transformers": transformers.__version__,
        "depth_rule": DEPTH_RULE,
        "prefix": prefix,
        "tensors": [
            [
                s.name,
                list(s.shape),
                ST_NAMES[s.dtype],
                s.depth,
                s.projected,
            ]
            for s in specs
        ],
        "tied": tied,
        "ignored": ignored,
        "num_layers": sum(_stacks([s.name for s in specs]).values()),
        "theta0_sha256": file_digest(folder / WEIGHTS, specs).hex(),
    }
    return HFSubstrate(name, folder, meta), meta


def load_user(name: str, path: Path, meta: dict) -> HFSubstrate:
    sub = HFSubstrate(name, path, meta)
    header = sub.weights_header.header()
    for s in sub.specs:
        if s.name not in header or tuple(header[s.name][1]) != s.shape:
            raise SchemaError(f"{sub.weights} does not hold tensor {s.name} as meta.json says")
    return sub


def fingerprint(
    architecture: str, config: dict, specs: list[TensorSpec], theta0_digest: bytes
) -> bytes:
    """sha2-256 over architecture, config (less the writer's version), depth rule, every tensor's
    name, shape, dtype, depth and projection, and θ0's digest."""
    doc = {k: v for k, v in config.items() if k != "transformers_version"}
    h = hashlib.sha256(b"basinvcs-substrate/hf/v1\n")
    h.update(f"architecture {architecture}\n".encode())
    h.update(f"config {json.dumps(doc, sort_keys=True, separators=(',', ':'))}\n".encode())
    h.update(f"depth {DEPTH_RULE}\n".encode())
    for s in specs:
        kind = "projected" if s.projected else "fixed"
        h.update(
            f"tensor {s.name} {list(s.shape)} {ST_NAMES[s.dtype]} {s.depth!r} {kind}\n".encode()
        )
    h.update(theta0_digest)
    return h.digest()


def _config(source: Path, overrides: dict):
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(str(source), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SchemaError(f"cannot read {source / CONFIG}: {first}") from None
    for key, value in overrides.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise SchemaError(f"bad config key {key!r}")
        try:
            setattr(config, key, value)
        except Exception as exc:  # noqa: BLE001 - configs validate with errors of their own
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SchemaError(f"cannot set config {key} to {value!r}: {first}") from None
    return config


def _check_depth(config, header: Header) -> None:
    """Refuse a config with more layers than the checkpoint holds before building it: even on the
    meta device, a config claiming 10^11 layers would take forever to build."""
    claimed = getattr(config, "num_hidden_layers", None)
    held = sum(_stacks(list(header)).values())
    if isinstance(claimed, int) and held and claimed > held:
        raise SchemaError(
            f"the config has {claimed} layers, but the checkpoint holds weights for {held}"
        )


def _skeleton(cls: type, config) -> nn.Module:
    """The architecture on the meta device: its tensor names, shapes and ties, no memory."""
    try:
        with torch.device("meta"):
            return cls(config).eval()
    except Exception as exc:  # noqa: BLE001 - any failure of a foreign constructor is one line
        raise SchemaError(f"cannot build {cls.__name__} from this config: {exc}") from None


def _plan(
    model: nn.Module, header: Header, prefix: str, zero_init: Sequence[str]
) -> tuple[list[tuple[str, tuple[int, ...], torch.dtype, bool, str | None]], dict, list[str]]:
    """(name, shape, dtype, projected, checkpoint key or None for zeros) per tensor; tied aliases;
    checkpoint tensors left out."""
    params = dict(model.named_parameters())  # tied parameters once, under their first name
    first = {id(p): n for n, p in params.items()}
    tied = {
        n: first[id(p)]
        for n, p in model.named_parameters(remove_duplicate=False)
        if n not in params
    }
    buffers = dict(model.named_buffers())
    order = list(model.state_dict(keep_vars=True)) + [b for b in buffers if b not in params]
    rename = _best_rename(set(params) | set(buffers) | set(tied), set(header), prefix)
    plan, used = [], set()
    for name in dict.fromkeys(order):
        if name in tied:
            continue
        key = rename(name)
        tensor = params.get(name, buffers.get(name))
        shape = tuple(tensor.shape)
        if key not in header:
            if name in buffers:
                continue  # the architecture computes it (rotary inv_freq, non-persistent ids)
            if not any(fnmatchcase(name, p) for p in zero_init):
                raise SchemaError(
                    f"the checkpoint lacks parameter {name} of {type(model).__name__}: a new head "
                    f"can start at zero with --zero-init '{name.rsplit('.', 1)[0]}.*'"
                )
            plan.append((name, shape, torch.float32, True, None))
            continue
        dtype_name, file_shape = header[key]
        if tuple(file_shape) != shape:
            raise SchemaError(
                f"checkpoint tensor {key} has shape {list(file_shape)}, but the config makes it "
                f"{list(shape)}"
            )
        used.add(key)
        is_param = name in params
        if is_param and dtype_name not in DTYPES:
            raise SchemaError(f"checkpoint parameter {key} has unsupported dtype {dtype_name}")
        dtype = _dtype(dtype_name)
        plan.append((name, shape, dtype, is_param and dtype.is_floating_point, key))
    used |= {rename(a) for a in tied}
    ignored = sorted(set(header) - used)
    if not any(projected for *_, projected, _ in plan):
        raise SchemaError("the architecture has no floating-point parameter to project")
    return plan, tied, ignored


def _best_rename(names: set[str], keys: set[str], prefix: str):
    """How module names appear in a file: as they are, with the base-model prefix added, or with it
    removed; whichever finds the most of them."""
    p = f"{prefix}." if prefix else ""
    candidates = [lambda n: n]
    if p:
        candidates += [lambda n: p + n, lambda n: n.removeprefix(p)]
    return max(candidates, key=lambda f: sum(f(n) in keys for n in names))


def _stacks(names: list[str]) -> dict[str, int]:
    """Numbered block stacks: prefix -> layer count, in order of first appearance."""
    stacks: dict[str, int] = {}
    for n in names:
        if m := _STACK.search(n):
            stacks[n[: m.start(2)]] = max(stacks.get(n[: m.start(2)], 0), int(m[2]) + 1)
    return stacks


def _depths(names: list[str]) -> list[float]:
    """The stacks rule of the module docstring."""
    stacks = _stacks(names)

    def rank(stack: str) -> tuple[int, int]:
        role = 0 if "encoder" in stack else 2 if "decoder" in stack else 1
        return role, list(stacks).index(stack)

    offsets, total = {}, 0
    for stack in sorted(stacks, key=rank):
        offsets[stack] = total
        total += stacks[stack]
    out, last = [], 0  # last: position (1-based) of the most recent layer seen; 0 before any
    for n in names:
        if m := _STACK.search(n):
            last = offsets[n[: m.start(2)]] + int(m[2]) + 1
            out.append(last / (total + 1))
        else:  # after the deepest layer of all: the output end, 1 (as gpt's ln_f)
            out.append(1.0 if last == total and total else last / (total + 1))
    return out


def _copy_small_files(source: Path, folder: Path) -> None:
    """Tokenizer, generation config and the like; never weights, never the source's config."""
    for p in sorted(source.iterdir()):
        if (
            p.is_file()
            and not p.is_symlink()
            and p.name not in _SKIP_FILES
            and not p.name.startswith(".")
            and not p.name.endswith(_WEIGHT_FILES)
            and p.stat().st_size <= MAX_COPIED_FILE
        ):
            shutil.copyfile(p, folder / p.name)


def _dtype(name: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype name (any the files may hold, integers included)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise SchemaError(f"unsupported tensor dtype {name}") from None
