"""Fetch the standard BBQ and Winogender files for users with internet access.

Files are fetched from raw GitHub URLs pinned to the commits of ``shared/data`` (a mirror can be
given as ``base_url``; the same relative paths are appended to it) and laid out as in the
upstream repositories (``<dest>/data/<Category>.jsonl``, ``<dest>/data/templates.tsv``), which is
what :func:`~workbench.tasks.bbq.load_bbq` and :func:`~workbench.tasks.winogender.load_winogender`
read. Each file is checked against its upstream git blob id (``git hash-object``), written to
``<file>.part`` and renamed only when complete, and recorded with its SHA-256 in
``<dest>/manifest.json``. A second call skips files whose bytes still match the manifest, so an
interrupted download can simply be run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from workbench.tasks.bbq import BBQ_CATEGORIES

MANIFEST_NAME = "manifest.json"
_CHUNK_BYTES = 1 << 16


class DownloadError(RuntimeError):
    """An HTTP or network failure, or a downloaded file that is not the pinned upstream file."""


@dataclass(frozen=True)
class SourceFile:
    """One file of a dataset: its path relative to the base URL (and to the destination folder)
    and its upstream git blob id (SHA-1 of ``b"blob <size>\\0" + bytes``)."""

    path: str
    git_blob_sha1: str


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset's files live: ``<base_url>/<file.path>`` for each file."""

    name: str
    base_url: str
    files: tuple[SourceFile, ...]


@dataclass(frozen=True)
class DownloadedFile:
    """One entry of ``manifest.json``; ``bytes`` is the file size."""

    path: str
    url: str
    bytes: int
    sha256: str
    git_blob_sha1: str


BBQ_SOURCE = DatasetSource(
    name="bbq",
    base_url=("https://raw.githubusercontent.com/nyu-mll/BBQ/bea11bd97d79217245b5871acd247b9d6eb24598"),
    files=(
        *(
            SourceFile(f"data/{category}.jsonl", blob)
            for category, blob in (
                ("Age", "5c5e7586163b869fe029e77e63716f2026e4ae08"),
                ("Disability_status", "9aedeccaf599299cdfa523531d625ae85ecb9131"),
                ("Gender_identity", "dc79ceaaa9e7126edc99a200d632899c50274b16"),
                ("Nationality", "cba9b63d34536cb51a6cbae76b189df3d2a945c0"),
                ("Physical_appearance", "8cbdf83265459083224e3a2d37809294ff12ad77"),
                ("Race_ethnicity", "68daf3d692b27a10596772b3b15742b26f0b110e"),
                ("Race_x_SES", "905cd8a5b8734e2063fe524e69a38f0a71c75907"),
                ("Race_x_gender", "dd09a905b284690445d36259d675243950fa0bd7"),
                ("Religion", "44c1940ee22f00891ab4a5526a293691957aeacb"),
                ("SES", "78d11ffbdb70f501617345e5c697d00045d57c29"),
                ("Sexual_orientation", "a06351f4dd67ba30632396eeb0c3677c67b7d387"),
            )
        ),
        # the intersectional categories' bias targets need their templates (workbench.tasks.bbq_targets)
        SourceFile("templates/new_templates - Race_x_SES.csv", "cd3f1224d8d071f4aa0061672dee8ab847394db3"),
        SourceFile("templates/new_templates - Race_x_gender.csv", "07f9d7333c91fcf7b0913fb8e16e505717799d2f"),
    ),
)
WINOGENDER_SOURCE = DatasetSource(
    name="winogender",
    base_url=("https://raw.githubusercontent.com/rudinger/winogender-schemas/1c7f8b481ad8a234b41e9f76a424d6e856e13f7f"),
    files=(
        SourceFile("data/templates.tsv", "e3424d7ea7af6f15f6d8cada2dfa9f153c2c2cac"),
        SourceFile("data/all_sentences.tsv", "7cbb74bbefc0c2cf3ba199d9ca96b861073be624"),
        SourceFile("data/occupations-stats.tsv", "f5ce6f35b10df1c3e28f4d05dccdc247a871acd7"),
    ),
)


def download_bbq(
    dest: str | Path,
    categories: Iterable[str] | None = None,
    base_url: str | None = None,
    timeout_s: float = 60.0,
    verify: bool = True,
) -> list[DownloadedFile]:
    """Fetch ``data/<Category>.jsonl`` for ``categories`` (default: all 11) into ``dest``, with
    ``templates/new_templates - <Category>.csv`` for the intersectional ones (their targets need it)."""
    wanted = BBQ_CATEGORIES if categories is None else tuple(categories)
    unknown = sorted(set(wanted) - set(BBQ_CATEGORIES))
    if unknown:
        raise ValueError(f"unknown BBQ categories {unknown}; valid: {', '.join(BBQ_CATEGORIES)}")
    files = tuple(file for file in BBQ_SOURCE.files if Path(file.path).stem.removeprefix("new_templates - ") in wanted)
    source = DatasetSource(BBQ_SOURCE.name, BBQ_SOURCE.base_url, files)
    return download_dataset(source, dest, base_url, timeout_s, verify)


def download_winogender(
    dest: str | Path, base_url: str | None = None, timeout_s: float = 60.0, verify: bool = True
) -> list[DownloadedFile]:
    """Fetch ``data/{templates,all_sentences,occupations-stats}.tsv`` into ``dest``."""
    return download_dataset(WINOGENDER_SOURCE, dest, base_url, timeout_s, verify)


def download_dataset(
    source: DatasetSource,
    dest: str | Path,
    base_url: str | None = None,
    timeout_s: float = 60.0,
    verify: bool = True,
) -> list[DownloadedFile]:
    """Fetch every file of ``source`` into ``dest`` and record it in ``dest/manifest.json``.

    Args:
        source: the files and their default base URL.
        dest: destination folder (created if needed).
        base_url: replaces ``source.base_url`` (e.g. a mirror or a local server).
        timeout_s: socket timeout per request, seconds.
        verify: refuse (and delete) a file whose git blob id differs from the pinned upstream one.

    Returns:
        The manifest entries of ``source.files``, in order (skipped files included).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root_url = (base_url or source.base_url).rstrip("/")
    manifest = read_manifest(dest)
    entries: list[DownloadedFile] = []
    for file in source.files:
        target = dest / file.path
        recorded = manifest.get(file.path)
        if recorded is not None and target.is_file() and _sha256(target) == recorded.sha256:
            entries.append(recorded)
            continue
        entry = _fetch(f"{root_url}/{urllib.parse.quote(file.path)}", target, file, timeout_s, verify)
        manifest[file.path] = entry
        _write_manifest(dest, manifest)
        entries.append(entry)
    return entries


def read_manifest(dest: str | Path) -> dict[str, DownloadedFile]:
    """The entries of ``dest/manifest.json`` by relative path; empty if there is none yet."""
    path = Path(dest) / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {entry["path"]: DownloadedFile(**entry) for entry in data["files"]}
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DownloadError(f"{path}: unreadable manifest ({error}); delete it to download afresh") from None


def git_blob_sha1(path: Path) -> str:
    """The id ``git hash-object`` gives a file: SHA-1 of ``b"blob <size>\\0"`` + its bytes."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, target: Path, file: SourceFile, timeout_s: float, verify: bool) -> DownloadedFile:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    sha256 = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, partial.open("wb") as out:
            for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                out.write(chunk)
                sha256.update(chunk)
                size += len(chunk)
    except urllib.error.HTTPError as error:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"GET {url} failed: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", error)
        raise DownloadError(f"GET {url} failed: {reason} (check the URL or your connection)") from None
    blob = git_blob_sha1(partial)
    if verify and blob != file.git_blob_sha1:
        partial.unlink()
        raise DownloadError(
            f"GET {url}: git blob id {blob} differs from the pinned upstream {file.git_blob_sha1} "
            "(another version of the file?); pass verify=False to accept it"
        )
    os.replace(partial, target)
    return DownloadedFile(file.path, url, size, sha256.hexdigest(), blob)


def _write_manifest(dest: Path, manifest: dict[str, DownloadedFile]) -> None:
    data = {
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": [asdict(entry) for entry in manifest.values()],
    }
    partial = dest / (MANIFEST_NAME + ".part")
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, dest / MANIFEST_NAME)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
