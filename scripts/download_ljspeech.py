"""Fetch LJSpeech-1.1 once: a resumable, checksummed download and a safe unpack.

scripts/prepare_ljspeech.py --download calls fetch_ljspeech; nothing here reads the corpus.
"""
import hashlib
import http.client
import os
import re
import shutil
import tarfile
import urllib.request

from tqdm import tqdm

LJSPEECH_URL = "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2"
# The published sha256 of LJSpeech-1.1.tar.bz2, taken as given: it could not be re-derived
# here (no route to the archive). A mismatch stops the run before anything is unpacked.
LJSPEECH_SHA256 = "be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5"


class DownloadError(Exception):
    """The archive could not be fetched or unpacked safely: printed as one line, exit code 2."""


def download(url: str, dest: str, sha256: str) -> str:
    """Fetch url to dest through dest.part, asking only for the bytes it lacks (HTTP Range),
    so a rerun resumes a cut transfer. dest appears only once its sha256 is right."""
    if os.path.exists(dest):
        return dest
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part, total, cut = dest + ".part", None, None
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            have = have if response.status == 206 else 0  # a server ignoring Range: start over
            length = response.headers.get("Content-Length")
            total = have + int(length) if length else None
            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc="download")
            with open(part, "ab" if have else "wb") as f, bar:
                while chunk := response.read(1 << 20):
                    bar.update(f.write(chunk))
    except urllib.request.HTTPError as exc:
        if exc.code != 416 or not have:  # 416 after a full .part: no bytes left to send
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        cut = exc
    held = os.path.getsize(part) if os.path.exists(part) else 0
    if cut or (total and held < total):
        raise DownloadError(f"download of {url} cut off at byte {held} ({cut or 'early end'});"
                            f" rerun to resume into {part}")
    with open(part, "rb") as f:
        got = hashlib.file_digest(f, "sha256").hexdigest()
    if got != sha256.lower():
        os.remove(part)  # a corrupt prefix would poison every later resume
        raise DownloadError(f"{url}: sha256 mismatch (got {got}, expected {sha256}); "
                            f"deleted {part}, rerun to download again")
    os.replace(part, dest)
    return dest


def unsafe(member: tarfile.TarInfo) -> str | None:
    """Why unpacking this archive member could write outside the destination; None if safe."""
    if re.match(r"[/\\]|[A-Za-z]:", member.name):
        return "an absolute path"
    if ".." in re.split(r"[/\\]", member.name):
        return "'..' in its path"
    if member.issym() or member.islnk():
        return "a link"
    if not (member.isfile() or member.isdir()):
        return "a device or special file"
    return None


def extract(archive: str, dest: str) -> None:
    """Unpack a tar into dest via a temp dir, refusing any member that could escape it."""
    tmp = f"{dest}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # a second guard
    try:
        with tarfile.open(archive, "r|*") as tar:  # a stream: one pass over 2.6 GB of bz2
            for member in tar:
                problem = unsafe(member)
                if problem:
                    raise DownloadError(f"{archive}: refusing member {member.name!r}: {problem}")
                tar.extract(member, tmp, **safe)
        os.rename(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_ljspeech(cache_dir: str, url: str = LJSPEECH_URL, sha256: str = LJSPEECH_SHA256) -> str:
    """Download and unpack once into cache_dir; return the corpus directory."""
    unpacked = os.path.join(cache_dir, "unpacked")
    if not os.path.isdir(unpacked):
        extract(download(url, os.path.join(cache_dir, os.path.basename(url)), sha256), unpacked)
    return os.path.join(unpacked, "LJSpeech-1.1")  # the archive's one top-level directory
