"""Is this file a complete GGUF model? Answered from its header, without loading it.

A missing, truncated or non-GGUF model file must be refused with one clear line before a run
starts (and make ``/health/ready`` say so) — never reach llama.cpp, whose loader may abort the
process. The header walk follows the GGUF spec (ggml's ``docs/gguf.md``): magic, version, tensor
and key/value counts, the key/values, then one record per tensor giving its type, shape and
offset. The file is complete when every tensor's bytes lie inside it.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_HEADER_ITEMS = 1_000_000

# ggml type id → (elements per block, bytes per block), from ggml.h / ggml-common.h.
_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
    15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18),
    21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8),
    28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17),
}  # fmt: skip
# GGUF metadata value types → fixed size in bytes (8 = string, 9 = array are variable).
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


class GGUFError(ValueError):
    """The file is not a usable GGUF model; the message says why, in words a user can act on."""


def check_gguf(path: Path) -> None:
    """Raise :class:`GGUFError` unless ``path`` is a GGUF file whose tensors all fit inside it."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            end = _tensor_data_end(handle)
    except FileNotFoundError:
        raise GGUFError("does not exist") from None
    except IsADirectoryError:
        raise GGUFError("is a directory, not a GGUF file") from None
    except PermissionError:
        raise GGUFError("is not readable (permission denied)") from None
    except (struct.error, EOFError):
        raise GGUFError("is truncated (its header ends early)") from None
    except OSError as error:
        raise GGUFError(f"cannot be read: {error.strerror}") from None
    if end > size:
        raise GGUFError(f"is truncated: its tensors need {end} bytes but the file has {size}")


def _tensor_data_end(handle: BinaryIO) -> int:
    if handle.read(4) != MAGIC:
        raise GGUFError("is not a GGUF model file (wrong magic bytes)")
    version = _u32(handle)
    if version < 2:
        raise GGUFError(f"uses GGUF version {version}, which llama.cpp no longer reads")
    tensors, items = _u64(handle), _u64(handle)
    if tensors > MAX_HEADER_ITEMS or items > MAX_HEADER_ITEMS:
        raise GGUFError("has a corrupt header (impossible tensor or key counts)")
    alignment = DEFAULT_ALIGNMENT
    for _ in range(items):
        key = _string(handle)
        kind = _u32(handle)
        if key == "general.alignment" and kind == 4:
            alignment = _u32(handle) or DEFAULT_ALIGNMENT
        else:
            _skip_value(handle, kind)
    end = 0
    for _ in range(tensors):
        _string(handle)
        dims = _u32(handle)
        if dims > 8:
            raise GGUFError("has a corrupt tensor record")
        elements = 1
        for _ in range(dims):
            elements *= _u64(handle)
        kind, offset = _u32(handle), _u64(handle)
        block, block_bytes = _TYPE_SIZES.get(kind, (1, 0))
        end = max(end, offset + elements // block * block_bytes)
    data_start = -(-handle.tell() // alignment) * alignment
    return data_start + end


def _read(handle: BinaryIO, count: int) -> bytes:
    data = handle.read(count)
    if len(data) != count:
        raise EOFError
    return data


def _u32(handle: BinaryIO) -> int:
    return int(struct.unpack("<I", _read(handle, 4))[0])


def _u64(handle: BinaryIO) -> int:
    return int(struct.unpack("<Q", _read(handle, 8))[0])


def _string(handle: BinaryIO) -> str:
    length = _u64(handle)
    if length > 1 << 24:
        raise GGUFError("has a corrupt header (an impossible string length)")
    return _read(handle, length).decode("utf-8", errors="replace")


def _skip_value(handle: BinaryIO, kind: int) -> None:
    if kind in _SCALAR_SIZES:
        _read(handle, _SCALAR_SIZES[kind])
    elif kind == 8:
        _string(handle)
    elif kind == 9:
        inner, count = _u32(handle), _u64(handle)
        if count > 1 << 26:
            raise GGUFError("has a corrupt header (an impossible array length)")
        if inner in _SCALAR_SIZES:
            _read(handle, _SCALAR_SIZES[inner] * count)
        else:
            for _ in range(count):
                _skip_value(handle, inner)
    else:
        raise GGUFError(f"has a corrupt header (unknown value type {kind})")
