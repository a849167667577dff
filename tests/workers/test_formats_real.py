"""Structures read from real files made by the real libraries (safetensors, PyTorch, h5py, onnx, gguf): what the
registry records is what the library itself reads back (names, dtypes, shapes, counts). The readers never
import these libraries; the tests use them only to write files and to read them back as the truth."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest

from workers.formats import combine, sniff
from workers.store import BlobStore

FS = fsspec.filesystem("file")


def read(path: Path) -> tuple[str, dict[str, Any]]:
    info = sniff(FS, str(path))
    assert info.structure is not None, info
    return info.format, info.structure


def listed(structure: dict[str, Any]) -> dict[str, tuple[str, list[Any]]]:
    return {k: (v["dtype"], v["shape"]) for k, v in structure["tensors"].items()}


# -- safetensors ----------------------------------------------------------------------------------------------


def test_safetensors_file_matches_what_safe_open_reads(tmp_path: Path) -> None:
    st_numpy = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open

    tensors = {
        "embed.weight": np.zeros((32, 8), np.float32),
        "layer.0.bias": np.ones(8, np.float16),
        "counter": np.array(7, np.int64),  # 0-d
        "mask": np.zeros((2, 3, 4), np.bool_),
        "empty": np.zeros((0, 5), np.float32),
    }
    path = tmp_path / "model.safetensors"
    st_numpy.save_file(tensors, str(path), metadata={"format": "np", "author": "test"})
    fmt, s = read(path)
    assert fmt == "safetensors"
    with safe_open(str(path), "np") as f:
        truth = {k: (f.get_slice(k).get_dtype(), list(f.get_slice(k).get_shape())) for k in f.keys()}  # noqa: SIM118
        meta = f.metadata()
    assert listed(s) == truth
    assert s["parameters"] == sum(t.size for t in tensors.values())
    assert s["tensor_count"] == len(tensors)
    assert s["metadata"] == meta
    assert s["dtypes"] == {"BOOL": 24, "F16": 8, "F32": 256, "I64": 1}


def test_safetensors_from_torch_with_bfloat16(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    sd = {"w": torch.zeros(4, 6, dtype=torch.bfloat16), "b": torch.zeros(6, dtype=torch.float32)}
    path = tmp_path / "model.safetensors"
    st_torch.save_file(sd, str(path))
    _, s = read(path)
    assert listed(s) == {"w": ("BF16", [4, 6]), "b": ("F32", [6])}
    assert s["parameters"] == 30


def test_a_listing_past_the_bound_is_capped_with_a_note_and_the_sums_cover_everything(tmp_path: Path) -> None:
    st_numpy = pytest.importorskip("safetensors.numpy")
    from workers.tensor_tally import MAX_TENSORS_LISTED

    n = MAX_TENSORS_LISTED + 50
    st_numpy.save_file({f"t{i:05d}": np.zeros(3, np.float32) for i in range(n)}, str(tmp_path / "m.safetensors"))
    _, s = read(tmp_path / "m.safetensors")
    assert len(s["tensors"]) == MAX_TENSORS_LISTED
    assert s["tensor_count"] == s["tensors_truncated"] == n
    assert s["parameters"] == 3 * n
    assert "listed" in s["note"]


# -- a sharded Hugging Face folder ------------------------------------------------------------------------------


def make_hf_folder(root: Path) -> dict[str, np.ndarray]:
    """A folder laid out as transformers' save_pretrained writes a sharded checkpoint."""
    st_numpy = pytest.importorskip("safetensors.numpy")
    root.mkdir()
    shards = [
        {"model.embed_tokens.weight": np.zeros((100, 16), np.float16)},
        {"model.layers.0.self_attn.q_proj.weight": np.zeros((16, 16), np.float16),
         "model.layers.0.mlp.up_proj.weight": np.zeros((32, 16), np.float16)},
        {"model.layers.1.self_attn.q_proj.weight": np.zeros((16, 16), np.float16),
         "model.norm.weight": np.ones(16, np.float32)},
    ]
    weight_map = {}
    total = 0
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        st_numpy.save_file(shard, str(root / name), metadata={"format": "pt"})
        for k, v in shard.items():
            weight_map[k] = name
            total += v.nbytes
    (root / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (root / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 100, "torch_dtype": "float16", "rope_scaling": {"type": "x"}}))
    (root / "tokenizer.json").write_text("{}")
    return {k: v for shard in shards for k, v in shard.items()}


def test_sharded_folder_is_summed_over_all_shards_with_index_and_config(tmp_path: Path) -> None:
    from safetensors import safe_open

    src = tmp_path / "llama"
    tensors = make_hf_folder(src)
    store = BlobStore(str(tmp_path / "store"))
    info = store.ingest(str(src))
    from workers.formats import sniff_artifact

    result = sniff_artifact(store, info)
    s = result.structure
    assert result.format == "safetensors" and not result.unsafe
    truth = {}
    for shard in sorted(src.glob("*.safetensors")):
        with safe_open(str(shard), "np") as f:
            truth.update({k: (f.get_slice(k).get_dtype(), list(f.get_slice(k).get_shape())) for k in f.keys()})  # noqa: SIM118
    assert listed(s) == truth
    assert s["tensor_count"] == 5
    assert s["parameters"] == sum(t.size for t in tensors.values())
    assert s["dtypes"] == {"F16": sum(t.size for t in tensors.values() if t.dtype == np.float16), "F32": 16}
    assert s["shard_count"] == 3
    assert s["index"]["tensors"] == 5 and s["index"]["shards"] == 3
    assert s["index"]["total_size"] == sum(t.nbytes for t in tensors.values())
    assert s["config"] == {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16,
                           "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
                           "torch_dtype": "float16"}
    assert "partial" not in s
    assert "5 tensors" in result.detail


def test_sharded_folder_in_an_s3_store_reads_the_same(s3_bucket: str, tmp_path: Path) -> None:
    """Structure reading goes through the store's interface (``open_blob``), whatever backend holds the
    bytes: the same folder in an S3 store (moto) gives the same structure as in a local one."""
    from workers.formats import sniff_artifact

    src = tmp_path / "llama"
    make_hf_folder(src)
    s3 = BlobStore(f"s3://{s3_bucket}/artifacts")
    local = BlobStore(str(tmp_path / "store"))
    remote = sniff_artifact(s3, s3.ingest(str(src))).structure
    assert remote == sniff_artifact(local, local.ingest(str(src))).structure
    assert remote["tensor_count"] == 5 and remote["config"]["model_type"] == "llama"


def test_a_folder_missing_a_shard_says_so(tmp_path: Path) -> None:
    src = tmp_path / "llama"
    make_hf_folder(src)
    (src / "model-00002-of-00003.safetensors").unlink()
    fmt = combine_folder(tmp_path, src)
    assert fmt.structure["index"]["missing_shards"] == ["model-00002-of-00003.safetensors"]
    assert "not in the folder" in fmt.structure["partial"]
    assert fmt.structure["shard_count"] == 2


def combine_folder(tmp_path: Path, src: Path):
    from workers.formats import sniff_artifact

    store = BlobStore(str(tmp_path / "store"))
    return sniff_artifact(store, store.ingest(str(src)))


def test_combine_without_json_reader_still_sums(tmp_path: Path) -> None:
    src = tmp_path / "llama"
    make_hf_folder(src)
    results = [(p.name, sniff(FS, str(p))) for p in sorted(src.iterdir())]
    s = combine(results).structure
    assert s["tensor_count"] == 5 and s["shard_count"] == 3
    assert "not a readable shard index" in s["partial"]  # the index could not be read without a reader


# -- PyTorch ------------------------------------------------------------------------------------------------------


def torch_truth(obj: Any, prefix: str = "") -> dict[str, tuple[str, list[int]]]:
    """Tensors of a loaded checkpoint, named as state_dict() keys (dicts nested with dots)."""
    import torch

    out: dict[str, tuple[str, list[int]]] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = (str(obj.dtype).removeprefix("torch."), list(obj.shape))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(torch_truth(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


class Tied:  # built in a function so that torch is imported only by the tests that have it
    @staticmethod
    def make():
        import torch

        class TiedLM(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embed = torch.nn.Embedding(50, 8)
                self.norm = torch.nn.BatchNorm1d(8)  # buffers, incl. an int64 num_batches_tracked
                self.head = torch.nn.Linear(8, 50, bias=False)
                self.head.weight = self.embed.weight  # tied: one storage, two names
                self.proj = torch.nn.Linear(8, 8).to(torch.bfloat16)

        return TiedLM()


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_torch_state_dict_matches_torch_load(tmp_path: Path, zipped: bool) -> None:
    torch = pytest.importorskip("torch")
    model = Tied.make()
    path = tmp_path / "pytorch_model.bin"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=zipped)
    fmt, s = read(path)
    info = sniff(FS, str(path))
    assert fmt == "pytorch" and not info.unsafe, info.detail
    truth = torch_truth(torch.load(path, weights_only=True))
    assert listed(s) == {k: (d, sh) for k, (d, sh) in truth.items()}
    assert s["tensor_count"] == len(truth)
    assert s["parameters"] == sum(math.prod(sh) for _, sh in truth.values())
    assert s["dtypes"]["bfloat16"] == 8 * 8 + 8 and s["dtypes"]["int64"] == 1
    assert "partial" not in s


def test_torch_nested_checkpoint_names_are_dotted_paths(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.Adam(model.parameters())
    model(torch.zeros(1, 4)).sum().backward()
    opt.step()
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}
    path = tmp_path / "ckpt.pt"
    torch.save(ckpt, path)
    _, s = read(path)
    truth = torch_truth(torch.load(path, weights_only=True))
    assert listed(s) == truth
    assert "model.0.weight" in s["tensors"] and "optimizer.state.0.exp_avg" in s["tensors"]


def test_torch_parameters_and_tensors_with_attributes(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    tagged = torch.zeros(3, 5, dtype=torch.float16)
    tagged.note = "calibrated"  # a tensor with attributes is rebuilt through _rebuild_from_type_v2
    obj = {"p": torch.nn.Parameter(torch.zeros(2, 2)), "tagged": tagged, "plain": torch.arange(4)}
    path = tmp_path / "mixed.pt"
    torch.save(obj, path)
    _, s = read(path)
    assert listed(s) == torch_truth(torch.load(path, weights_only=False))
    assert s["tensor_count"] == 3 and s["parameters"] == 4 + 15 + 4


def test_torch_whole_module_counts_every_tensor(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    path = tmp_path / "model.pt"
    torch.save(model, path)
    info = sniff(FS, str(path))
    assert info.format == "pytorch"
    sd = model.state_dict()
    assert listed(info.structure) == torch_truth(sd)  # named as state_dict() names them
    assert info.structure["parameters"] == sum(t.numel() for t in sd.values())


def test_torchscript_tensors_are_named_as_its_state_dict(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(model), path)
    fmt, s = read(path)
    assert fmt == "torchscript"
    assert listed(s) == torch_truth(model.state_dict())


# -- HDF5 ---------------------------------------------------------------------------------------------------------


def h5_truth(path: Path) -> dict[str, tuple[str, list[int]]]:
    import h5py

    out: dict[str, tuple[str, list[int]]] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(
            "/" + name, (str(obj.dtype), list(obj.shape))) if isinstance(obj, h5py.Dataset) else None)
    return out


def write_keras_like(path: Path, **kwargs: Any) -> None:
    import h5py

    with h5py.File(path, "w", **kwargs) as f:
        f.attrs["keras_version"] = "3.0.0"
        w = f.create_group("model_weights")
        d = w.create_group("dense").create_group("dense")
        d.create_dataset("kernel:0", data=np.zeros((8, 4), np.float32))
        d.create_dataset("bias:0", data=np.zeros(4, np.float32))
        c = w.create_group("conv2d")
        c.create_dataset("kernel", shape=(3, 3, 1, 16), dtype="float16", chunks=(3, 3, 1, 4), compression="gzip")
        f.create_dataset("ids", data=np.arange(10, dtype=np.int64))
        f.create_dataset("step", data=np.uint8(3))  # scalar
        f.create_dataset("lr", data=np.float64(0.1))


@pytest.mark.parametrize("libver", ["earliest", "latest"])
def test_hdf5_datasets_match_h5py(tmp_path: Path, libver: str) -> None:
    pytest.importorskip("h5py")
    path = tmp_path / "model.h5"
    write_keras_like(path, libver=libver)
    fmt, s = read(path)
    assert fmt == "hdf5"
    truth = h5_truth(path)
    assert listed(s) == truth
    assert s["tensor_count"] == len(truth) == 6
    assert s["parameters"] == sum(math.prod(sh) for _, sh in truth.values())
    assert "partial" not in s, s["partial"]


def test_hdf5_group_with_many_datasets(tmp_path: Path) -> None:
    """Hundreds of links: symbol-table groups split into several B-tree nodes; with the newest file format
    the links move to dense storage (a fractal heap)."""
    h5py = pytest.importorskip("h5py")
    for libver in ("earliest", "latest"):
        path = tmp_path / f"many-{libver}.h5"
        with h5py.File(path, "w", libver=libver) as f:
            g = f.create_group("layers")
            for i in range(300):
                g.create_dataset(f"w{i:03d}", data=np.zeros(i % 7 + 1, np.float32))
            f.create_dataset("top", data=np.zeros((2, 2), np.int32))
        _, s = read(path)
        truth = h5_truth(path)
        assert listed(s) == truth and "partial" not in s, libver


def keras_model():
    os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 on the PyTorch the test extra installs
    keras = pytest.importorskip("keras")
    return keras, keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="d1"),
                                    keras.layers.BatchNormalization(), keras.layers.Dense(2, name="out")])


def test_keras_archive_lists_its_weights_and_config(tmp_path: Path) -> None:
    keras, model = keras_model()
    path = tmp_path / "model.keras"
    model.save(path)
    info = sniff(FS, str(path))
    s = info.structure
    assert info.format == "keras" and not info.unsafe, info.detail
    truth = sorted((str(w.dtype), list(w.shape)) for w in model.weights)
    assert sorted((t["dtype"], t["shape"]) for t in s["tensors"].values()) == truth
    assert s["parameters"] == sum(math.prod(w.shape) for w in model.weights) == model.count_params()
    assert s["keras_version"] == keras.__version__
    assert s["config"]["class_name"] == "Sequential"
    assert s["config"]["layer_classes"] == {"InputLayer": 1, "Dense": 2, "BatchNormalization": 1}
    assert "partial" not in s


def test_keras_weights_h5_is_read_as_hdf5(tmp_path: Path) -> None:
    _, model = keras_model()
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    fmt, s = read(path)
    assert fmt == "hdf5"
    assert listed(s) == h5_truth(path)
    assert s["parameters"] == model.count_params()


# -- ONNX ---------------------------------------------------------------------------------------------------------


def make_onnx(path: Path, big: bool = False) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((256, 1024) if big else (4, 8), np.float32), "W")
    b = numpy_helper.from_array(np.zeros(256 if big else 4, np.float32), "B")
    steps = numpy_helper.from_array(np.array([1, 2], np.int64), "steps")
    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["y"]),
             helper.make_node("Shape", ["y"], ["s"]), helper.make_node("Relu", ["y"], ["z"])]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1024 if big else 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 256 if big else 4]),
         helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
        initializer=[w, b, steps])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.x", 1)],
                              producer_name="tests", producer_version="1.0")
    onnx.save(model, str(path))


def onnx_io(values: Any) -> list[dict[str, Any]]:
    from onnx import TensorProto

    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
        out.append({"name": v.name, "elem_type": TensorProto.DataType.Name(t.elem_type), "shape": dims})
    return out


@pytest.mark.parametrize("big", [False, True], ids=["small", "4MB-initializer"])
def test_onnx_interface_matches_onnx_load(tmp_path: Path, big: bool) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, numpy_helper

    path = tmp_path / "model.onnx"
    make_onnx(path, big)
    fmt, s = read(path)
    assert fmt == "onnx"
    m = onnx.load(str(path))
    assert s["ir_version"] == m.ir_version
    assert s["opset"] == {(o.domain or "ai.onnx"): o.version for o in m.opset_import}
    assert s["inputs"] == onnx_io(m.graph.input)
    assert s["outputs"] == onnx_io(m.graph.output)
    assert s["producer_name"] == "tests" and s["graph"] == "tiny"
    inits = {t.name: (TensorProto.DataType.Name(t.data_type), list(t.dims)) for t in m.graph.initializer}
    assert listed(s) == inits
    assert s["parameters"] == sum(numpy_helper.to_array(t).size for t in m.graph.initializer)
    assert s["nodes"] == len(m.graph.node) and s["ops"] == {"Gemm": 1, "Relu": 2, "Shape": 1}


def test_onnx_exported_by_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    model = torch.nn.Sequential(torch.nn.Linear(6, 3), torch.nn.Tanh())
    path = tmp_path / "exported.onnx"
    try:
        torch.onnx.export(model, (torch.zeros(2, 6),), str(path), input_names=["features"],
                          output_names=["scores"], dynamo=False)
    except Exception as exc:  # noqa: BLE001 - an exporter this torch build lacks is not what is tested
        pytest.skip(f"torch.onnx.export unavailable here: {exc}")
    _, s = read(path)
    m = onnx.load(str(path))
    assert s["inputs"] == onnx_io(m.graph.input) and s["outputs"] == onnx_io(m.graph.output)
    assert s["parameters"] == sum(p.numel() for p in model.parameters())


# -- GGUF ---------------------------------------------------------------------------------------------------------


def make_gguf(path: Path) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_context_length(128)
    w.add_embedding_length(32)
    w.add_name("tiny-llama")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_token_list([f"tok{i}" for i in range(300)])
    w.add_tensor("token_embd.weight", np.zeros((16, 32), np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(32, np.float16))
    q = gguf.quants.quantize(np.zeros((8, 64), np.float32), gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("blk.0.ffn_up.weight", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_header_matches_gguf_reader(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "model.gguf"
    make_gguf(path)
    fmt, s = read(path)
    assert fmt == "gguf"
    r = gguf.GGUFReader(str(path))
    truth = {t.name: (t.tensor_type.name, [int(d) for d in t.shape]) for t in r.tensors}
    assert listed(s) == truth
    assert s["tensor_count"] == len(r.tensors) == 3
    assert s["parameters"] == sum(int(t.n_elements) for t in r.tensors)
    assert s["architecture"] == "llama"
    assert s["file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0.name
    assert s["metadata"]["llama.context_length"] == 128
    assert s["metadata"]["tokenizer.ggml.tokens"] == "[300 x string]"
    assert s["version"] == r.fields["GGUF.version"].parts[-1][0]


def test_gguf_type_tables_match_gguf_py() -> None:
    gguf = pytest.importorskip("gguf")
    from workers.fmt_gguf import FILE_TYPES, GGML_TYPES

    for code, name in GGML_TYPES.items():
        assert gguf.GGMLQuantizationType(code).name == name
    for code, name in FILE_TYPES.items():
        assert gguf.LlamaFileType(code).name == name
