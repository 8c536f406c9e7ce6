"""fetch_imdb against a local HTTP server: caching, resume, verification, hostile archives.

Nothing here touches the internet; the server runs on 127.0.0.1 in a background thread and
serves a small archive shaped like aclImdb_v1.tar.gz.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import socket
import struct
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sentiment_mlops.datasets import IMDB_ARCHIVE, DatasetError, fetch_imdb

ARCHIVE_PATH = "/aclImdb_v1.tar.gz"
EVIL_TEXT = "EVIL PAYLOAD"

# (split, folder) -> {file stem: content}. Ids are chosen so that string order differs from
# numeric order, and the texts need quoting, stripping and UTF-8.
REVIEWS = {
    ("train", "neg"): {
        "10_1": "Ten is the worst.",
        "2_3": '  Two, "quoted"\nand multi-line.  \n',
        "7_4": "Seven: café ☕",
    },
    ("train", "pos"): {"3_9": "Three was good.", "1_10": "\tOne was great!\n"},
    ("test", "neg"): {"0_2": "Zero, bad."},
    ("test", "pos"): {"12_7": "Twelve is fine.", "5_8": "Five is fine too."},
}
EXPECTED = {
    "train": [
        ['Two, "quoted"\nand multi-line.', "negative"],
        ["Seven: café ☕", "negative"],
        ["Ten is the worst.", "negative"],
        ["One was great!", "positive"],
        ["Three was good.", "positive"],
    ],
    "test": [
        ["Zero, bad.", "negative"],
        ["Five is fine too.", "positive"],
        ["Twelve is fine.", "positive"],
    ],
}


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def build_archive(path: Path, evil_dir: Path) -> bytes:
    """An aclImdb-shaped tar.gz, members out of order, plus entries that must be ignored."""
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "aclImdb", type=tarfile.DIRTYPE)
        _add(tar, "aclImdb/README", b"Large Movie Review Dataset v1.0\n")
        _add(tar, "aclImdb/imdb.vocab", b"the\nand\n")
        _add(tar, "aclImdb/train/urls_pos.txt", b"http://www.imdb.com/title/tt0000001/\n")
        _add(tar, "aclImdb/train/unsup/0_0.txt", b"Unlabelled review.")
        _add(tar, "../evil.txt", EVIL_TEXT.encode())
        _add(tar, str(evil_dir / "abs_evil.txt"), EVIL_TEXT.encode())
        _add(tar, "aclImdb/train/pos/../../../evil_dots.txt", EVIL_TEXT.encode())
        _add(tar, "aclImdb/train/pos/99_10.txt", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        _add(tar, "aclImdb/test/neg/98_1.txt", type=tarfile.LNKTYPE, linkname="../evil.txt")
        for (split, folder), files in reversed(REVIEWS.items()):
            _add(tar, f"aclImdb/{split}/{folder}", type=tarfile.DIRTYPE)
            for stem, text in files.items():
                _add(tar, f"aclImdb/{split}/{folder}/{stem}.txt", text.encode("utf-8"))
    return path.read_bytes()


@dataclass
class Seen:
    range: str | None
    status: int


class ArchiveServer(ThreadingHTTPServer):
    """Serves one payload; can ignore Range, and can cut the first response short."""

    payload: bytes = b""
    honour_range: bool = True
    cut_after: int | None = None
    cut_mode: str = "close"

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[Seen] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{ARCHIVE_PATH}"


class _Handler(BaseHTTPRequestHandler):
    server: ArchiveServer

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        srv = self.server
        requested = self.headers.get("Range")
        if self.path != ARCHIVE_PATH:
            srv.requests.append(Seen(requested, 404))
            self.send_error(404)
            return
        data = srv.payload
        match = re.fullmatch(r"bytes=(\d+)-", requested or "")
        start = int(match[1]) if match and srv.honour_range else 0
        status = 206 if match and srv.honour_range else 200
        srv.requests.append(Seen(requested, status))
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if srv.cut_after is None or len(srv.requests) > 1:
            self.wfile.write(body)
            return
        self.wfile.write(body[: srv.cut_after])
        self.wfile.flush()
        if srv.cut_mode == "reset":
            # SO_LINGER 0 makes the close abortive: the client sees ECONNRESET, not EOF.
            linger = struct.pack("ii", 1, 0)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            self.connection.close()
        self.close_connection = True


@pytest.fixture
def archive(tmp_path: Path) -> tuple[bytes, str]:
    served = tmp_path / "served"
    served.mkdir()
    payload = build_archive(served / IMDB_ARCHIVE, tmp_path)
    return payload, hashlib.sha256(payload).hexdigest()


@pytest.fixture
def serve(archive: tuple[bytes, str]) -> Iterator[Callable[..., ArchiveServer]]:
    servers: list[tuple[ArchiveServer, threading.Thread]] = []

    def start(**options: object) -> ArchiveServer:
        server = ArchiveServer()
        server.payload = archive[0]
        for key, value in options.items():
            setattr(server, key, value)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def assert_expected_csvs(directory: Path) -> None:
    for split, rows in EXPECTED.items():
        path = directory / f"{split}.csv"
        assert read_csv(path) == [["text", "label"], *rows]
        raw = path.read_bytes()
        assert raw.startswith(b"text,label\n")
        assert b"\r\n" not in raw
        assert EVIL_TEXT.encode() not in raw
        assert b"root:" not in raw
    assert not list(directory.glob("*.tmp"))


def test_fetch_writes_sorted_labelled_csvs(
    tmp_path: Path, archive: tuple[bytes, str], serve: Callable[..., ArchiveServer]
) -> None:
    server = serve()
    out = fetch_imdb(tmp_path / "cache", url=server.url, sha256=archive[1], progress=True)

    assert out == tmp_path / "cache" / "imdb"
    assert_expected_csvs(out)
    assert (out / IMDB_ARCHIVE).read_bytes() == archive[0]
    assert not (out / f"{IMDB_ARCHIVE}.part").exists()
    assert server.requests == [Seen(None, 200)]


def test_second_fetch_makes_no_request(
    tmp_path: Path, archive: tuple[bytes, str], serve: Callable[..., ArchiveServer]
) -> None:
    server = serve()
    first = fetch_imdb(tmp_path, url=server.url, sha256=archive[1], progress=False)
    before = {p.name: p.read_bytes() for p in first.iterdir()}

    second = fetch_imdb(tmp_path, url=server.url, sha256=archive[1], progress=False)

    assert second == first
    assert len(server.requests) == 1
    assert {p.name: p.read_bytes() for p in second.iterdir()} == before


def test_verified_archive_is_converted_without_downloading(
    tmp_path: Path, archive: tuple[bytes, str], serve: Callable[..., ArchiveServer]
) -> None:
    server = serve()
    out = fetch_imdb(tmp_path, url=server.url, sha256=archive[1], progress=False)
    (out / "train.csv").unlink()
    (out / ".complete").unlink()

    fetch_imdb(tmp_path, url=server.url, sha256=archive[1], progress=False)

    assert len(server.requests) == 1
    assert_expected_csvs(out)


def test_csvs_without_marker_are_not_trusted(
    tmp_path: Path, archive: tuple[bytes, str], serve: Callable[..., ArchiveServer]
) -> None:
    out = tmp_path / "imdb"
    out.mkdir()
    (out / "train.csv").write_text("text,label\nhalf a", encoding="utf-8")
    (out / "test.csv").write_text("text,label\n", encoding="utf-8")

    fetch_imdb(tmp_path, url=serve().url, sha256=archive[1], progress=False)

    assert_expected_csvs(out)


def test_complete_part_file_is_used_without_downloading(
    tmp_path: Path, archive: tuple[bytes, str], serve: Callable[..., ArchiveServer]
) -> None:
    server = serve()
    (tmp_path / "imdb").mkdir()
    (tmp_path / "imdb" / f"{IMDB_ARCHIVE}.part").write_bytes(archive[0])

    out = fetch_imdb(tmp_path, url=server.url, sha256=archive[1], progress=False)

    assert server.requests == []
    assert_expected_csvs(out)


@pytest.mark.parametrize("cut_mode", ["close", "reset"])
def test_interrupted_download_is_kept_and_resumed(
    tmp_path: Path,
    archive: tuple[bytes, str],
    serve: Callable[..., ArchiveServer],
    cut_mode: str,
) -> None:
    cut = len(archive[0]) // 2
    server = serve(cut_after=cut, cut_mode=cut_mode)
    part = tmp_path / "imdb" / f"{IMDB_ARCHIVE}.part"

    with pytest.raises(DatasetError) as error:
        fetch_imdb(tmp_path, url=server.url, sha256=archive[1], progress=False)

    message = str(error.value)
    assert server.url in message
    assert "kept" in message and "resume" in message
    assert "\n" not in message
    assert part.read_bytes() == archive[0][:cut]
    assert not (tmp_path / "imdb" / IMDB_ARCHIVE).exists()

    out = fetch_imdb(tmp_path, url=server.url, sha256=archive[1], progress=False)

    assert server.requests[1] == Seen(f"bytes={cut}-", 206)
    assert len(server.requests) == 2
    assert (out / IMDB_ARCHIVE).read_bytes() == archive[0]
    assert not part.exists()
    assert_expected_csvs(out)


def test_server_ignoring_range_restarts_from_zero(
    tmp_path: Path, archive: tuple[bytes, str], serve: Callable[..., ArchiveServer]
) -> None:
    cut = len(archive[0]) // 3
    server = serve(cut_after=cut, honour_range=False)
    with pytest.raises(DatasetError):
        fetch_imdb(tmp_path, url=server.url, sha256=archive[1], progress=False)

    out = fetch_imdb(tmp_path, url=server.url, sha256=archive[1], progress=False)

    assert server.requests[1] == Seen(f"bytes={cut}-", 200)
    assert (out / IMDB_ARCHIVE).read_bytes() == archive[0]
    assert_expected_csvs(out)


def test_wrong_checksum_deletes_download(
    tmp_path: Path, archive: tuple[bytes, str], serve: Callable[..., ArchiveServer]
) -> None:
    server = serve()
    wrong = "0" * 64

    with pytest.raises(DatasetError) as error:
        fetch_imdb(tmp_path, url=server.url, sha256=wrong, progress=False)

    message = str(error.value)
    assert wrong in message and archive[1] in message and server.url in message
    assert sorted(p.name for p in (tmp_path / "imdb").iterdir()) == []


def test_corrupt_partial_download_is_discarded_then_refetched(
    tmp_path: Path, archive: tuple[bytes, str], serve: Callable[..., ArchiveServer]
) -> None:
    server = serve()
    part = tmp_path / "imdb" / f"{IMDB_ARCHIVE}.part"
    part.parent.mkdir()
    part.write_bytes(b"not the start of the archive")

    with pytest.raises(DatasetError, match="Checksum mismatch"):
        fetch_imdb(tmp_path, url=server.url, sha256=archive[1], progress=False)
    assert not part.exists()

    out = fetch_imdb(tmp_path, url=server.url, sha256=archive[1], progress=False)

    assert server.requests[0].range == "bytes=28-"
    assert server.requests[1] == Seen(None, 200)
    assert_expected_csvs(out)


def test_http_404_raises_dataset_error(
    tmp_path: Path, archive: tuple[bytes, str], serve: Callable[..., ArchiveServer]
) -> None:
    url = serve().url.replace(ARCHIVE_PATH, "/missing.tar.gz")

    with pytest.raises(DatasetError) as error:
        fetch_imdb(tmp_path, url=url, sha256=archive[1], progress=False)

    assert url in str(error.value) and "404" in str(error.value)
    assert not (tmp_path / "imdb" / f"{IMDB_ARCHIVE}.part").exists()


def test_unreachable_server_raises_dataset_error(
    tmp_path: Path, archive: tuple[bytes, str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}{ARCHIVE_PATH}"

    with pytest.raises(DatasetError, match=re.escape(url)):
        fetch_imdb(tmp_path, url=url, sha256=archive[1], progress=False)


def test_hostile_member_paths_are_never_written(
    tmp_path: Path,
    archive: tuple[bytes, str],
    serve: Callable[..., ArchiveServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workdir = tmp_path / "work" / "deep"
    workdir.mkdir(parents=True)
    monkeypatch.chdir(workdir)
    cache_dir = workdir / "cache"

    fetch_imdb(cache_dir, url=serve().url, sha256=archive[1], progress=False)

    assert list(tmp_path.rglob("*evil*")) == []
    written = sorted(str(p.relative_to(cache_dir)) for p in cache_dir.rglob("*"))
    assert written == [
        "imdb",
        "imdb/.complete",
        f"imdb/{IMDB_ARCHIVE}",
        "imdb/test.csv",
        "imdb/train.csv",
    ]
    assert_expected_csvs(cache_dir / "imdb")
