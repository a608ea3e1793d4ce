"""Intake of submissions: folders and zips in, one staging folder of lesson files out.

Only lesson files are taken, and only as regular files that belong to the submission:

* from a folder, ``lessons/NN_slug.py`` (or ``NN_slug.py`` beside it), opened without
  following symbolic links at any step (``O_NOFOLLOW`` relative to the already opened
  folder, so nothing can be swapped in between the check and the read). A symlinked
  submission folder, ``lessons/`` folder or lesson file is refused and flagged; so is a
  lesson file with more than one name (a hard link: the same inode may be a file outside
  the submission, the reference solution for instance), and anything that is not a regular
  file (a named pipe would block the read);
* from a zip, the members with a lesson file's name (``lessons/`` preferred), read one by
  one with a size cap; nothing is ever extracted. A zip that is encrypted, corrupt or
  truncated, a zip bomb (too many members, too large a declared size or central
  directory), or one whose member names are absolute, climb out with ``..``, are not valid
  UTF-8 or are too long for a file system, is refused as a whole.

Whatever is refused becomes a note (and a flag where it hides a file from elsewhere) on that
submission, which then scores zero for what could not be read; intake never raises, so one
malformed submission cannot stop a batch. Names: each submission keeps its original folder
or zip name for the reports (escaped, :func:`~.text.escape_name`: a name that is not UTF-8 or
holds control characters stays readable and harmless) and gets a unique, short, ASCII
``name`` for its staging folder and report files, assigned over the whole class in a fixed
order (:func:`plan`), so every shard of a class names every submission the same way.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import struct
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from recsys_course.tooling.catalog import Catalog
from recsys_course.tooling.grading.text import clean, escape_name

MAX_LESSON_BYTES = 2 * 1024 * 1024  # a lesson file is a few dozen KB; refuse anything huge
MAX_ZIP_MEMBERS = 10_000  # a clone of the course holds a few hundred files
MAX_ZIP_DIRECTORY = 4 * 1024 * 1024  # bytes of central directory parsed (bounds memory)
MAX_ZIP_TOTAL = 1024 ** 3  # declared uncompressed bytes of all members together
MAX_NAME_BYTES = 255  # one path component (Linux, macOS and Windows file systems)
MAX_PATH_BYTES = 4096  # a whole path (Linux PATH_MAX)
MAX_SAFE_NAME = 64  # characters of a staging or report file name, before "-2" and ".md"
WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
ZIP_HELP = "zip only your lessons/ folder, without a password, with a standard tool (zip -r lessons.zip lessons)"


class Refused(Exception):
    """The whole submission cannot be taken in; the message says why and how to fix it."""


@dataclass
class Submission:
    name: str  # unique, ASCII: staging folder, feedback and JUnit file names
    source: Path
    folder: Path  # staging folder: lessons/ holds the copied lesson files
    found: dict[str, str] = field(default_factory=dict)  # lesson filename -> where it came from
    problems: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # provenance, for instructors only
    display: str = ""  # the original name, escaped (see ``label``)

    @property
    def lessons_dir(self) -> Path:
        return self.folder / "lessons"

    @property
    def label(self) -> str:
        """The original folder or zip name, as the instructor knows it (Unicode kept; bytes
        that are not UTF-8 and control characters escaped as ``\\xNN``)."""
        return self.display or escape_name(self.source.name or str(self.source))


def safe_name(text: str) -> str:
    """A short ASCII name for files: letters, digits, ``.``, ``_`` and ``-``, at most
    :data:`MAX_SAFE_NAME` characters, never a name Windows reserves (``CON``, ``NUL``...)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text).strip("._-")[:MAX_SAFE_NAME].strip("._-")
    if name.split(".")[0].upper() in WINDOWS_RESERVED:
        name = f"submission-{name}"
    return name or "submission"


def expand(paths: list[Path], catalog: Catalog) -> list[Path]:
    """Each path is a submission, unless it is a folder holding no lesson files itself, in
    which case every entry inside it is one (a class folder), hidden entries (``.name``)
    excepted. Entries are sorted by name, so the order does not depend on the file system."""
    names = {l.filename for l in catalog.lessons}
    found: list[Path] = []
    for path in paths:
        is_class = path.is_dir() and not any(
            os.path.lexists(path / n) or os.path.lexists(path / "lessons" / n) for n in names
        )
        if is_class:
            try:
                entries = sorted(path.iterdir(), key=lambda p: os.fsencode(p.name))
            except OSError:
                found.append(path)  # staged like a submission, which notes what went wrong
                continue
            found += [p for p in entries if not p.name.startswith(".")]
        else:
            found.append(path)
    return found


def plan(paths: list[Path], catalog: Catalog) -> list[tuple[Path, str]]:
    """Every submission of ``paths`` with its unique staging name, in a fixed order: the same
    command gives the same names on every machine (duplicates get ``-2``, ``-3``...,
    compared without case so that no two report files differ by case only)."""
    taken: set[str] = set()
    planned = []
    for source in expand(paths, catalog):
        base = safe_name(source.stem if source.suffix.lower() == ".zip" else source.name)
        name, n = base, 2
        while name.lower() in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name.lower())
        planned.append((source, name))
    return planned


def stage_all(paths: list[Path], staging: Path, catalog: Catalog) -> list[Submission]:
    """:func:`stage` every submission of :func:`plan`."""
    return [stage(source, staging, catalog, name) for source, name in plan(paths, catalog)]


def stage(source: Path, staging: Path, catalog: Catalog, name: str) -> Submission:
    """Copy a submission's lesson files (and nothing else) into ``staging / name``. Never
    raises for anything about the submission: what could not be taken is a note."""
    sub = Submission(name, source, staging / name, display=escape_name(source.name or str(source)))
    sub.lessons_dir.mkdir(parents=True)
    wanted = {l.filename for l in catalog.lessons}
    try:
        _take(sub, source, wanted)
    except Refused as refusal:
        _discard(sub)
        sub.problems.append(str(refusal))
    except Exception as error:  # intake of one submission never stops the batch
        _discard(sub)
        sub.problems.append(f"{sub.label} could not be read ({type(error).__name__}: {clean(error, 300)})")
    if not sub.found and not sub.problems:
        sub.problems.append("no lesson files found (expected lessons/NN_*.py)")
    return sub


def _take(sub: Submission, source: Path, wanted: set[str]) -> None:
    try:
        info = os.lstat(source)
    except FileNotFoundError:
        raise Refused(f"{sub.label} does not exist") from None
    if stat.S_ISLNK(info.st_mode):
        sub.flags.append("the submission is a symlink to somewhere else (not followed)")
        raise Refused(f"{sub.label} is a symbolic link; only real folders and zip files are graded")
    if stat.S_ISDIR(info.st_mode):
        _stage_folder(sub, source, wanted)
    elif stat.S_ISREG(info.st_mode) and _is_zip(source):
        _stage_zip(sub, source, wanted)
    elif stat.S_ISREG(info.st_mode) and source.suffix.lower() == ".zip":
        raise Refused(f"{sub.label} could not be read as a zip archive (truncated or corrupt): {ZIP_HELP}")
    else:
        raise Refused(f"{sub.label} is neither a folder nor a zip archive; submit one of those")


def _discard(sub: Submission) -> None:
    sub.found.clear()
    shutil.rmtree(sub.lessons_dir, ignore_errors=True)
    sub.lessons_dir.mkdir(parents=True, exist_ok=True)


def _keep(sub: Submission, filename: str, data: bytes, origin: str) -> None:
    (sub.lessons_dir / filename).write_bytes(data)
    sub.found[filename] = origin


# Folders ----------------------------------------------------------------------------------

DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
REGULAR = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK  # never blocks on a named pipe


def _stage_folder(sub: Submission, source: Path, wanted: set[str]) -> None:
    root = os.open(source, DIRECTORY)
    lessons = None
    try:
        lessons = _open_folder(sub, root, "lessons")
        for filename in sorted(wanted):
            places = ([(lessons, f"lessons/{filename}")] if lessons is not None else []) + [(root, filename)]
            for folder, shown in places:
                data = _read_regular(sub, folder, filename, shown)
                if data is not None:
                    _keep(sub, filename, data, shown)
                    break
    finally:
        os.close(root)
        if lessons is not None:
            os.close(lessons)


def _open_folder(sub: Submission, parent: int, name: str) -> int | None:
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        sub.flags.append(f"its {name}/ folder is a symlink to somewhere else (not followed)")
        sub.problems.append(f"{name}/ is a symbolic link; its lesson files were not taken")
        return None
    if not stat.S_ISDIR(info.st_mode):
        return None
    return os.open(name, DIRECTORY, dir_fd=parent)


def _read_regular(sub: Submission, folder: int, filename: str, shown: str) -> bytes | None:
    """The bytes of ``filename`` in the open ``folder`` if it is a regular file with one
    name; None (with a note and a flag saying why) otherwise."""
    try:
        info = os.stat(filename, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None
    why = _refusal(info)
    if why is None:
        try:
            handle = os.open(filename, REGULAR, dir_fd=folder)
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            why = "symbolic link"  # swapped in since the check
        else:
            with os.fdopen(handle, "rb") as stream:
                opened = os.fstat(stream.fileno())
                why = _refusal(opened) or (None if (opened.st_dev, opened.st_ino) == (info.st_dev, info.st_ino)
                                           else "file that changed while it was read")
                if why is None and opened.st_size > MAX_LESSON_BYTES:
                    sub.problems.append(f"{shown} is larger than 2 MB; not graded")
                    return None
                if why is None:
                    return stream.read(MAX_LESSON_BYTES)
    if why == "symbolic link":
        sub.flags.append(f"{shown} is a symlink (not followed)")
        sub.problems.append(f"{shown} is a symbolic link; not graded (submit the file itself)")
    elif why.startswith("hard link"):
        sub.flags.append(f"{shown} is a {why} (refused: it may be a file from outside the submission)")
        sub.problems.append(f"{shown} is a {why}; not graded (submit a copy: cp, not ln)")
    else:
        sub.problems.append(f"{shown} is a {why}, not a regular file; not graded")
    return None


def _refusal(info: os.stat_result) -> str | None:
    if stat.S_ISLNK(info.st_mode):
        return "symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return "special file (pipe, socket, device or folder)"
    if info.st_nlink > 1:
        return f"hard link (the same file has {info.st_nlink} names)"
    return None


# Zips -------------------------------------------------------------------------------------

def _is_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return _directory(handle) is not None
    except OSError:
        return False


def _directory(handle) -> tuple[int, int] | None:
    """(member count, central directory bytes) from a zip's end records, before any parsing;
    None when there is no end record (not a zip, or truncated)."""
    size = handle.seek(0, os.SEEK_END)
    tail_size = min(size, 22 + 65535)  # end record plus the longest comment
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return None
    entries, directory = struct.unpack("<HI", tail[at + 10:at + 16])
    locator = tail[at - 20:at] if at >= 20 else b""
    if locator[:4] == b"PK\x06\x07":  # zip64: the real counts are in the zip64 end record
        (offset,) = struct.unpack("<Q", locator[8:16])
        handle.seek(offset)
        record = handle.read(56)
        if record[:4] != b"PK\x06\x06" or len(record) < 56:
            return None
        entries, directory = struct.unpack("<QQ", record[32:48])
    return entries, directory


def _member_name_problem(name: str) -> str | None:
    parts = re.split(r"[\\/]", name)
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in parts:
        return "climbs out of the folder with '..'"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES or any(
            len(p.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for p in parts):
        return "is too long for a file system"
    return None


def _stage_zip(sub: Submission, source: Path, wanted: set[str]) -> None:
    label = sub.label
    try:
        with open(source, "rb") as handle:
            counts = _directory(handle)
            if counts is None:
                raise Refused(f"{label} could not be read as a zip archive (truncated or corrupt): {ZIP_HELP}")
            if counts[0] > MAX_ZIP_MEMBERS or counts[1] > MAX_ZIP_DIRECTORY:
                raise Refused(f"{label} holds {counts[0]} members (at most {MAX_ZIP_MEMBERS} are read): {ZIP_HELP}")
            handle.seek(0)
            with zipfile.ZipFile(handle) as archive:
                _read_members(sub, archive, wanted, label)
    except UnicodeDecodeError:
        raise Refused(f"{label} has member names that are not valid UTF-8: {ZIP_HELP}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, struct.error, OSError, ValueError) as error:
        raise Refused(f"{label} could not be read as a zip archive ({type(error).__name__}: "
                      f"{clean(error, 200)}): {ZIP_HELP}") from None
    except NotImplementedError:
        raise Refused(f"{label} uses a compression method the grader cannot read: {ZIP_HELP}") from None


def _read_members(sub: Submission, archive: zipfile.ZipFile, wanted: set[str], label: str) -> None:
    members = archive.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        raise Refused(f"{label} holds {len(members)} members (at most {MAX_ZIP_MEMBERS} are read): {ZIP_HELP}")
    if sum(m.file_size for m in members) > MAX_ZIP_TOTAL:
        raise Refused(f"{label} would unpack to more than {MAX_ZIP_TOTAL // 1024 ** 3} GB (a zip bomb?): {ZIP_HELP}")
    for member in members:
        if member.flag_bits & 0x1:
            raise Refused(f"{label} is encrypted (password-protected) and cannot be read: {ZIP_HELP}")
        why = _member_name_problem(member.filename)
        if why:
            raise Refused(f"{label} holds a member whose name {why} ({clean(member.filename, 120, False)}): {ZIP_HELP}")
    files = [m for m in members if not m.is_dir()]
    # Prefer lessons/NAME over NAME elsewhere; ignore symlinks stored in the zip.
    files.sort(key=lambda m: (not m.filename.endswith(f"lessons/{Path(m.filename).name}"), m.filename))
    copies: dict[str, int] = {}  # a zip may hold one name twice; only the first is read
    for member in files:
        filename = Path(member.filename).name
        if filename not in wanted:
            continue
        copies[member.filename] = copies.get(member.filename, 0) + 1
        is_link = stat.S_ISLNK(member.external_attr >> 16)
        if is_link:
            sub.flags.append(f"{clean(member.filename, 200, False)} is a symlink in the zip (not followed)")
        if filename in sub.found or is_link:
            continue
        if member.file_size > MAX_LESSON_BYTES:
            sub.problems.append(f"{clean(member.filename, 200, False)} is larger than 2 MB; not graded")
            continue
        with archive.open(member) as stream:
            data = stream.read(MAX_LESSON_BYTES + 1)  # reaching the end checks the CRC
        _keep(sub, filename, data[:MAX_LESSON_BYTES], member.filename)
    for origin in sub.found.values():
        if copies.get(origin, 0) > 1:
            sub.problems.append(f"the zip holds {copies[origin]} members named {clean(origin, 200, False)}; "
                                "the first was graded")
