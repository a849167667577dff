"""Hostile and truncated model files: every format reader ends in a clear, recorded result — the format it
recognised, what it could read, and ``partial`` saying where and why it stopped — never an exception, a
hang or memory that grows with what the file claims. Listing tensors never makes a file look safer."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from pathlib import Path

import fsspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from services import ROOT, examples, unavailable

from workers.formats import sniff, sniff_file

FS = fsspec.filesystem("file")


@pytest.fixture(autouse=True)
def canary_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    yield
    assert not (tmp_path / "CANARY").exists(), "a pickle was executed while reading a structure"


def of_bytes(data: bytes):
    return sniff_file(io.BytesIO(data))


# -- GGUF -----------------------------------------------------------------------------------------------------


def gguf_string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf_header(n_tensors: int, kvs: bytes, n_kv: int, tensors: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + kvs + tensors


def test_gguf_claiming_absurd_counts_is_a_partial_result() -> None:
    info = of_bytes(gguf_header(2**60, b"", 2**60))
    assert info.format == "gguf"
    assert "partial" in info.structure and "declared" in info.structure["partial"]


def test_gguf_with_a_string_or_array_past_the_end_keeps_what_came_before() -> None:
    arch = gguf_string("general.architecture") + struct.pack("<I", 8) + gguf_string("llama")
    huge_array = gguf_string("tokens") + struct.pack("<IIQ", 9, 0, 10**15)  # 10^15 uint8 values
    info = of_bytes(gguf_header(1, arch + huge_array, 2))
    assert info.format == "gguf" and info.structure["architecture"] == "llama"
    assert "past the end" in info.structure["partial"]
    long_string = gguf_string("k") + struct.pack("<IQ", 8, 2**62)
    info = of_bytes(gguf_header(0, arch + long_string, 2))
    assert info.structure["architecture"] == "llama" and "partial" in info.structure


def test_gguf_truncated_inside_the_tensor_infos_lists_the_tensors_read() -> None:
    t1 = gguf_string("a") + struct.pack("<I", 2) + struct.pack("<QQ", 4, 8) + struct.pack("<IQ", 0, 0)
    t2 = gguf_string("b") + struct.pack("<I", 1) + struct.pack("<Q", 5)  # cut before its type and offset
    info = of_bytes(gguf_header(2, b"", 0, t1 + t2))
    s = info.structure
    assert s["tensors"] == {"a": {"dtype": "F32", "shape": [4, 8]}} and s["parameters"] == 32
    assert "partial" in s


# -- ONNX -----------------------------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_onnx_graph_cut_short_keeps_the_inputs_read() -> None:
    dim = field(1, varint(1 << 3) + varint(3))  # Dimension{dim_value: 3}
    tensor_type = field(1, varint(1 << 3) + varint(1) + field(2, dim))  # elem_type FLOAT, shape [3]
    value_info = field(11, field(1, b"x") + field(2, tensor_type))
    graph = value_info + field(5, varint(1 << 3) + varint(1000) + field(9, b"\0" * 100))
    model = varint(1 << 3) + varint(8) + field(7, graph)
    info = of_bytes(model[:-40])  # the initializer's raw bytes cut off
    assert info.format == "onnx"
    assert info.structure["inputs"] == [{"name": "x", "elem_type": "FLOAT", "shape": [3]}]
    assert "partial" in info.structure


def test_onnx_field_claiming_more_than_the_file_is_bounded() -> None:
    graph_start = varint(7 << 3 | 2) + varint(2**60)  # a graph "of 2^60 bytes"
    info = of_bytes(varint(1 << 3) + varint(8) + graph_start + field(2, b"g") + b"\0" * 50)
    assert info.format in ("onnx", "unknown")
    if info.format == "onnx":
        assert "partial" in info.structure


def test_bytes_that_only_start_like_onnx_are_not_onnx() -> None:
    assert of_bytes(b"\x08\x07" + b"\xff" * 100).format == "unknown"
    assert of_bytes(b"\x08\x07" + field(3, b"producer")).format == "unknown"  # no graph


# -- HDF5 -----------------------------------------------------------------------------------------------------


def test_hdf5_truncated_at_every_cut_never_raises(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    import numpy as np

    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        for i in range(40):
            f.require_group(f"g{i % 4}").create_dataset(f"d{i}", data=np.zeros((i + 1, 2), np.float32))
    data = path.read_bytes()
    for cut in range(8, len(data), max(1, len(data) // 60)):
        info = of_bytes(data[:cut])
        if info.format == "hdf5" and cut < len(data) - 64:
            assert "partial" in info.structure or info.structure["tensor_count"] <= 40


def test_hdf5_cyclic_group_structure_is_visited_once(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    import numpy as np

    path = tmp_path / "loop.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("a")
        g.create_dataset("x", data=np.zeros(3, np.float32))
        g["back"] = f  # a hard link back to the root: a cycle
    info = sniff(FS, str(path))
    assert info.format == "hdf5" and info.structure["tensors"] == {"/a/x": {"dtype": "float32", "shape": [3]}}


# -- PyTorch --------------------------------------------------------------------------------------------------


def torch_zip(pkl: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")
        z.writestr("archive/data/0", b"\0" * 64)
    return buf.getvalue()


def rebuild_pickle(extra: bytes = b"") -> bytes:
    """A state dict {'w': tensor float32 [4, 4]} written opcode by opcode as torch.save does, plus ``extra``
    opcodes before the STOP."""
    pid = (b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x10t")
    tensor = (b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"QK\x00K\x04K\x04\x86K\x04K\x01\x86\x89"
              b"ccollections\nOrderedDict\n)RtR")
    return (b"\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00w" + tensor + b"u" + extra + b".")


def test_tensors_are_listed_and_a_payload_beside_them_still_makes_the_file_unsafe() -> None:
    clean = of_bytes(torch_zip(rebuild_pickle()))
    assert clean.format == "pytorch" and not clean.unsafe, clean.detail
    assert clean.structure["tensors"] == {"w": {"dtype": "float32", "shape": [4, 4]}}
    payload = b"cos\nsystem\n(X\x0c\x00\x00\x00touch CANARYtR0"
    bad = of_bytes(torch_zip(rebuild_pickle(payload)))
    assert bad.unsafe and "os.system" in bad.imports
    assert bad.structure["tensors"] == {"w": {"dtype": "float32", "shape": [4, 4]}}


def test_a_data_pkl_cut_short_lists_what_came_before() -> None:
    pkl = rebuild_pickle()
    info = of_bytes(torch_zip(pkl[:-3]))  # loses SETITEMS' end and the STOP
    assert info.unsafe  # a pickle that breaks is not vouched for
    assert "partial" in info.structure


# -- safetensors ----------------------------------------------------------------------------------------------


def test_safetensors_cut_short_in_its_data_says_so() -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()
    info = of_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 100)
    assert info.format == "safetensors"
    assert info.structure["tensors"] == {"w": {"dtype": "F32", "shape": [1000]}}
    assert "cut short" in info.structure["partial"]


# -- any reader, any damage -----------------------------------------------------------------------------------


def real_files(root: Path) -> dict[str, bytes]:
    """Small real files of every format the readers know (those whose writer library is installed)."""
    from test_formats_real import make_gguf, make_onnx, write_keras_like

    out: dict[str, bytes] = {"torch-zip": torch_zip(rebuild_pickle())}
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    out["safetensors"] = struct.pack("<Q", len(header)) + header + b"\0" * 16
    for name, make in (("gguf", make_gguf), ("onnx", make_onnx), ("hdf5", write_keras_like)):
        path = root / name
        try:
            make(path)
        except ImportError:
            continue
        out[name] = path.read_bytes()
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return real_files(tmp_path_factory.mktemp("real"))


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_real_files_give_a_result_never_an_exception(corpus: dict[str, bytes], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(corpus)))
    raw = bytearray(corpus[name])
    cut = data.draw(st.integers(1, len(raw)))
    raw = raw[:cut]
    for _ in range(data.draw(st.integers(0, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    info = of_bytes(bytes(raw))  # must not raise
    assert isinstance(info.detail, str)
    if info.structure is not None:
        json.dumps(info.structure)  # recordable as an event


# ../shared beside the repository, as the pickle corpus test finds it (MLEDGER_PICKLE_CORPUS elsewhere).
CORPUS = Path(os.environ.get("MLEDGER_PICKLE_CORPUS") or ROOT.parent / "shared" / "corpora" / "pickles")


def test_shared_hostile_corpus_reads_without_exceptions() -> None:
    """The public hostile corpora (pickles from picklescan, fickling, modelscan) through every reader."""
    files = [p for p in CORPUS.rglob("*") if p.is_file()] if CORPUS.is_dir() else []
    if not files:
        unavailable(f"the pickle corpora at {CORPUS}")
    for p in files:
        info = sniff(FS, str(p))
        if info.structure is not None:
            json.dumps(info.structure)


def test_a_structure_too_large_for_an_event_is_trimmed_and_still_recorded(reg, tmp_path: Path) -> None:
    """2,000 tensors with 500-character names: ~1.2 MB of listing, over an event's 1 MiB. The listing is
    halved until the structure fits its 512 KiB share; the sums still cover every tensor."""
    from workers.tensor_tally import MAX_STRUCTURE_BYTES

    names = [f"{'x' * 490}.{i:05d}" for i in range(2000)]
    header = {n: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i, n in enumerate(names)}
    raw = json.dumps(header).encode()
    path = tmp_path / "long-names.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 8000)
    v = reg.register("long", artifact=str(path))
    s = v.structure
    assert len(json.dumps(s)) <= MAX_STRUCTURE_BYTES
    assert s["tensor_count"] == s["tensors_truncated"] == 2000 and s["parameters"] == 2000
    assert 0 < len(s["tensors"]) < 2000 and "listed" in s["note"]
