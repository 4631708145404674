"""The dataset downloader, against a local HTTP server serving copies of the shared files."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from workbench.tasks.bbq import load_bbq
from workbench.tasks.download import (
    MANIFEST_NAME,
    DownloadError,
    download_bbq,
    download_winogender,
    git_blob_sha1,
)
from workbench.tasks.winogender import load_winogender

DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = pytest.mark.skipif(
    not (DATA_DIR / "bbq" / "data" / "Religion.jsonl").is_file(),
    reason=f"benchmark files not found under {DATA_DIR}",
)


class _CountingHandler(SimpleHTTPRequestHandler):
    requested: list[str] = []

    def do_GET(self) -> None:
        type(self).requested.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # silence the test output
        pass


@pytest.fixture()
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A temporary copy of two BBQ files and the Winogender templates served on 127.0.0.1."""
    served = tmp_path / "served"
    (served / "bbq" / "data").mkdir(parents=True)
    (served / "winogender" / "data").mkdir(parents=True)
    for category in ("Religion", "Sexual_orientation"):
        shutil.copy(DATA_DIR / "bbq" / "data" / f"{category}.jsonl", served / "bbq" / "data")
    for name in ("templates.tsv", "all_sentences.tsv", "occupations-stats.tsv"):
        shutil.copy(DATA_DIR / "winogender" / name, served / "winogender" / "data")
    requested: list[str] = []
    handler = type("Handler", (_CountingHandler,), {"requested": requested})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served, requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_verifies_records_and_resumes(mirror, tmp_path):
    url, _served, requested = mirror
    dest = tmp_path / "bbq"
    # a leftover from an interrupted run must not survive
    (dest / "data").mkdir(parents=True)
    (dest / "data" / "Religion.jsonl.part").write_bytes(b"half a file")
    entries = download_bbq(dest, categories=["Religion", "Sexual_orientation"], base_url=f"{url}/bbq/")
    original = (DATA_DIR / "bbq" / "data" / "Religion.jsonl").read_bytes()
    assert (dest / "data" / "Religion.jsonl").read_bytes() == original
    assert not (dest / "data" / "Religion.jsonl.part").exists()
    manifest = json.loads((dest / MANIFEST_NAME).read_text(encoding="utf-8"))
    religion = next(entry for entry in manifest["files"] if entry["path"] == "data/Religion.jsonl")
    assert religion["sha256"] == hashlib.sha256(original).hexdigest()
    assert religion["bytes"] == len(original)
    assert religion["url"] == f"{url}/bbq/data/Religion.jsonl"
    assert religion["git_blob_sha1"] == "44c1940ee22f00891ab4a5526a293691957aeacb"
    assert [entry.path for entry in entries] == ["data/Religion.jsonl", "data/Sexual_orientation.jsonl"]
    assert len(requested) == 2
    assert len(load_bbq(dest, categories=["Religion"])) == 1200
    # a second run fetches nothing; a damaged file is fetched again
    download_bbq(dest, categories=["Religion", "Sexual_orientation"], base_url=f"{url}/bbq")
    assert len(requested) == 2
    (dest / "data" / "Sexual_orientation.jsonl").write_text("damaged", encoding="utf-8")
    download_bbq(dest, categories=["Religion", "Sexual_orientation"], base_url=f"{url}/bbq")
    assert requested[2:] == ["/bbq/data/Sexual_orientation.jsonl"]


def test_winogender_download_loads(mirror, tmp_path):
    url, _, _ = mirror
    download_winogender(tmp_path / "wg", base_url=f"{url}/winogender")
    assert len(load_winogender(tmp_path / "wg")) == 120


def test_http_failure_names_the_url(mirror, tmp_path):
    url, _, _ = mirror
    with pytest.raises(DownloadError, match=rf"GET {url}/bbq/data/Age.jsonl failed: HTTP 404"):
        download_bbq(tmp_path / "bbq", categories=["Age"], base_url=f"{url}/bbq")
    assert not (tmp_path / "bbq" / "data" / "Age.jsonl.part").exists()


def test_a_different_file_is_refused_unless_verify_is_off(mirror, tmp_path):
    url, served, _ = mirror
    (served / "bbq" / "data" / "Religion.jsonl").write_text('{"changed": true}\n', encoding="utf-8")
    with pytest.raises(DownloadError, match="differs from the pinned upstream 44c1940e"):
        download_bbq(tmp_path / "a", categories=["Religion"], base_url=f"{url}/bbq")
    assert not (tmp_path / "a" / "data" / "Religion.jsonl").exists()
    (entry,) = download_bbq(tmp_path / "b", categories=["Religion"], base_url=f"{url}/bbq", verify=False)
    assert entry.git_blob_sha1 == git_blob_sha1(tmp_path / "b" / "data" / "Religion.jsonl")


def test_git_blob_id_matches_git_hash_object(tmp_path):
    path = tmp_path / "hello.txt"
    path.write_bytes(b"hello\n")
    assert git_blob_sha1(path) == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object`


def test_unknown_category():
    with pytest.raises(ValueError, match=r"unknown BBQ categories \['Sports'\]"):
        download_bbq("unused", categories=["Sports"])


def test_an_intersectional_category_comes_with_its_template_file(mirror, tmp_path):
    """``Race_x_SES`` targets need ``templates/new_templates - Race_x_SES.csv`` (the space in its name
    is URL-encoded); the pinned git blob id is nyu-mll/BBQ@bea11bd's."""
    url, served, requested = mirror
    (served / "bbq" / "templates").mkdir()
    name = "new_templates - Race_x_SES.csv"
    shutil.copy(DATA_DIR / "bbq" / "templates" / name, served / "bbq" / "templates")
    (served / "bbq" / "data" / "Race_x_SES.jsonl").write_text("", encoding="utf-8")
    dest = tmp_path / "bbq"
    entries = download_bbq(dest, categories=["Race_x_SES"], base_url=f"{url}/bbq", verify=False)
    assert [entry.path for entry in entries] == ["data/Race_x_SES.jsonl", f"templates/{name}"]
    assert "/bbq/templates/new_templates%20-%20Race_x_SES.csv" in requested
    assert git_blob_sha1(dest / "templates" / name) == "cd3f1224d8d071f4aa0061672dee8ab847394db3"
