import json
import math
import os
import pickle
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from basinvcs.atomic import TEMP_PREFIX
from basinvcs.errors import BasinError, SchemaError
from basinvcs.model import modelio
from basinvcs.model.modelio import open_model, write_model

SPECS = [("embed.weight", (16, 8)), ("layer.0.bias", (8,)), ("scale", ()), ("empty", (0, 3))]


def make_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=gen) for name, shape in SPECS}


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def load_sharded(folder: Path) -> dict[str, torch.Tensor]:
    """What Hugging Face does: read the index, load every shard it names, merge."""
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        out.update(load_file(folder / shard))
    assert set(out) == set(index["weight_map"])
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in out.values())
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_single_file_round_trip_in_every_dtype(tmp_path, dtype):
    tensors = make_tensors()
    out = tmp_path / "m.safetensors"
    assert write_model(out, SPECS, tensors.items(), dtype=dtype, metadata={"basin": "x"}) == [out]
    back = load_file(out)
    assert list(back) == [name for name, _ in SPECS]
    for name, t in tensors.items():
        assert back[name].dtype == dtype and torch.equal(back[name], t.to(dtype))
    with open_model(out) as reader:
        code = modelio.DTYPES[dtype]
        assert reader.header() == {name: (code, shape) for name, shape in SPECS}
        assert reader.metadata() == {"format": "pt", "basin": "x"}
        assert torch.equal(reader.tensor("embed.weight"), tensors["embed.weight"].to(dtype))


def test_layout_is_the_safetensors_format(tmp_path):
    out = tmp_path / "m.safetensors"
    tensors = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([[3]], dtype=torch.int64)}
    write_model(out, [("a", (2,)), ("b", (1, 1))], tensors.items(), dtype=torch.bfloat16)
    raw = out.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    assert (8 + length) % 8 == 0  # data starts 8-byte aligned
    header = json.loads(raw[8 : 8 + length])
    assert header == {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]},
        "b": {"dtype": "BF16", "shape": [1, 1], "data_offsets": [4, 6]},
    }
    # bfloat16 is the top half of float32, little-endian: 1.0 = 3f80, -2.0 = c000, 3.0 = 4040
    assert raw[8 + length :] == bytes.fromhex("803f00c04040")


def test_sharded_directory_loads_like_hugging_face(tmp_path):
    tensors = make_tensors()
    out = tmp_path / "model"
    # embed.weight is 512 bytes, larger than a shard: it gets a shard of its own
    files = write_model(out, SPECS, tensors.items(), dtype=torch.float32, max_shard_bytes=100)
    assert [p.name for p in files] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    ]
    assert files_in(out) == [p.name for p in files]
    index = json.loads(files[-1].read_text())
    assert index["weight_map"]["embed.weight"] == "model-00001-of-00002.safetensors"
    assert index["weight_map"]["scale"] == "model-00002-of-00002.safetensors"
    back = load_sharded(out)
    assert all(torch.equal(back[name], t) for name, t in tensors.items())
    for source in (out, files[-1]):
        with open_model(source) as reader:
            assert list(reader.header()) == ["embed.weight", "layer.0.bias", "scale", "empty"]
            assert reader.metadata() == {"format": "pt"}
            assert all(torch.equal(t, tensors[name]) for name, t in reader.tensors())


def test_every_tensor_over_the_limit_gets_its_own_shard(tmp_path):
    specs = [(f"t{i}", (4,)) for i in range(3)]
    tensors = [(name, torch.ones(shape)) for name, shape in specs]
    files = write_model(tmp_path, specs, tensors, dtype=torch.float32, max_shard_bytes=1)
    assert len(files) == 4 and files[2].name == "model-00003-of-00003.safetensors"


def test_sharded_output_beside_a_safetensors_name(tmp_path):
    tensors = make_tensors()
    out = tmp_path / "sub" / "tuned.safetensors"
    files = write_model(out, SPECS, tensors.items(), dtype=torch.float16, max_shard_bytes=100)
    assert [p.name for p in files] == [
        "tuned-00001-of-00002.safetensors",
        "tuned-00002-of-00002.safetensors",
        "tuned.safetensors.index.json",
    ]
    with open_model(files[-1]) as reader:
        assert torch.equal(reader.tensor("layer.0.bias"), tensors["layer.0.bias"].half())


def test_a_directory_gets_model_safetensors(tmp_path):
    files = write_model(tmp_path / "new", SPECS, make_tensors().items(), dtype=torch.float32)
    assert files == [tmp_path / "new" / "model.safetensors"]
    with open_model(tmp_path / "new") as reader:
        assert reader.path == files[0]


def test_writing_streams_one_tensor_at_a_time(tmp_path):
    specs = [(f"t{i}", (1000,)) for i in range(6)]
    alive: list[weakref.ref] = []
    reported: list[int] = []

    def produce():
        for name, shape in specs:
            # by the time the next tensor is asked for, the writer holds none: peak is one tensor
            if alive:
                assert alive[-1]() is None
            tensor = torch.rand(shape)
            alive.append(weakref.ref(tensor))
            yield name, tensor
            del tensor

    write_model(tmp_path, specs, produce(), dtype=torch.float32, progress=reported.append)
    assert len(alive) == 6
    assert sum(reported) == modelio.model_nbytes(specs, torch.float32) == 6 * 4000


def test_large_tensors_are_written_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(modelio, "CHUNK_BYTES", 1024)
    tensor = torch.randn(10, 100)
    reported: list[int] = []
    files = write_model(
        tmp_path,
        [("w", (10, 100))],
        [("w", tensor)],
        dtype=torch.bfloat16,
        progress=reported.append,
    )
    assert reported == [1024, 976]  # 512 + 488 bfloat16 values
    assert torch.equal(load_file(files[0])["w"], tensor.bfloat16())


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ([("embed.weight", torch.zeros(16, 8)), ("scale", torch.zeros(()))], "expected tensor"),
        ([("embed.weight", torch.zeros(8, 16))], r"shape \(8, 16\), declared \(16, 8\)"),
        ([("embed.weight", torch.zeros(16, 8))], "tensors ended before 'layer.0.bias'"),
        ([("embed.weight", torch.full((16, 8), math.nan))], "not finite"),
        ([("embed.weight", [0.0])], "not a tensor"),
    ],
)
def test_bad_input_leaves_no_partial_output(tmp_path, tensors, message):
    with pytest.raises(SchemaError, match=message):
        write_model(tmp_path / "out", SPECS, tensors, dtype=torch.float32)
    assert files_in(tmp_path / "out") == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", [0, 700, 999])
def test_any_non_finite_value_is_refused(tmp_path, monkeypatch, dtype, bad, where):
    monkeypatch.setattr(modelio, "CHUNK_BYTES", 512 * dtype.itemsize)  # two chunks
    tensor = torch.rand(1000)
    tensor[where] = bad
    with pytest.raises(SchemaError, match="'w' has values that are not finite"):
        write_model(tmp_path, [("w", (1000,))], [("w", tensor)], dtype=dtype)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(
    ("dtype", "value"),
    [(torch.float32, 3e38), (torch.float64, 1.7e308), (torch.float16, 6e4), (torch.bfloat16, 3e38)],
)
def test_finite_values_whose_sum_overflows_are_written(tmp_path, dtype, value):
    """The finite check sums each chunk first; a sum that overflows is settled value by value."""
    tensor = torch.tensor([value, value, -1.0, value], dtype=torch.float64)
    assert not math.isfinite(tensor.to(dtype).sum().item())
    write_model(tmp_path, [("w", (4,))], [("w", tensor)], dtype=dtype)
    assert torch.equal(load_file(tmp_path / "model.safetensors")["w"], tensor.to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_all_finite_agrees_with_isfinite(dtype):
    """Every length up to past a vector loop's tail, one special value at every position."""
    gen = torch.Generator().manual_seed(3)
    for n in range(1, 70):
        values = torch.randn(n, generator=gen).to(dtype)
        assert modelio.all_finite(values)
        for where in range(n):
            for bad in (math.nan, math.inf, -math.inf):
                spoiled = values.clone()
                spoiled[where] = bad
                assert not modelio.all_finite(spoiled)
    both = torch.tensor([math.inf, -math.inf, 1.0], dtype=dtype)  # inf - inf: a NaN sum
    assert not modelio.all_finite(both)


def test_output_files_are_the_same_with_and_without_reserving_blocks(tmp_path, monkeypatch):
    """Blocks are reserved (fallocate) before a shard is written; without, or where the call
    fails, the files are byte for byte the same."""
    tensors = make_tensors()
    reserved = []
    real = modelio._reserve
    monkeypatch.setattr(
        modelio, "_reserve", lambda fh, size: (reserved.append(size), real(fh, size))
    )
    files = write_model(
        tmp_path / "a", SPECS, tensors.items(), dtype=torch.float32, max_shard_bytes=100
    )
    assert reserved == [p.stat().st_size for p in files if p.suffix == ".safetensors"]
    monkeypatch.setattr(modelio, "_reserve", real)
    monkeypatch.setattr(modelio, "_fallocate", lambda: None)
    plain = write_model(
        tmp_path / "b", SPECS, tensors.items(), dtype=torch.float32, max_shard_bytes=100
    )
    monkeypatch.setattr(modelio, "_fallocate", lambda: lambda *args: -1)  # as a refusing system
    refused = write_model(
        tmp_path / "c", SPECS, tensors.items(), dtype=torch.float32, max_shard_bytes=100
    )
    for a, b, c in zip(files, plain, refused, strict=True):
        assert a.read_bytes() == b.read_bytes() == c.read_bytes()


@pytest.mark.skipif(modelio._fallocate() is None, reason="no fallocate(2) here")
def test_reserving_takes_the_blocks_and_leaves_the_size(tmp_path):
    with open(tmp_path / "f", "wb") as fh:
        modelio._reserve(fh, 1 << 20)
        st = os.fstat(fh.fileno())
    if st.st_blocks == 0:
        pytest.skip("this filesystem does not reserve blocks")
    assert st.st_size == 0 and st.st_blocks * 512 >= 1 << 20


def test_copy_file_replaces_the_target_whole_and_leaves_no_temporary(tmp_path):
    source = tmp_path / "tokenizer.json"
    source.write_bytes(bytes(range(256)) * 3000)  # past one buffer of copyfileobj
    out = tmp_path / "out"
    out.mkdir()
    (out / "tokenizer.json").write_text("old")
    modelio.copy_file(source, out / "tokenizer.json")
    assert (out / "tokenizer.json").read_bytes() == source.read_bytes()
    with pytest.raises(SchemaError, match="cannot write"):
        modelio.copy_file(tmp_path / "missing", out / "tokenizer.json")
    assert files_in(out) == ["tokenizer.json"]
    assert (out / "tokenizer.json").read_bytes() == source.read_bytes()


def test_overflow_to_infinity_in_the_output_dtype_is_refused(tmp_path):
    with pytest.raises(SchemaError, match="not finite as torch.float16"):
        write_model(tmp_path, [("w", (1,))], [("w", torch.tensor([1e6]))], dtype=torch.float16)


def test_a_failed_write_keeps_the_previous_output(tmp_path):
    tensors = make_tensors()
    files = write_model(tmp_path, SPECS, tensors.items(), dtype=torch.float32, max_shard_bytes=100)
    before = {p.name: p.read_bytes() for p in files}

    def failing():
        yield "embed.weight", torch.zeros(16, 8)
        raise RuntimeError("producer broke")

    with pytest.raises(RuntimeError, match="producer broke"):
        write_model(tmp_path, SPECS, failing(), dtype=torch.float32, max_shard_bytes=100)
    extra = [("bonus", torch.zeros(1))]
    with pytest.raises(SchemaError, match="unexpected tensor 'bonus'"):
        write_model(tmp_path, SPECS, [*tensors.items(), *extra], dtype=torch.float32)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize(
    ("specs", "kwargs", "message"),
    [
        ([("a", (1,)), ("a", (1,))], {}, "repeated"),
        ([("__metadata__", (1,))], {}, "reserved"),
        ([("a", (-1,))], {}, "bad shape"),
        ([("a", (1,))], {"dtype": torch.int32}, "cannot write models as torch.int32"),
        ([("a", (1,))], {"metadata": {"k": 1}}, "strings to strings"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, specs, kwargs, message):
    with pytest.raises(SchemaError, match=message):
        write_model(tmp_path, specs, [], **{"dtype": torch.float32, **kwargs})
    assert files_in(tmp_path) == []


def test_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(SchemaError, match="cannot write model"):
        write_model(tmp_path / "taken", SPECS, make_tensors().items(), dtype=torch.float32)


def test_an_empty_model_is_a_valid_file(tmp_path):
    files = write_model(tmp_path / "e.safetensors", [], [], dtype=torch.float32)
    assert load_file(files[0]) == {}


def test_reader_reads_what_save_file_wrote(tmp_path):
    tensors = {"b": torch.randn(3, 2), "a": torch.arange(4, dtype=torch.int64)}
    save_file(tensors, tmp_path / "m.safetensors", metadata={"k": "v"})
    with open_model(tmp_path / "m.safetensors") as reader:
        assert reader.header() == {"b": ("F32", (3, 2)), "a": ("I64", (4,))}
        assert reader.metadata() == {"k": "v"}
        assert torch.equal(reader.tensor("a"), tensors["a"])
        with pytest.raises(SchemaError, match="has no tensor 'c'"):
            reader.tensor("c")


def write_raw(path: Path, header: bytes, data: bytes = b"") -> Path:
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is not a safetensors file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "is not a safetensors file"),
        ((1000).to_bytes(8, "little") + b'{"a":', "truncated header: 1000 bytes declared, 5"),
        ((5).to_bytes(8, "little") + b"[1,2]", "is not a safetensors file"),
        ((5).to_bytes(8, "little") + b'{"a":', "JSON header of .* is not valid JSON"),
        ((3).to_bytes(8, "little") + b"{\xff}", "JSON header of .* is not UTF-8"),
        ((100_001).to_bytes(8, "little") + b"{" * 100_001, "nests deeper than 100 levels"),
        ((13).to_bytes(8, "little") + b'{"a": NaN}   ', "holds NaN, which JSON does not allow"),
    ],
)
def test_broken_safetensors_files_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(BasinError, match=message) as err:
        open_model(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "truncated: tensor 'a' ends"),
        ({"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}, "unsupported dtype 'X9'"),
        ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "bad shape"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [0]}, "bad data_offsets"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, "do not match"),
        ([1], "not an object"),
    ],
)
def test_bad_header_entries_are_refused(tmp_path, entry, message):
    path = write_raw(tmp_path / "m.safetensors", json.dumps({"a": entry}).encode(), bytes(4))
    with pytest.raises(SchemaError, match=message):
        open_model(path)


def test_a_fifo_is_refused_without_blocking(tmp_path, no_hang):
    for name in ("x.safetensors", "x.pt", "model.safetensors.index.json"):
        os.mkfifo(tmp_path / name)  # opened for reading, it would wait for a writer forever
        with pytest.raises(BasinError, match="is not a regular file"):
            open_model(tmp_path / name)


def test_a_shard_that_is_a_fifo_is_refused(tmp_path, no_hang):
    write_model(tmp_path, SPECS, make_tensors().items(), dtype=torch.float32, max_shard_bytes=100)
    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    shard.unlink()
    os.mkfifo(shard)
    with pytest.raises(BasinError, match="is not a regular file"):
        open_model(tmp_path)


def test_missing_models_and_unknown_kinds_are_refused(tmp_path):
    with pytest.raises(BasinError, match="does not exist"):
        open_model(tmp_path / "nope.safetensors")
    with pytest.raises(SchemaError, match="holds neither model.safetensors"):
        open_model(tmp_path)
    (tmp_path / "model.txt").write_text("hi")
    with pytest.raises(SchemaError, match="not a model file basin reads"):
        open_model(tmp_path / "model.txt")


def test_a_directory_with_both_layouts_is_ambiguous(tmp_path):
    write_model(tmp_path, SPECS, make_tensors().items(), dtype=torch.float32)
    write_model(tmp_path, SPECS, make_tensors().items(), dtype=torch.float32, max_shard_bytes=100)
    with pytest.raises(SchemaError, match="holds both"):
        open_model(tmp_path)


def test_broken_indexes_are_refused(tmp_path):
    files = write_model(
        tmp_path, SPECS, make_tensors().items(), dtype=torch.float32, max_shard_bytes=100
    )
    index = files[-1]
    doc = json.loads(index.read_text())

    def refused(message: str) -> None:
        index.write_text(json.dumps(doc))
        with pytest.raises(BasinError, match=message):
            open_model(index)

    files[1].rename(tmp_path / "moved.safetensors")
    refused("names shard model-00002-of-00002.safetensors, which does not exist")
    (tmp_path / "moved.safetensors").rename(files[1])
    doc["weight_map"]["scale"] = "../model-00001-of-00002.safetensors"
    refused("shards must be files beside it")
    doc["weight_map"]["scale"] = files[0].name
    refused("holds tensor 'scale', which index")
    doc["weight_map"] = {}
    refused("has no weight_map")
    index.write_text("{")
    with pytest.raises(BasinError, match="is not valid JSON"):
        open_model(index)


def test_index_naming_a_tensor_its_shard_lacks(tmp_path):
    files = write_model(
        tmp_path, SPECS, make_tensors().items(), dtype=torch.float32, max_shard_bytes=100
    )
    doc = json.loads(files[-1].read_text())
    doc["weight_map"]["ghost"] = files[0].name
    files[-1].write_text(json.dumps(doc))
    with pytest.raises(BasinError, match="puts tensor 'ghost' in .*which lacks it"):
        open_model(files[-1])


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_torch_state_dicts_load(tmp_path, suffix):
    tensors = {"w": torch.randn(4, 3).bfloat16(), "step": torch.tensor(7)}
    torch.save(tensors, tmp_path / f"m{suffix}")
    with open_model(tmp_path / f"m{suffix}") as reader:
        assert reader.header() == {"w": ("BF16", (4, 3)), "step": ("I64", ())}
        assert reader.metadata() == {}
        assert torch.equal(reader.tensor("w"), tensors["w"])
        with pytest.raises(BasinError, match="has no tensor 'x'"):
            reader.tensor("x")


class Trap:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_torch_file_with_code_is_refused_without_running_it(tmp_path):
    trap = tmp_path / "pwned"
    torch.save({"w": torch.zeros(1), "x": Trap(trap)}, tmp_path / "evil.pt")
    with pytest.raises(BasinError, match=r"^refusing to load .*evil\.pt: its pickle would call"):
        open_model(tmp_path / "evil.pt")
    assert not trap.exists()


def test_a_bare_pickle_is_refused_without_running_it(tmp_path):
    trap = tmp_path / "pwned"
    (tmp_path / "evil.bin").write_bytes(pickle.dumps({"w": Trap(trap)}))
    with pytest.raises(BasinError, match=r"^refusing to load .*evil\.bin: it is a bare pickle"):
        open_model(tmp_path / "evil.bin")
    assert not trap.exists()


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"w": torch.zeros(1), "epoch": 3}, "entry 'epoch' is a int, not a tensor"),
        ({"model": {"w": torch.zeros(1)}}, "entry 'model' is a dict, not a tensor"),
        ([torch.zeros(1)], "holds a list, not a state dict"),
        ({"w": torch.zeros(2, dtype=torch.complex64)}, "unsupported dtype torch.complex64"),
        ({"w": torch.zeros(2).to_sparse()}, "is torch.sparse_coo, not a dense tensor"),
    ],
)
def test_torch_files_that_are_not_flat_state_dicts_are_refused(tmp_path, obj, message):
    torch.save(obj, tmp_path / "m.pt")
    with pytest.raises(BasinError, match=message):
        open_model(tmp_path / "m.pt")


def test_broken_torch_files_are_refused(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(BasinError, match="junk.pt is not a readable torch file"):
        open_model(tmp_path / "junk.pt")
    torch.save({"w": torch.zeros(1)}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(BasinError, match="refusing to load .*legacy torch file"):
        open_model(tmp_path / "old.pt")


def test_torch_model_copies_to_safetensors(tmp_path):
    tensors = make_tensors()
    torch.save(tensors, tmp_path / "m.pt")
    with open_model(tmp_path / "m.pt") as reader:
        specs = [(name, shape) for name, (_, shape) in reader.header().items()]
        files = write_model(tmp_path / "out", specs, reader.tensors(), dtype=torch.float32)
    assert all(torch.equal(load_file(files[0])[name], t) for name, t in tensors.items())


WRITER = """
import sys, time, torch
from basinvcs.model.modelio import write_model

def tensors():
    yield "a", torch.zeros(4)
    print("writing", flush=True)
    time.sleep(120)  # killed here, mid-write
    yield "b", torch.zeros(4)

write_model(sys.argv[1], [("a", (4,)), ("b", (4,))], tensors(), dtype=torch.float32)
"""


def test_a_writer_killed_mid_write_leaves_nothing_after_the_next_write(tmp_path):
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
        left = [p.name for p in out.iterdir()]
        assert len(left) == 1 and left[0].startswith(TEMP_PREFIX)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    mine = out / f"{TEMP_PREFIX}{os.getpid()}.model.safetensors.x.tmp"
    mine.write_bytes(b"")  # a live writer's file (ours) is never swept
    write_model(out, SPECS, make_tensors().items(), dtype=torch.float32)
    assert sorted(p.name for p in out.iterdir()) == sorted(["model.safetensors", mine.name])


def in_pieces(tensor: torch.Tensor, size: int) -> modelio.Pieces:
    """A tensor as `Pieces` of `size` values, each handed out in one reused buffer."""
    buffer = torch.empty(size, dtype=tensor.dtype)

    def pieces():
        flat = tensor.reshape(-1)
        for start in range(0, flat.numel(), size):
            piece = flat[start : start + size]
            yield buffer[: piece.numel()].copy_(piece)

    return modelio.Pieces(tuple(tensor.shape), pieces())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_tensor_in_pieces_writes_the_same_file_as_whole(tmp_path, monkeypatch, dtype):
    monkeypatch.setattr(modelio, "CHUNK_BYTES", 40 * dtype.itemsize)  # chunks within pieces too
    tensors = make_tensors()
    whole = write_model(tmp_path / "whole", SPECS, tensors.items(), dtype=dtype)
    pieced = ((name, in_pieces(t, 48)) for name, t in tensors.items())
    got = write_model(tmp_path / "pieces", SPECS, pieced, dtype=dtype)
    assert got[0].read_bytes() == whole[0].read_bytes()


@pytest.mark.parametrize(
    "pieces, message",
    [
        ([torch.zeros(100), torch.zeros(29)], "more values than its shape"),
        ([torch.zeros(100)], "ended 28 values short"),
        ([torch.zeros(64), torch.full((64,), math.inf)], "not finite"),
        ([], "ended 128 values short"),
    ],
)
def test_bad_pieces_leave_no_output(tmp_path, pieces, message):
    tensors = [("embed.weight", modelio.Pieces((16, 8), iter(pieces)))]
    with pytest.raises(SchemaError, match=message):
        write_model(tmp_path / "out", SPECS[:1], tensors, dtype=torch.float32)
    assert files_in(tmp_path / "out") == []


def test_pieces_of_the_wrong_shape_are_refused(tmp_path):
    tensors = [("embed.weight", modelio.Pieces((8, 16), iter([torch.zeros(128)])))]
    with pytest.raises(SchemaError, match=r"shape \(8, 16\), declared \(16, 8\)"):
        write_model(tmp_path / "out", SPECS[:1], tensors, dtype=torch.float32)


def test_a_tensor_file_reads_any_range_into_the_callers_buffer(tmp_path):
    tensors = {
        "a": torch.randn(7, 5),
        "b": torch.arange(30, dtype=torch.int64).reshape(3, 10),
        "c": torch.randn(9).to(torch.bfloat16),
    }
    save_file(tensors, tmp_path / "m.safetensors")
    with modelio.TensorFile(tmp_path / "m.safetensors") as fh:
        assert fh.header() == {"a": ("F32", (7, 5)), "b": ("I64", (3, 10)), "c": ("BF16", (9,))}
        for name, t in tensors.items():
            flat = t.reshape(-1)
            for start, n in ((0, flat.numel()), (3, 4), (flat.numel() - 1, 1), (2, 0)):
                out = torch.empty(n, dtype=t.dtype)
                fh.read_into(name, start, out)
                assert torch.equal(out, flat[start : start + n])
        with pytest.raises(SchemaError, match="no values 30..31"):
            fh.read_into("b", 30, torch.empty(1, dtype=torch.int64))
        with pytest.raises(SchemaError, match="'a' .* is F32, read as torch.float64"):
            fh.read_into("a", 0, torch.empty(3, dtype=torch.float64))
        with pytest.raises(SchemaError, match="no tensor 'z'"):
            fh.read_into("z", 0, torch.empty(1))


def test_a_tensor_file_takes_a_header_parsed_before_only_while_the_file_holds_it(
    tmp_path, monkeypatch
):
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.arange(6.0), "b": torch.ones(3)}, path)
    known = modelio.parse_header(path)

    def not_again(*args):
        raise AssertionError("the header was parsed before")

    with monkeypatch.context() as patched:
        patched.setattr(modelio, "parse_json", not_again)
        with modelio.TensorFile(path, known) as fh:
            out = torch.empty(2)
            fh.read_into("a", 3, out)
            assert out.tolist() == [3.0, 4.0]
    save_file({"a": torch.arange(7.0), "b": torch.ones(3)}, path)  # another header
    with modelio.TensorFile(path, known) as fh:
        assert fh.header() == {"a": ("F32", (7,)), "b": ("F32", (3,))}
        out = torch.empty(1)
        fh.read_into("b", 2, out)
        assert out.tolist() == [1.0]
    whole = modelio.parse_header(path)
    path.write_bytes(path.read_bytes()[:-4])  # the same header bytes, the data cut short
    with pytest.raises(SchemaError, match="truncated"):
        modelio.TensorFile(path, whole)
