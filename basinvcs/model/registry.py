"""The substrate registry: presets, and user substrates under ``basin_home()/substrates/NAME/``.

Each user entry is a folder written to a temporary name and renamed into place (atomic; a
concurrent add of the same name loses cleanly), holding its family's files and ``meta.json``:
family, fingerprint, parameter count and the family's own fields. Loading an entry recomputes
its fingerprint and refuses one that differs from meta.json (a corrupted or edited entry).

θ0's bytes are pinned by the sha2-256 in meta.json, and hashing them takes a while (0.3 s for
MiniLM, 2 s for SmolLM2), so loading hashes them only when the file's size, mtime or ctime differ
from those recorded (``theta0.checked``) when they last matched, as git's index does; any write
to the file changes its ctime. ``verify_substrates`` hashes them always.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from safetensors import SafetensorError

from ..atomic import replacing
from ..errors import InputError, SchemaError
from ..identity import basin_home
from ..inputs import parse_json, read_file
from ..objects import check_label
from ..progress import progress_bar
from .families import gpt
from .substrate import Header, Substrate, SubstrateError, file_digest, likeness, mismatch

REGISTRY = "substrates"
META = "meta.json"
CHECKED = "theta0.checked"  # the θ0 file's size, mtime and ctime when its bytes last matched
FAMILIES = ("gpt", "hf")


def preset_names() -> list[str]:
    return gpt.preset_names()


def load_substrate(name: str) -> Substrate:
    if name in gpt.PRESETS:
        return gpt.preset(name)
    if name in _user_names():
        return _load_user(name)
    known = ", ".join(preset_names() + _user_names())
    raise SubstrateError(f"unknown substrate {name!r} (known: {known})")


def list_substrates() -> list[Substrate]:
    """Presets first, then user substrates by name; nothing generates θ0."""
    return [gpt.preset(n) for n in gpt.PRESETS] + [_load_user(n) for n in _user_names()]


def find_substrate(header: Header) -> Substrate:
    """The one substrate whose tensors are those of a model file's header (names and shapes)."""
    candidates = list_substrates()
    found = [s for s in candidates if s.fits(header)]
    if len(found) > 1:
        names = ", ".join(s.name for s in found)
        raise SubstrateError(f"several substrates match: {names}; name one with --substrate")
    if not found:
        nearest = max(candidates, key=lambda s: likeness(s.specs, header))
        problem = mismatch(nearest.specs, header, check_dtype=False)
        raise SubstrateError(
            f"no substrate matches: first difference from nearest {nearest.name}: {problem}"
        )
    found[0].match(header)  # now with dtypes: found by structure, refused by an unusable dtype
    return found[0]


def registered_params(fingerprint: bytes) -> int | None:
    """The parameter count of the registered substrate with this fingerprint, counted here from
    its tensors (never what a packet claims), or None where none is registered."""
    for sub in list_substrates():
        if sub.fingerprint == fingerprint:
            return sub.num_params
    return None


def add_substrate(name: str, weights: Path, config: Path | None = None) -> Substrate:
    """Register a `gpt` user substrate from a safetensors file (and a GPTConfig JSON)."""
    return _register(name, lambda folder: gpt.add_user(name, Path(weights), config, folder))


def add_hf_substrate(
    name: str,
    source: Path,
    *,
    architecture: str | None = None,
    config_overrides: dict | None = None,
    zero_init: Sequence[str] = (),
) -> Substrate:
    """Register an `hf` substrate from a Hugging Face folder (see families/hf.py)."""
    from .families import hf

    def populate(folder: Path) -> tuple[Substrate, dict]:
        return hf.add_user(
            name,
            Path(source),
            folder,
            architecture=architecture,
            config_overrides=config_overrides or {},
            zero_init=zero_init,
        )

    return _register(name, populate, precheck=lambda: hf.check_source(Path(source)))


def _register(
    name: str,
    populate: Callable[[Path], tuple[Substrate, dict]],
    precheck: Callable[[], None] | None = None,
) -> Substrate:
    _check_new_name(name)
    if precheck is not None:
        precheck()
    root = basin_home() / REGISTRY
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".add-", dir=root))
    except OSError as exc:
        raise SubstrateError(f"cannot write to {root}: {exc.strerror or exc}") from None
    try:
        sub, fields = populate(tmp)
        meta = {
            "family": sub.family,
            "fingerprint": sub.fingerprint.hex(),
            "num_params": sub.num_params,
            **fields,
        }
        (tmp / META).write_text(json.dumps(meta, indent=1) + "\n")
        _keep_stamp(tmp, _stamp(sub))  # populate hashed θ0 as written; a rename keeps the stamp
        os.rename(tmp, root / name)  # atomic; fails if a concurrent add took the name
    except OSError as exc:
        if (root / name).exists():
            raise SubstrateError(f"substrate {name} exists already") from None
        raise SubstrateError(f"cannot register substrate {name}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _load_user(name)


def _user_names() -> list[str]:
    root = basin_home() / REGISTRY
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and p.is_dir())


def _check_new_name(name: str) -> None:
    try:
        check_label(name)
    except SchemaError as exc:
        raise SubstrateError(f"bad substrate name: {exc}") from None
    if name.lower() in {p.lower() for p in gpt.PRESETS}:
        raise SubstrateError(f"substrate name {name!r} is taken by a preset")
    taken = {n.lower(): n for n in _user_names()}
    if name.lower() in taken:
        raise SubstrateError(f"substrate {taken[name.lower()]} exists already")


def _load_user(name: str, *, rehash: bool = False) -> Substrate:
    """The registered entry `name`, checked (module docstring); `rehash`: hash θ0 whatever
    its stamp says."""
    path = basin_home() / REGISTRY / name
    try:
        meta = parse_json(read_file(path / META, 64 << 20, "meta.json"), str(path / META))
        if not isinstance(meta, dict):
            raise SchemaError("meta.json is not a JSON object")
        family = meta.get("family", "gpt")  # entries written before families had no field
        if family == "gpt":
            sub = gpt.load_user(name, path, meta)
        elif family == "hf":
            from .families import hf

            sub = hf.load_user(name, path, meta)
        else:
            raise SchemaError(f"unknown family {family!r} (known: {', '.join(FAMILIES)})")
    except (OSError, ValueError, KeyError, TypeError, SchemaError, InputError) as exc:
        raise SubstrateError(f"substrate {name} is unreadable ({path}): {exc}") from None
    if sub.fingerprint.hex() != meta.get("fingerprint"):
        raise SubstrateError(
            f"substrate {name} is corrupt: its fingerprint differs from {path / META}"
        )
    _check_theta0(sub, path, rehash)
    return sub


def verify_substrates(names: Sequence[str] = ()) -> list[tuple[str, str | None]]:
    """(name, problem or None) for each user substrate named (all where none are), θ0 hashed
    whatever its file's stamp says: what `basin substrate verify` reports."""
    known = _user_names()
    for name in names:
        if name not in known:
            raise SubstrateError(
                f"{name} is a preset: its θ0 is generated, not kept in a file"
                if name in gpt.PRESETS
                else f"unknown substrate {name!r} (user substrates: {', '.join(known) or 'none'})"
            )
    results: list[tuple[str, str | None]] = []
    for name in names or known:
        try:
            _load_user(name, rehash=True)
        except SubstrateError as exc:
            results.append((name, str(exc)))
        else:
            results.append((name, None))
    return results


def _check_theta0(sub: Substrate, path: Path, rehash: bool) -> None:
    """Refuse an entry whose θ0 file no longer holds the bytes meta.json pins; hashed when asked
    or when the file's stamp differs from the one recorded when they last matched (module
    docstring)."""
    stamp = _stamp(sub)
    try:
        if not rehash and (path / CHECKED).read_text() == stamp:
            return
    except (OSError, UnicodeDecodeError):
        pass  # no stamp, or an unreadable one: hash
    assert sub.weights is not None
    total = sum(s.numel * s.dtype.itemsize for s in sub.specs)
    try:
        with progress_bar(total, f"check {sub.name}") as update:
            digest = file_digest(sub.weights, sub.specs, update)
    except (OSError, SafetensorError) as exc:
        raise SubstrateError(f"substrate {sub.name} is unreadable ({sub.weights}): {exc}") from None
    if digest != sub.theta0_digest:
        raise SubstrateError(
            f"substrate {sub.name} is corrupt: θ0 in {sub.weights} is not the file it was "
            f"registered with (sha2-256 {digest.hex()[:16]}…, registered "
            f"{sub.theta0_digest.hex()[:16]}…); remove {path} and add it again"
        )
    _keep_stamp(path, stamp)


def _stamp(sub: Substrate) -> str:
    """What `theta0.checked` holds once θ0 matched: the file's size, mtime and ctime (any write
    changes the ctime) and the digest it matched."""
    assert sub.weights is not None
    try:
        st = sub.weights.stat()
    except OSError as exc:
        raise SubstrateError(f"substrate {sub.name} is unreadable: {exc}") from None
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {sub.theta0_digest.hex()}\n"


def _keep_stamp(path: Path, stamp: str) -> None:
    try:
        with replacing(path / CHECKED) as fh:
            fh.write(stamp.encode())
    except OSError:
        pass  # a registry we cannot write to is only hashed again next time
