"""Acceptance: artifacts are opaque bytes — any content registers. Format sniffing is best-effort and must
never turn bytes it cannot parse into a failed ingest.

Regression tests (xfail until 3c2b316): ~0.6 % of 4 KB ``os.urandom`` files named ``*.bin`` ended
``failed`` ("cannot read <blob>: [Errno 22] Invalid argument"). ``.bin`` is in PICKLE_SUFFIXES, so the
sniffer walks random bytes as a pickle; a BINBYTES8 opcode (0x8e) with a huge length made
``_SkippingReader.read`` seek past what the OS allows (EINVAL), and ``sniff`` turned that OSError into
ArtifactError.
"""

from __future__ import annotations

import struct
from pathlib import Path

from artifact_support import noise, outcomes, sha256_file

# BINBYTES8 announcing 2**62 bytes, then a little filler.
HUGE_BINBYTES8 = b"\x8e" + struct.pack("<Q", 1 << 62) + b"\x00" * 64


def test_bytes_that_look_like_a_broken_pickle_still_register(reg, home: Path, tmp_path: Path) -> None:
    src = tmp_path / "pytorch_model.bin"
    src.write_bytes(HUGE_BINBYTES8)
    v = reg.register("opaque", artifact=str(src), timeout=120)
    assert v.artifact["format"] in ("unknown", "pickle", "pytorch")
    assert v.status == "ready"
    assert v.artifact["digest"] == sha256_file(src)
    assert len(outcomes(home, "opaque", 1)) == 1


def test_pickle_protocol_header_with_garbage_ingests(home: Path, tmp_path: Path) -> None:
    """Same bug through the header check (0x80 0x04) on a neutral name; the ingest body directly."""
    from workers.ingest import ingest_artifact

    src = tmp_path / "blob.dat"
    src.write_bytes(b"\x80\x04" + HUGE_BINBYTES8)
    facts = ingest_artifact(str(tmp_path / "store"), str(src))
    assert facts["digest"] == sha256_file(src)


def test_noise_helper_registers(reg, tmp_path: Path) -> None:
    """The control: the format-neutral noise the other tests use is stored as unknown bytes."""
    src = tmp_path / "noise.dat"
    src.write_bytes(noise(100_000))
    v = reg.register("noise", artifact=str(src))
    assert v.status == "ready" and v.artifact["format"] == "unknown"
