"""Format sniffing: what the registry records about an artifact without ever loading it."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import fsspec
import pytest

from workers.formats import classify_import, sniff, sniff_artifact
from workers.store import BlobStore

FS = fsspec.filesystem("file")


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], metadata: dict | None = None) -> None:
    sizes = {"F32": 4, "F16": 2, "I64": 8}
    header: dict = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = sizes[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x00" * offset)


def test_safetensors_lists_tensors_and_counts_parameters(tmp_path: Path) -> None:
    p = tmp_path / "model.safetensors"
    write_safetensors(
        p, {"embed.weight": ("F32", [10, 4]), "head.bias": ("F16", [3]), "step": ("I64", [])}, {"format": "pt"}
    )
    info = sniff(FS, str(p))
    assert info.format == "safetensors" and not info.unsafe
    assert info.structure is not None
    assert info.structure["tensors"] == {
        "embed.weight": {"dtype": "F32", "shape": [10, 4]},
        "head.bias": {"dtype": "F16", "shape": [3]},
        "step": {"dtype": "I64", "shape": []},
    }
    assert info.structure["parameters"] == 40 + 3 + 1


def test_safetensors_with_nonsense_header_is_not_safetensors(tmp_path: Path) -> None:
    p = tmp_path / "bad.safetensors"
    p.write_bytes(struct.pack("<Q", 10**12) + b"{}" + b"\x00" * 100)  # header longer than the file
    assert sniff(FS, str(p)).format == "unknown"
    p.write_bytes(struct.pack("<Q", 20) + b'{"t": {"dtype": 1}} ' + b"\x00" * 8)
    assert sniff(FS, str(p)).format == "unknown"


def test_hdf5_signature_at_offset_zero_and_after_a_user_block(tmp_path: Path) -> None:
    a = tmp_path / "model.h5"
    a.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 2000)
    b = tmp_path / "model.keras"
    b.write_bytes(b"\x00" * 512 + b"\x89HDF\r\n\x1a\n" + b"\x00" * 2000)
    assert sniff(FS, str(a)).format == "hdf5"
    assert sniff(FS, str(b)).format == "hdf5"


def test_sklearn_model_saved_with_joblib_is_recorded_as_safe(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    np = pytest.importorskip("numpy")
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.random.default_rng(0).random((50, 4))
    model = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=3, random_state=0))
    model.fit(x, (x[:, 0] > 0.5).astype(int))
    p = tmp_path / "model.joblib"
    joblib.dump(model, p)
    info = sniff(FS, str(p))
    assert info.format == "joblib"
    assert info.unsafe is False, info.detail
    assert "sklearn.ensemble._forest.RandomForestClassifier" in info.imports
    assert "walk stopped" not in info.detail


def test_joblib_with_object_and_structured_arrays_is_walked_to_the_end(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    np = pytest.importorskip("numpy")
    data = {
        "f": np.arange(1000.0).reshape(10, 100),
        "obj": np.array([1, "two", None], dtype=object),
        "u": np.zeros(3, dtype="U7"),
        "rec": np.zeros(2, dtype=[("a", "i4"), ("b", "f8")]),
        "empty": np.zeros((0, 5)),
    }
    p = tmp_path / "arrays.pkl"
    joblib.dump(data, p)
    info = sniff(FS, str(p))
    assert info.format == "joblib" and not info.unsafe, info.detail
    assert info.structure is not None and info.structure["arrays"] == 5


def test_compressed_joblib_is_not_inspected_and_counts_as_unsafe(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    p = tmp_path / "model.joblib"
    joblib.dump({"a": 1}, p, compress=3)
    info = sniff(FS, str(p))
    assert info.format == "joblib-compressed" and info.unsafe
    assert "not inspected" in info.detail


class Malicious:
    def __reduce__(self):  # noqa: D105
        return (os.system, ("touch CANARY",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_malicious_pickle_is_flagged_and_never_executed(tmp_path: Path, monkeypatch, protocol: int) -> None:
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "model.pkl"
    p.write_bytes(pickle.dumps(Malicious(), protocol=protocol))
    info = sniff(FS, str(p))
    assert info.unsafe is True
    assert {"os.system", "posix.system", "nt.system"} & set(info.imports)
    assert "dangerous" in info.detail
    assert not (tmp_path / "CANARY").exists()


def test_hidden_import_via_stack_global_and_memo_is_found(tmp_path: Path) -> None:
    # STACK_GLOBAL fed from memoised strings: the names are not next to the opcode.
    body = (
        b"\x80\x04"
        b"\x8c\x0asubprocess\x94"  # SHORT_BINUNICODE + MEMOIZE (memo 0)
        b"\x8c\x05Popen\x94"  # memo 1
        b"h\x00h\x01\x93"  # BINGET 0, BINGET 1, STACK_GLOBAL
        b"\x8c\x02ls\x85R."  # arg, TUPLE1, REDUCE, STOP
    )
    p = tmp_path / "x.pkl"
    p.write_bytes(body)
    info = sniff(FS, str(p))
    assert info.unsafe and "subprocess.Popen" in info.imports


def test_pytorch_zip_walks_data_pkl(tmp_path: Path) -> None:
    from collections import OrderedDict

    class FakeStorage:  # stands for a torch storage: persistent id, like torch.save does
        pass

    buf = io.BytesIO()

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", "FloatStorage", "0", "cpu", 6) if isinstance(obj, FakeStorage) else None

    P(buf, protocol=2).dump(OrderedDict(weight=FakeStorage()))
    p = tmp_path / "model.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/data/0", b"\x00" * 24)
        z.writestr("archive/version", "3\n")
    info = sniff(FS, str(p))
    assert info.format == "pytorch" and not info.unsafe, info.detail
    assert "collections.OrderedDict" in info.imports

    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Malicious(), protocol=2))
    bad = sniff(FS, str(evil))
    assert bad.format == "pytorch" and bad.unsafe


def test_garbage_is_unknown(tmp_path: Path) -> None:
    p = tmp_path / "model.onnx"
    p.write_bytes(os.urandom(4096))
    assert sniff(FS, str(p)).format == "unknown"
    e = tmp_path / "empty"
    e.write_bytes(b"")
    assert sniff(FS, str(e)).format == "unknown"


def test_truncated_pickle_does_not_crash_and_is_not_vouched_for(tmp_path: Path) -> None:
    p = tmp_path / "cut.pkl"
    p.write_bytes(pickle.dumps({"a": list(range(100))}, protocol=4)[:40])
    info = sniff(FS, str(p))
    assert info.format == "pickle" and info.unsafe and "walk stopped" in info.detail


def test_allow_and_deny_lists() -> None:
    assert classify_import("sklearn.linear_model._logistic.LogisticRegression") == "allowed"
    assert classify_import("numpy.core.multiarray._reconstruct") == "allowed"
    assert classify_import("builtins.eval") == "denied"
    assert classify_import("builtins.getattr") == "denied"
    assert classify_import("sklearn.utils._testing.assert_run_python_script_without_output") == "denied"
    assert classify_import("sklearn.base.BaseEstimator.__init__.__globals__") == "denied"
    assert classify_import("mypackage.Net") == "unknown"


def test_sniff_artifact_for_a_stored_folder(tmp_path: Path) -> None:
    d = tmp_path / "hf-model"
    d.mkdir()
    write_safetensors(d / "model.safetensors", {"w": ("F32", [2, 2])})
    (d / "config.json").write_text("{}")
    (d / "training_args.bin").write_bytes(pickle.dumps(Malicious(), protocol=4))
    store = BlobStore(str(tmp_path / "store"))
    info = store.ingest(str(d))
    fmt = sniff_artifact(store, info)
    assert fmt.format == "safetensors"
    assert fmt.unsafe is True  # the pickled training args would run code if loaded
    assert fmt.structure is not None and fmt.structure["main"] == "model.safetensors"

    single = store.ingest(str(d / "model.safetensors"))
    assert sniff_artifact(store, single).format == "safetensors"


def test_large_payloads_are_skipped_not_loaded(tmp_path: Path) -> None:
    # A plain pickle of a big array: the walk seeks past the payload and still reaches STOP.
    p = tmp_path / "big.pkl"
    p.write_bytes(pickle.dumps({"blob": b"\x00" * (8 * 1024 * 1024), "after": 1}, protocol=4))
    info = sniff(FS, str(p))
    assert info.format == "pickle" and not info.unsafe, info.detail
