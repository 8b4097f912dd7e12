"""Built-in offline dataset ``builtin/movie-sentiment``: 10,568 labelled movie-review sentences.

Source: the 10,605 Rotten Tomatoes review sentences (the sentences SST is built from) with mean
human sentiment ratings in [-4, 4], collected by C.J. Hutto and E. Gilbert, "VADER: A
Parsimonious Rule-based Model for Sentiment Analysis of Social Media Text", ICWSM 2014. They ship
as ``hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt`` inside
``additional_resources/hutto_ICWSM_2014.tar.gz`` of the **sdist** of ``vaderSentiment==3.3.2``
on PyPI (MIT licence, Copyright (c) 2016 C.J. Hutto). Cite Hutto & Gilbert (2014) when you
report results on it.

Getting it: on first use, ``python -m pip download --no-deps --no-binary :all:
vaderSentiment==3.3.2`` into a temporary folder (a message says so), the sdist's sha256 and the
extracted text file's sha256 are checked against the values pinned here, and a processed JSON
lines file is cached (atomically) under ``$IDCOMPRESS_CACHE`` or ``~/.cache/idcompress``.
Offline, point ``IDCOMPRESS_MOVIE_SENTIMENT_FILE`` (or ``source_file=``) at an extracted
``movieReviewSnippets_GroundTruth.txt``; it is checked against the same pinned sha256.

Processing: the file is UTF-8 with CRLF line ends, lines ``id<TAB>mean score<TAB>sentence``.
Label 1 ("positive") if the mean score > 0, 0 ("negative") if < 0; the 37 sentences scored
exactly 0 are dropped. The split is a fixed function of the sentence id: the first 8 bytes of
``blake2b("movie-sentiment/<id>")`` as a big-endian integer, modulo 10: 0-7 train, 8
validation, 9 test — 8,451 / 1,080 / 1,037 sentences (4,205 / 531 / 506 positive).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import datasets

from ..fileio import atomic_write_text

logger = logging.getLogger(__name__)

SDIST_REQUIREMENT = "vaderSentiment==3.3.2"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
OUTER_MEMBER = "additional_resources/hutto_ICWSM_2014.tar.gz"
INNER_MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
TEXT_SHA256 = "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"
SOURCE_ENV = "IDCOMPRESS_MOVIE_SENTIMENT_FILE"
CACHE_ENV = "IDCOMPRESS_CACHE"
LABEL_NAMES = ("negative", "positive")
SPLITS = ("train", "validation", "test")
_PROCESSING_VERSION = 1


def cache_root() -> Path:
    """``$IDCOMPRESS_CACHE`` or ``~/.cache/idcompress``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "idcompress"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_sha256(data: bytes, expected: str, what: str) -> None:
    """``ValueError`` naming ``what`` and both digests unless ``sha256(data) == expected``."""
    got = sha256_bytes(data)
    if got != expected.lower():
        raise ValueError(f"{what}: sha256 {got} does not match the pinned {expected}; "
                         "refusing to use it")


def download_sdist(dest: Path) -> Path:
    """``pip download`` the vaderSentiment sdist into ``dest``; return the archive path.

    Under ``idcompress --offline`` (``IDCOMPRESS_OFFLINE=1``) nothing is downloaded. (Not under
    ``HF_HUB_OFFLINE`` alone: that one is about the Hugging Face Hub, and pip fetches from PyPI.)
    """
    from ..errors import UserError

    if os.environ.get("IDCOMPRESS_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        raise type("OfflineError", (UserError, RuntimeError), {})(
            f"builtin/movie-sentiment is not cached yet and the run is offline (--offline): run "
            f"once online, or set {SOURCE_ENV} to an extracted {INNER_MEMBER.split('/')[-1]}")
    print(f"idcompress: downloading the movie-review sentences for builtin/movie-sentiment: "
          f"the sdist of {SDIST_REQUIREMENT} (2.5 MB, MIT, Hutto & Gilbert 2014) with pip …",
          file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", SDIST_REQUIREMENT, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    archives = sorted(dest.glob("*.tar.gz"))
    if proc.returncode != 0 or len(archives) != 1:
        tail = (proc.stderr or proc.stdout).strip()[-800:]
        raise RuntimeError(
            f"could not download {SDIST_REQUIREMENT} with `{' '.join(cmd)}` "
            f"(exit {proc.returncode}): {tail}\nOffline, set {SOURCE_ENV} to an extracted "
            f"{INNER_MEMBER.split('/')[-1]}"
        )
    return archives[0]


def extract_ground_truth(sdist: Path, expected_sha256: str | None = None) -> bytes:
    """Verify the sdist (against ``expected_sha256``, default the pinned ``SDIST_SHA256``) and
    return the bytes of ``movieReviewSnippets_GroundTruth.txt``.

    Reads members in memory; nothing from the archive is written to disk.
    """
    data = Path(sdist).read_bytes()
    verify_sha256(data, expected_sha256 or SDIST_SHA256, f"sdist {str(sdist)!r}")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as outer:
        member = next((m for m in outer.getmembers()
                       if m.isfile() and m.name.endswith("/" + OUTER_MEMBER)), None)
        if member is None:
            raise ValueError(f"sdist {str(sdist)!r} has no {OUTER_MEMBER}")
        inner_bytes = outer.extractfile(member).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        try:
            return inner.extractfile(INNER_MEMBER).read()
        except KeyError:
            raise ValueError(f"{OUTER_MEMBER} in {str(sdist)!r} has no {INNER_MEMBER}") from None


def split_of(sentence_id: int) -> str:
    """Fixed split of a sentence id: blake2b bucket mod 10 → train (0-7) / validation / test."""
    digest = hashlib.blake2b(f"movie-sentiment/{sentence_id}".encode(), digest_size=8).digest()
    bucket = int.from_bytes(digest, "big") % 10
    return "train" if bucket < 8 else ("validation" if bucket == 8 else "test")


def parse_ground_truth(data: bytes, where: str = "ground-truth file") -> list[dict]:
    """Parse ``id<TAB>score<TAB>sentence`` lines into labelled records; zero scores dropped.

    Each record: ``id`` (int), ``sentence`` (str), ``score`` (float), ``label`` (0/1),
    ``split``.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not UTF-8 text (byte {e.start})") from None
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        try:
            sid, score = int(parts[0]), float(parts[1])
            sentence = parts[2].strip()
        except (ValueError, IndexError):
            raise ValueError(f"{where}: line {lineno} is not 'id<TAB>score<TAB>sentence': "
                             f"{line[:80]!r}") from None
        if score == 0:
            continue
        records.append({"id": sid, "sentence": sentence, "score": score,
                        "label": int(score > 0), "split": split_of(sid)})
    if not records:
        raise ValueError(f"{where}: no labelled sentences")
    return records


def _write_atomic(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(lines))


def _read_cache(path: Path) -> list[dict] | None:
    try:
        with open(path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        if records and all({"id", "sentence", "score", "label", "split"} <= r.keys()
                           for r in records):
            return records
    except (OSError, ValueError):
        pass
    logger.warning("ignoring unreadable cache file %s; rebuilding it", path)
    return None


def movie_sentiment_records(
    source_file: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    expected_sha256: str | None = TEXT_SHA256,
) -> list[dict]:
    """All labelled sentences as records (see :func:`parse_ground_truth`), cached.

    ``source_file`` (else ``$IDCOMPRESS_MOVIE_SENTIMENT_FILE``, else a pip download) is the
    extracted text file; it must match ``expected_sha256`` (``None`` skips the check: only for
    your own variants of the file). The cache is keyed by that digest.
    """
    source = source_file if source_file is not None else os.environ.get(SOURCE_ENV) or None
    data: bytes | None = None
    if expected_sha256 is None:
        if source is None:
            raise ValueError("expected_sha256=None needs a source_file")
        data = _read_source(Path(source))
        key = sha256_bytes(data)
    else:
        key = expected_sha256.lower()
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    cache = root / "movie-sentiment" / f"v{_PROCESSING_VERSION}-{key[:16]}.jsonl"
    if cache.exists():
        records = _read_cache(cache)
        if records is not None:
            return records
    if data is None:
        if source is not None:
            data = _read_source(Path(source))
            verify_sha256(data, key, f"movie-sentiment source file {str(source)!r}")
        else:
            with tempfile.TemporaryDirectory(prefix="idcompress-vader-") as tmp:
                data = extract_ground_truth(download_sdist(Path(tmp)))
            verify_sha256(data, key, f"{INNER_MEMBER} from {SDIST_REQUIREMENT}")
    records = parse_ground_truth(data, str(source) if source else INNER_MEMBER)
    _write_atomic(cache, [json.dumps(r, ensure_ascii=False) + "\n" for r in records])
    logger.info("cached %d movie-sentiment sentences in %s", len(records), cache)
    return records


def _read_source(path: Path) -> bytes:
    if not path.is_file():
        raise ValueError(f"movie-sentiment source file {str(path)!r} does not exist "
                         f"(set by source_file or ${SOURCE_ENV})")
    return path.read_bytes()


def load_movie_sentiment(
    source_file: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    expected_sha256: str | None = TEXT_SHA256,
) -> datasets.DatasetDict:
    """The dataset as a ``DatasetDict`` (train/validation/test) with columns ``id``,
    ``sentence``, ``score`` (mean rating in [-4, 4]) and ``label`` (negative/positive)."""
    records = movie_sentiment_records(source_file, cache_dir, expected_sha256)
    features = datasets.Features({
        "id": datasets.Value("int64"),
        "sentence": datasets.Value("string"),
        "score": datasets.Value("float32"),
        "label": datasets.ClassLabel(names=list(LABEL_NAMES)),
    })
    out = {}
    for split in SPLITS:
        rows = [r for r in records if r["split"] == split]
        out[split] = datasets.Dataset.from_dict(
            {k: [r[k] for r in rows] for k in features}, features=features)
    return datasets.DatasetDict(out)
