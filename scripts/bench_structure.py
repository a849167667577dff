"""What reading a model's structure from its bytes adds to an ingest (issue 12, point 6).

A 1 GiB safetensors file (256 tensors of 1 MiB float32 each, real bytes, not sparse), and the same tensors as
a sharded Hugging Face folder (4 shards + ``model.safetensors.index.json`` + ``config.json``), are ingested
into a fresh local store (copy + hash: the baseline) and then read for their format and structure
(``sniff_artifact``: the pickle reading from byte 0 plus the safetensors header, or every shard's header plus
the index and the config) — alternately, several rounds, in the same run. The figure is the ratio
(ingest + structure) / ingest; the structure's own time is printed too.

    .venv/bin/python scripts/bench_structure.py              # 1 GiB, 3 rounds
    .venv/bin/python scripts/bench_structure.py --mib 256 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import time
from pathlib import Path

from _benchlib import add_repo_to_path, log, machine, median, temp_dir

TENSOR_MIB = 4


def write_safetensors(path: Path, names: list[str], block: bytes) -> dict[str, int]:
    """Tensors of ``len(block)`` bytes each (float32), every one holding ``block``; returns name -> bytes."""
    per = len(block)
    header = {n: {"dtype": "F32", "shape": [per // 4], "data_offsets": [i * per, (i + 1) * per]}
              for i, n in enumerate(names)}
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _ in names:
            f.write(block)
    return {n: per for n in names}


def make_inputs(root: Path, mib: int) -> tuple[Path, Path]:
    block = os.urandom(TENSOR_MIB * 1024 * 1024)
    count = mib // TENSOR_MIB
    names = [f"model.layers.{i // 8}.mlp.w{i % 8}.weight" for i in range(count)]
    single = root / "model.safetensors"
    write_safetensors(single, names, block)
    folder = root / "sharded"
    folder.mkdir()
    shards = 4
    weight_map: dict[str, str] = {}
    per_shard = -(-count // shards)
    for s in range(shards):
        part = names[s * per_shard:(s + 1) * per_shard]
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(folder / fname, part, block)
        weight_map.update(dict.fromkeys(part, fname))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": count * len(block)}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": count // 8}))
    return single, folder


def one_round(source: Path, store_root: Path) -> tuple[float, float, dict]:
    from workers.formats import sniff_artifact
    from workers.store import BlobStore

    shutil.rmtree(store_root, ignore_errors=True)
    store = BlobStore(str(store_root))
    t0 = time.perf_counter()
    info = store.ingest(str(source))
    t1 = time.perf_counter()
    fmt = sniff_artifact(store, info)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, fmt.structure or {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tmp", default=None, help="where the temporary files go")
    args = ap.parse_args()
    add_repo_to_path()
    print(json.dumps({"machine": machine()}))
    with temp_dir(args.tmp, "mledger-structure-") as tmp:
        root = Path(tmp)
        log(f"writing {args.mib} MiB of safetensors (a file and a 4-shard folder)")
        single, folder = make_inputs(root, args.mib)
        rows = []
        for label, source in (("1 file", single), ("4-shard folder", folder)):
            ingests, structures = [], []
            one_round(source, root / "store")  # warm the page cache: every timed round reads from memory
            for r in range(args.rounds):
                log(f"{label}: round {r + 1}/{args.rounds}")
                ingest_s, structure_s, structure = one_round(source, root / "store")
                ingests.append(ingest_s)
                structures.append(structure_s)
            ing, st = median(ingests), median(structures)
            rows.append((label, ing, st, (ing + st) / ing, structure.get("tensor_count"),
                         structure.get("parameters")))
        print(f"{'source':<16} {'ingest s':>9} {'structure s':>12} {'ratio':>7} {'tensors':>8} {'parameters':>12}")
        for label, ing, st, ratio, tensors, params in rows:
            print(f"{label:<16} {ing:>9.3f} {st:>12.4f} {ratio:>7.4f} {tensors:>8} {params:>12}")


if __name__ == "__main__":
    main()
