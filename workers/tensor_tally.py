"""What every format reader records about the tensors a file declares, in one shape: a bounded listing
(name -> dtype, shape), the total count, the parameter count and the parameters per dtype.

An event payload is capped at 1 MiB and big LLMs declare thousands of tensors: the listing stops at
``MAX_TENSORS_LISTED`` and says so (``tensors_truncated``: the full count); the sums always cover every tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_TENSORS_LISTED = 2000
MAX_NAME = 512
MAX_DTYPE = 32
MAX_DIMS = 64


@dataclass
class TensorTally:
    listed: dict[str, dict[str, Any]] = field(default_factory=dict)
    count: int = 0
    parameters: int = 0
    dtypes: dict[str, int] = field(default_factory=dict)  # dtype -> parameters of that dtype

    def add(self, name: str, dtype: str, shape: list[int] | tuple[int, ...]) -> None:
        numel = 1
        for d in shape:
            numel *= d
        dtype = str(dtype)[:MAX_DTYPE]
        self.count += 1
        self.parameters += numel
        if dtype in self.dtypes or len(self.dtypes) < 64:
            self.dtypes[dtype] = self.dtypes.get(dtype, 0) + numel
        name = str(name)[:MAX_NAME]
        if len(self.listed) < MAX_TENSORS_LISTED and name not in self.listed:
            self.listed[name] = {"dtype": dtype, "shape": list(shape)[:MAX_DIMS]}

    def merge(self, structure: dict[str, Any]) -> None:
        """Add another file's tallied structure (a shard of a sharded checkpoint)."""
        count = structure.get("tensor_count")
        params = structure.get("parameters")
        if isinstance(count, int):
            self.count += count
        if isinstance(params, int):
            self.parameters += params
        for dtype, n in (structure.get("dtypes") or {}).items():
            if isinstance(n, int):
                self.dtypes[dtype] = self.dtypes.get(dtype, 0) + n
        for name, t in (structure.get("tensors") or {}).items():
            if len(self.listed) >= MAX_TENSORS_LISTED:
                break
            self.listed.setdefault(name, t)

    def into(self, structure: dict[str, Any]) -> dict[str, Any]:
        """``structure`` with the tally's fields (tensors, tensor_count, parameters, dtypes) added."""
        structure["tensors"] = self.listed
        structure["tensor_count"] = self.count
        structure["parameters"] = self.parameters
        structure["dtypes"] = dict(sorted(self.dtypes.items()))
        if self.count > len(self.listed):
            structure["tensors_truncated"] = self.count
            structure["note"] = (f"the first {len(self.listed)} of {self.count} tensors are listed; "
                                 "the counts cover all of them")
        return structure


MAX_STRUCTURE_BYTES = 512 * 1024  # of the 1 MiB an event may weigh; the files list takes its own share


def fit(structure: dict[str, Any] | None) -> dict[str, Any] | None:
    """``structure`` within ``MAX_STRUCTURE_BYTES`` of JSON: long tensor listings (``tensors``, at any level) are
    halved until it fits, and say so; the sums are never cut."""
    if structure is None:
        return None

    def size(s: dict[str, Any]) -> int:
        return len(json.dumps(s, default=str))

    while size(structure) > MAX_STRUCTURE_BYTES:
        holder = _largest_listing(structure)
        if holder is None or not holder["tensors"]:
            return {k: v for k, v in structure.items() if not isinstance(v, (dict, list))} | {
                "note": "the structure was too large to record; only its scalar fields are kept"}
        listed = holder["tensors"]
        keep = dict(list(listed.items())[:len(listed) // 2])
        holder["tensors"] = keep
        total = holder.get("tensor_count", len(listed))
        holder["tensors_truncated"] = total
        holder["note"] = f"the first {len(keep)} of {total} tensors are listed; the counts cover all of them"
    return structure


def _largest_listing(structure: dict[str, Any]) -> dict[str, Any] | None:
    best: dict[str, Any] | None = None
    todo = [structure]
    while todo:
        s = todo.pop()
        if isinstance(s.get("tensors"), dict) and (best is None or len(s["tensors"]) > len(best["tensors"])):
            best = s
        todo.extend(v for v in s.values() if isinstance(v, dict))
    return best
