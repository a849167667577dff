"""The header of a safetensors file: every tensor's name, dtype and shape, the parameter count, the dtypes and
the ``__metadata__``, checked as the library checks it (every tensor's byte range must match its shape and
dtype), with no product of unbounded size and no unbounded header. Only the header is read (one seek, one
read): the tensor bytes never are."""

from __future__ import annotations

import json
import struct
from typing import IO, Any

from .tensor_tally import MAX_DIMS, TensorTally

# The safetensors library refuses headers over 100 MB; reading one costs ~12x its size in memory, so only
# headers up to this bound are read for their structure (real ones are a few MB at most).
MAX_HEADER = 8 * 1024 * 1024
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
            "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "C64": 8}
MAX_METADATA_ITEMS = 100
MAX_DATA = 1 << 62


class TooLarge(Exception):
    """A safetensors-like header over ``MAX_HEADER``: not read."""


def read_safetensors(f: IO[bytes], size: int) -> tuple[dict[str, Any], str] | None:
    """(structure, detail) of a safetensors file, or None when the bytes are not one. Raises ``TooLarge`` for
    a header that looks like safetensors but is over the bound."""
    f.seek(0)
    head = f.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    if n < 2 or n + 8 > size:
        return None
    if n > MAX_HEADER:
        if f.read(1) == b"{":
            raise TooLarge(f"safetensors-like header of {n} bytes not read (over {MAX_HEADER})")
        return None
    raw = f.read(n)
    if len(raw) != n or raw[:1] != b"{":
        return None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(header, dict):
        return None
    data_len = size - 8 - n
    tally = TensorTally()
    data_end = 0
    for name, t in header.items():
        if name == "__metadata__":
            if not isinstance(t, dict):
                return None
            continue
        if not isinstance(t, dict):
            return None
        dtype, shape, offs = t.get("dtype"), t.get("shape"), t.get("data_offsets")
        if not isinstance(dtype, str) or not isinstance(shape, list) or not isinstance(offs, list):
            return None
        if len(offs) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in offs) \
                or not 0 <= offs[0] <= offs[1] <= MAX_DATA:
            return None
        nbytes = offs[1] - offs[0]
        if len(shape) > MAX_DIMS or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                            for x in shape):
            return None
        numel = 1
        for x in shape:
            numel *= x
            if numel > nbytes * 8:  # more than its byte range could hold even at one bit per element
                return None
        itemsize = ITEMSIZE.get(dtype)
        if itemsize is not None and numel * itemsize != nbytes:
            return None
        data_end = max(data_end, offs[1])
        tally.add(name, dtype[:16], shape)
    structure = tally.into({"format": "safetensors"})
    meta = header.get("__metadata__")
    if isinstance(meta, dict) and meta:
        structure["metadata"] = {str(k)[:256]: str(v)[:1024] for k, v in list(meta.items())[:MAX_METADATA_ITEMS]}
    detail = f"{tally.count} tensors, {tally.parameters} parameters"
    if data_end > data_len:
        # What a cut-short download looks like: the header is whole, the data is not (loaders refuse it).
        structure["partial"] = (f"the file is cut short: its tensors need {data_end} bytes of data, "
                                f"it holds {data_len}")
        detail += " (truncated)"
    return structure, detail
