"""Intake of submissions: folders and zips in, one staging folder of lesson files out.

Only lesson files are taken (never a zip extracted whole): a member is matched by file
name, symlinks are skipped, anything over 2 MB is refused, and a zip is read member by
member with a size cap, so traversal paths and zip bombs have nothing to act on. Names
keep the original folder or zip name (Unicode included) for the reports; the staging
folder gets a safe ASCII name, with ``-2``, ``-3`` for duplicates.
"""

from __future__ import annotations

import re
import stat
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from recsys_course.tooling.catalog import Catalog

MAX_LESSON_BYTES = 2 * 1024 * 1024  # a lesson file is a few dozen KB; refuse anything huge


@dataclass
class Submission:
    name: str  # unique, ASCII: staging folder, feedback and JUnit file names
    source: Path
    folder: Path  # staging folder: lessons/ holds the copied lesson files
    found: dict[str, str] = field(default_factory=dict)  # lesson filename -> where it came from
    problems: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # provenance, for instructors only

    @property
    def lessons_dir(self) -> Path:
        return self.folder / "lessons"

    @property
    def label(self) -> str:
        """The original folder or zip name, as the instructor knows it (Unicode kept)."""
        return self.source.name


def safe_name(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text).strip("._") or "submission"


def expand(paths: list[Path], catalog: Catalog) -> list[Path]:
    """Each path is a submission, unless it is a folder holding no lesson files itself, in
    which case every folder and zip inside it is one (a class folder)."""
    names = {l.filename for l in catalog.lessons}
    found: list[Path] = []
    for path in paths:
        if path.is_dir() and not any(
            (path / n).exists() or (path / "lessons" / n).exists() for n in names
        ):
            found += sorted(p for p in path.iterdir() if p.is_dir() or p.suffix == ".zip")
        else:
            found.append(path)
    return found


def stage(source: Path, staging: Path, catalog: Catalog, taken: set[str]) -> Submission:
    """Copy a submission's lesson files (and nothing else) into ``staging``."""
    name = safe_name(source.stem if source.suffix == ".zip" else source.name)
    base, n = name, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    sub = Submission(name, source, staging / name)
    sub.lessons_dir.mkdir(parents=True)
    wanted = {l.filename for l in catalog.lessons}
    if not source.exists():
        sub.problems.append(f"{source.name} does not exist")
    elif source.is_dir():
        if (source / "lessons").is_symlink():
            sub.flags.append("its lessons/ folder is a symlink to somewhere else (not followed)")
        for filename in sorted(wanted):
            for candidate in (source / "lessons" / filename, source / filename):
                if candidate.is_symlink():
                    sub.flags.append(f"{candidate.relative_to(source)} is a symlink (not followed)")
                    continue
                if (source / "lessons").is_symlink() and candidate.parent == source / "lessons":
                    continue
                if not candidate.is_file():
                    continue
                if candidate.stat().st_size > MAX_LESSON_BYTES:
                    sub.problems.append(f"{candidate.name} is larger than 2 MB; not graded")
                    break
                _keep(sub, filename, candidate.read_bytes(), str(candidate.relative_to(source)))
                break
    elif zipfile.is_zipfile(source):
        _stage_zip(sub, source, wanted)
    else:
        sub.problems.append(f"{source.name} is neither a folder nor a readable zip archive")
    if not sub.found and not sub.problems:
        sub.problems.append("no lesson files found (expected lessons/NN_*.py)")
    return sub


def _stage_zip(sub: Submission, source: Path, wanted: set[str]) -> None:
    try:
        with zipfile.ZipFile(source) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            # Prefer lessons/NAME over NAME elsewhere; ignore symlinks stored in the zip.
            members.sort(key=lambda m: (not m.filename.endswith(f"lessons/{Path(m.filename).name}"), m.filename))
            for member in members:
                filename = Path(member.filename).name
                is_link = stat.S_ISLNK(member.external_attr >> 16)
                if filename in wanted and is_link:
                    sub.flags.append(f"{member.filename} is a symlink in the zip (not followed)")
                if filename not in wanted or filename in sub.found or is_link:
                    continue
                if member.file_size > MAX_LESSON_BYTES:
                    sub.problems.append(f"{member.filename} is larger than 2 MB; not graded")
                    continue
                with archive.open(member) as handle:
                    data = handle.read(MAX_LESSON_BYTES + 1)
                _keep(sub, filename, data[:MAX_LESSON_BYTES], member.filename)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as error:
        sub.problems.append(f"{source.name} could not be read as a zip archive ({type(error).__name__})")


def _keep(sub: Submission, filename: str, data: bytes, origin: str) -> None:
    (sub.lessons_dir / filename).write_bytes(data)
    sub.found[filename] = origin
