"""Opening a cache file without hanging on damage: the superblock check and bounded SWMR reads.

A reader opens caches in SWMR mode (so that it can follow a running writer). In that mode HDF5
skips its own end-of-file check, and a metadata read whose checksum fails is retried with a
doubling sleep (1 ns, 2 ns, ...) up to 100 times by default: on a truncated or overwritten file
the first failing read waits for days. So before opening:

* the HDF5 superblock is read here (signature, file consistency flags, end-of-file address) and a
  file shorter than the address it records is refused at once as truncated;
* the file is opened with a bounded number of metadata read attempts (``H5Pset_metadata_read_attempts``,
  which h5py does not wrap, is called through ``ctypes`` on the HDF5 library h5py loaded), so that a
  damaged object fails in milliseconds instead.
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
import re
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5f, h5p

from activations_cache.errors import CacheFormatError
from activations_cache.writer_lock import lock_path

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SUPERBLOCK_BYTES = 96
"""Bytes read at the superblock's offset: enough for every superblock version with 8-byte addresses."""

UNDEFINED_ADDRESS = (1 << 64) - 1

WRITE_ACCESS_FLAG = 0x1
SWMR_WRITE_ACCESS_FLAG = 0x4
"""File consistency flags of superblock v3: set while a writer has the file open (or died holding it)."""

LIVE_WRITER_READ_ATTEMPTS = 26
"""Metadata read attempts when the file is marked open for write: the sleeps between attempts double
from 1 ns, so 26 attempts wait at most ~0.13 s in all for a torn read of a running writer to settle."""

CLOSED_FILE_READ_ATTEMPTS = 2
"""Metadata read attempts for a cleanly closed file: nothing is writing it, a bad checksum is damage."""

LIVE_WRITER_WAIT_S = 0.5
"""How long a file marked open for write may look shorter than its superblock says (a running
writer between writing the superblock and extending the file) before it is called truncated."""

READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    RuntimeError,
    KeyError,
    ValueError,
    TypeError,
    IndexError,
    AttributeError,
    OverflowError,
    UnicodeError,
    struct.error,
)
"""What h5py and numpy raise on a damaged file (catch ``CacheError`` first: it is a ``ValueError``)."""


class SuperblockError(CacheFormatError):
    """No HDF5 superblock could be read; ``reason`` says why without naming the file."""

    def __init__(self, path: Path, reason: str, fix: str) -> None:
        super().__init__(f"{path} is not a readable HDF5 file ({reason}); {fix}")
        self.reason = reason


def one_line(error: BaseException) -> str:
    """``error`` as one line of text: its type when it has no message, whitespace collapsed."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def repair_hint(path: Path) -> str:
    """The fix for a damaged cache file."""
    return f"run `workbench cache repair {path}` (it keeps the damaged file next to it), or rerun the capture"


@dataclass(frozen=True)
class Superblock:
    """The parts of an HDF5 superblock this package checks.

    Attributes:
        offset: byte offset of the superblock (the user block size: 0, 512, 1024, ...).
        version: superblock version (2 or 3 for caches; 0 and 1 are parsed too).
        flags: file consistency flags (v2/v3: bit 0 write access, bit 2 SWMR write access).
        base_address: absolute byte address that the file's addresses are relative to.
        end_of_file: relative end-of-file address recorded by the last flush (bytes).
        address_size: bytes of one file address (8 for files h5py writes).
        length_size: bytes of one stored length (8 for files h5py writes).
        raw: the superblock's bytes as read (``SUPERBLOCK_BYTES`` from ``offset``, or fewer).
    """

    offset: int
    version: int
    flags: int
    base_address: int
    end_of_file: int
    address_size: int = 8
    length_size: int = 8
    raw: bytes = b""

    @property
    def open_for_write(self) -> bool:
        """True when a writer has the file open, or died without closing it."""
        return bool(self.flags & (WRITE_ACCESS_FLAG | SWMR_WRITE_ACCESS_FLAG))

    @property
    def required_size(self) -> int:
        """The file size in bytes the superblock requires."""
        return self.base_address + self.end_of_file


def _address(data: bytes, at: int, size: int) -> int:
    formats = {2: "<H", 4: "<I", 8: "<Q"}
    if size not in formats:
        raise struct.error(f"unsupported HDF5 address size {size}")
    value = struct.unpack_from(formats[size], data, at)[0]
    return UNDEFINED_ADDRESS if value == (1 << (8 * size)) - 1 else int(value)


def read_superblock(path: Path) -> Superblock:
    """Find and parse the HDF5 superblock of ``path`` (at byte 0, 512, 1024, 2048, ...).

    Raises:
        SuperblockError: unreadable, no HDF5 signature, or a superblock too short or malformed to parse.
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            offset = 0
            while offset < size:
                handle.seek(offset)
                head = handle.read(SUPERBLOCK_BYTES)
                if head.startswith(HDF5_SIGNATURE):
                    return _parse_superblock(path, offset, head)
                offset = 512 if offset == 0 else 2 * offset
    except OSError as error:
        reason = f"cannot read it: {one_line(error)}"
        raise SuperblockError(path, reason, "check the path and its permissions") from error
    raise SuperblockError(
        path, f"no HDF5 signature in its {size} bytes", "point to a cache.h5 written by the workbench"
    )


def _parse_superblock(path: Path, offset: int, head: bytes) -> Superblock:
    try:
        version = head[8]
        if version in (2, 3):
            address_size, length_size = head[9], head[10]
            flags = head[11]
            base = _address(head, 12, address_size)
            end_of_file = _address(head, 12 + 2 * address_size, address_size)
        elif version in (0, 1):
            address_size, length_size = head[13], head[14]
            flags = struct.unpack_from("<I", head, 20)[0]
            start = 24 if version == 0 else 28
            base = _address(head, start, address_size)
            end_of_file = _address(head, start + 2 * address_size, address_size)
        else:
            raise struct.error(f"unknown superblock version {version}")
    except (IndexError, struct.error) as error:
        raise SuperblockError(path, f"damaged HDF5 superblock: {one_line(error)}", repair_hint(path)) from error
    if base == UNDEFINED_ADDRESS or end_of_file == UNDEFINED_ADDRESS:
        raise SuperblockError(path, "damaged HDF5 superblock: undefined end of file", repair_hint(path))
    return Superblock(
        offset=offset,
        version=version,
        flags=flags,
        base_address=base,
        end_of_file=end_of_file,
        address_size=address_size,
        length_size=length_size,
        raw=bytes(head),
    )


def truncation(path: Path, superblock: Superblock) -> str | None:
    """``None`` when ``path`` is at least as long as ``superblock`` requires, else what is missing."""
    size = path.stat().st_size
    if size >= superblock.required_size:
        return None
    return f"{size} bytes on disk, its HDF5 superblock says it ends at byte {superblock.required_size}"


def check_complete(path: Path) -> Superblock:
    """The superblock of ``path`` once the file is known not to be truncated.

    A file marked open for write whose ``<name>.lock`` exists may belong to a running writer caught
    between writing the superblock and extending the file: it is re-checked for up to
    ``LIVE_WRITER_WAIT_S`` (without a lock file no ``CacheWriter`` runs, and nothing is waited for).

    Raises:
        SuperblockError: not an HDF5 file or a damaged superblock; CacheFormatError: a truncated file.
    """
    superblock = read_superblock(path)
    missing = truncation(path, superblock)
    deadline = time.monotonic() + LIVE_WRITER_WAIT_S
    pause = 0.01
    lock = lock_path(path)
    while missing is not None and superblock.open_for_write and lock.exists() and time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(2 * pause, 0.1)
        superblock = read_superblock(path)
        missing = truncation(path, superblock)
    if missing is not None:
        raise CacheFormatError(f"{path} is truncated ({missing}); {repair_hint(path)}")
    return superblock


def _loaded_hdf5_paths() -> list[str]:
    """Paths of the HDF5 C libraries mapped into this process (Linux) or shipped with h5py."""
    found: list[str] = []
    maps = Path("/proc/self/maps")
    if maps.is_file():
        for line in maps.read_text(errors="replace").splitlines():
            name = line.rsplit(" ", 1)[-1]
            if re.search(r"/libhdf5[-.][^/]*$", name) and "_hl" not in name and name not in found:
                found.append(name)
    package = Path(h5py.__file__).resolve().parent
    for folder in (package.parent / "h5py.libs", package / ".dylibs"):
        if folder.is_dir():
            found.extend(
                str(candidate)
                for candidate in sorted(folder.glob("libhdf5*"))
                if "_hl" not in candidate.name and str(candidate) not in found
            )
    inside = [name for name in found if name.startswith(str(package.parent))]
    return inside + [name for name in found if name not in inside]


@functools.cache
def _read_attempts_setter() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """``H5Pset_metadata_read_attempts`` of the HDF5 library h5py uses, or ``None`` when unreachable.

    A candidate library counts only when it reports h5py's HDF5 version and a value set through it
    reads back through h5py's own property list (so it is the very copy h5py calls).
    """
    if sys.platform == "win32":
        return None
    for name in _loaded_hdf5_paths():
        try:
            library = ctypes.CDLL(name)
            major, minor, release = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint()
            library.H5get_libversion.argtypes = [ctypes.POINTER(ctypes.c_uint)] * 3
            if library.H5get_libversion(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(release)) < 0:
                continue
            if (major.value, minor.value, release.value) != tuple(h5py.version.hdf5_version_tuple[:3]):
                continue
            setter = library.H5Pset_metadata_read_attempts
            setter.argtypes = [ctypes.c_int64, ctypes.c_uint]
            setter.restype = ctypes.c_int
            getter = library.H5Pget_metadata_read_attempts
            getter.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_uint)]
            getter.restype = ctypes.c_int
            probe = h5p.create(h5p.FILE_ACCESS)
            read_back = ctypes.c_uint()
            if setter(probe.id, 7) < 0 or getter(probe.id, ctypes.byref(read_back)) < 0 or read_back.value != 7:
                continue
            return setter
        except (OSError, AttributeError, ValueError, TypeError):
            continue
    return None


def bounded_reads_available() -> bool:
    """Whether metadata read attempts can be bounded (else a damaged file may stall SWMR reads)."""
    return _read_attempts_setter() is not None


def open_swmr(path: Path, read_attempts: int) -> h5py.File:
    """Open ``path`` read-only in SWMR mode (libver v1.10) with at most ``read_attempts`` metadata reads.

    Raises whatever h5py raises (``OSError`` mostly); the caller turns it into a one-line error.
    """
    from h5py._objects import phil  # h5py's lock around every HDF5 call: the ctypes call takes it too

    fapl = h5p.create(h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5f.LIBVER_V110, h5f.LIBVER_V110)
    setter = _read_attempts_setter()
    if setter is not None:
        with phil:
            setter(fapl.id, max(1, int(read_attempts)))
    file_id = h5f.open(os.fsencode(path), h5f.ACC_RDONLY | h5f.ACC_SWMR_READ, fapl=fapl)
    return h5py.File(file_id)


def open_checked(path: Path) -> tuple[h5py.File, Superblock]:
    """Check ``path`` is complete (:func:`check_complete`), then open it with :func:`open_swmr`.

    Raises:
        CacheFormatError: not HDF5, truncated, or HDF5 cannot open it (one line naming the file).
    """
    superblock = check_complete(path)
    attempts = LIVE_WRITER_READ_ATTEMPTS if superblock.open_for_write else CLOSED_FILE_READ_ATTEMPTS
    try:
        return open_swmr(path, attempts), superblock
    except READ_ERRORS as error:
        raise CacheFormatError(
            f"{path} cannot be opened as an HDF5 cache ({one_line(error)}); {repair_hint(path)}"
        ) from error


_MASK32 = 0xFFFFFFFF


def _rotate(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (32 - bits))) & _MASK32


def lookup3(data: bytes, initial: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle`` of ``data``: the checksum HDF5 stores in its metadata."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initial) & _MASK32
    if length == 0:
        return c
    blocks = (length - 1) // 12
    for block in range(blocks):
        x, y, z = struct.unpack_from("<3I", data, 12 * block)
        a, b, c = (a + x) & _MASK32, (b + y) & _MASK32, (c + z) & _MASK32
        a = ((a - c) & _MASK32) ^ _rotate(c, 4)
        c = (c + b) & _MASK32
        b = ((b - a) & _MASK32) ^ _rotate(a, 6)
        a = (a + c) & _MASK32
        c = ((c - b) & _MASK32) ^ _rotate(b, 8)
        b = (b + a) & _MASK32
        a = ((a - c) & _MASK32) ^ _rotate(c, 16)
        c = (c + b) & _MASK32
        b = ((b - a) & _MASK32) ^ _rotate(a, 19)
        a = (a + c) & _MASK32
        c = ((c - b) & _MASK32) ^ _rotate(b, 4)
        b = (b + a) & _MASK32
    tail = data[12 * blocks :]
    x, y, z = struct.unpack("<3I", tail + bytes(12 - len(tail)))
    a, b, c = (a + x) & _MASK32, (b + y) & _MASK32, (c + z) & _MASK32
    c = ((c ^ b) - _rotate(b, 14)) & _MASK32
    a = ((a ^ c) - _rotate(c, 11)) & _MASK32
    b = ((b ^ a) - _rotate(a, 25)) & _MASK32
    c = ((c ^ b) - _rotate(b, 16)) & _MASK32
    a = ((a ^ c) - _rotate(c, 4)) & _MASK32
    b = ((b ^ a) - _rotate(a, 14)) & _MASK32
    c = ((c ^ b) - _rotate(b, 24)) & _MASK32
    return c


def settled_superblock(superblock: Superblock, file_size: int) -> bytes | None:
    """The superblock's bytes with the open-for-write flags cleared and the end-of-file address set
    to what ``file_size`` holds (checksum recomputed): what ``h5clear`` writes, here never on disk.

    Read through :class:`SettledView`, HDF5 opens such a file in plain read mode (no SWMR), and a
    read past the bytes actually present fails at once, instead of returning zeros (which make
    HDF5 loop forever on a truncated global heap). ``None`` for superblock versions 0 and 1.
    """
    if superblock.version not in (2, 3):
        return None
    width = superblock.address_size
    checked = 12 + 4 * width
    if len(superblock.raw) < checked + 4:
        return None
    patched = bytearray(superblock.raw[: checked + 4])
    patched[11] = 0
    end_of_file = min(superblock.end_of_file, file_size - superblock.base_address)
    patched[12 + 2 * width : 12 + 3 * width] = end_of_file.to_bytes(width, "little")
    patched[checked : checked + 4] = struct.pack("<I", lookup3(bytes(patched[:checked])))
    return bytes(patched)


class SettledView(io.RawIOBase):
    """A read-only file object over a cache file whose superblock bytes are replaced (h5py's
    ``fileobj`` driver reads through it); see :func:`settled_superblock`."""

    def __init__(self, path: Path, superblock: Superblock, patch: bytes) -> None:
        super().__init__()
        self._handle = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._patch_at = superblock.offset
        self._patch = patch

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        start = self._handle.tell()
        count = self._handle.readinto(buffer) or 0
        low = max(start, self._patch_at)
        high = min(start + count, self._patch_at + len(self._patch))
        if low < high:
            memoryview(buffer).cast("B")[low - start : high - start] = self._patch[
                low - self._patch_at : high - self._patch_at
            ]
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def close(self) -> None:
        self._handle.close()
        super().close()


GLOBAL_HEAP_SIGNATURE = b"GCOL"


def _collection_problem(handle: Any, superblock: Superblock, address: int, limit: int) -> str | None:
    """What is wrong with the global heap collection at relative ``address`` (``None``: nothing).

    Walks the collection's objects as HDF5 does (H5HG: 16-byte header; per object a 2-byte index,
    2-byte reference count, 4 reserved bytes, a length and the 8-byte-aligned data; index 0 is the
    free space, whose length includes its header), so that a collection HDF5 would loop on (an
    object of length 0, as in a zero-filled block) or read past is reported instead.
    """
    lengths = {2: "<H", 4: "<I", 8: "<Q"}
    size_format = lengths.get(superblock.length_size)
    if size_format is None:
        return None
    header = 8 + superblock.length_size
    object_header = 8 + superblock.length_size
    handle.seek(superblock.base_address + address)
    head = handle.read(header)
    if len(head) < header or head[:4] != GLOBAL_HEAP_SIGNATURE:
        return f"no global heap collection at address {address}"
    size = struct.unpack_from(size_format, head, 8)[0]
    if size < header or address + size > limit:
        return f"the global heap collection at address {address} ({size} bytes) runs past the file's end at {limit}"
    data = head + handle.read(size - header)
    if len(data) < size:
        return f"the global heap collection at address {address} is cut short"
    index_at = struct.Struct("<H").unpack_from
    length_at = struct.Struct(size_format).unpack_from
    at = header
    while at + object_header <= size:  # a tail too small for an object header is free space
        length = length_at(data, at + 8)[0]
        step = object_header + ((length + 7) & ~7) if index_at(data, at)[0] > 0 else length
        if step <= 0 or at + step > size:
            return f"the global heap collection at address {address} is damaged (object at byte {at})"
        at += step
    return None


def bad_string_row(
    dataset: h5py.Dataset,
    rows: int,
    superblock: Superblock,
    path: Path,
    checked: dict[int, str | None] | None = None,
) -> tuple[int, str] | None:
    """The first of rows ``[0, rows)`` of a variable-length string dataset that HDF5 cannot read
    safely, with why; ``None`` when every row can be read.

    Each stored string is a descriptor (4-byte length, global heap address, 4-byte index) pointing
    into a heap collection. A damaged length makes HDF5 allocate up to 4 GiB before failing, and a
    damaged collection can make it loop forever, so the raw descriptors are read first
    (``read_direct_chunk``, 16 bytes per row) and every collection they point to is walked here.
    Costs one read of the strings' heap bytes. Layouts not checked (not chunked, filtered, virtual)
    give ``None``. ``checked`` (collection address -> problem or ``None``) carries the collections
    already walked from one call to the next: the columns of a cache share their collections.
    """
    if dataset.chunks is None or dataset.ndim != 1 or dataset.compression is not None or dataset.is_virtual:
        return None
    address_format = {2: "<u2", 4: "<u4", 8: "<u8"}.get(superblock.address_size)
    if address_format is None:
        return None
    layout = np.dtype([("length", "<u4"), ("address", address_format), ("index", "<u4")])
    limit = path.stat().st_size - superblock.base_address  # a running writer's file grows past its superblock's end
    chunk_rows = dataset.chunks[0]
    checked = {} if checked is None else checked
    with open(path, "rb") as handle:
        for start in range(0, rows, chunk_rows):
            _, raw = dataset.id.read_direct_chunk((start,))
            descriptors = np.frombuffer(raw, dtype=layout, count=min(len(raw) // layout.itemsize, rows - start))
            used = descriptors["length"] > 0
            outside = used & ((descriptors["length"] > limit) | (descriptors["address"] >= limit))
            inside = used & ~outside
            for address in np.unique(descriptors["address"][inside]).tolist():
                if address not in checked:
                    checked[address] = _collection_problem(handle, superblock, address, limit)
            damaged = [address for address in np.unique(descriptors["address"][inside]).tolist() if checked[address]]
            bad = outside | (inside & np.isin(descriptors["address"], damaged))
            if bad.any():
                offset = int(np.argmax(bad))
                row = start + offset
                length, address = int(descriptors["length"][offset]), int(descriptors["address"][offset])
                if outside[offset]:
                    return row, f"row {row}: a string of {length} bytes at address {address}, past the file's end"
                return row, f"row {row}: {checked[address]}"
    return None
