"""Grading a class on several machines: ``course grade --shard I/N`` and ``course merge``.

A scheduler (a CI matrix, a Kubernetes indexed Job, a Slurm array) starts N copies of
``course grade`` on the same class folder, each with its own index I; nothing here
distributes work or talks to other machines. Each copy:

* takes in and fingerprints the whole class (cheap: reading a few files per submission), so
  submission names and "identical to another submission" flags are the ones a single run
  would give;
* grades only its part (:meth:`Shard.select`): the submissions ranked by a hash of their
  folder or zip name, every N-th from position I. The part depends on the names only, never
  on the order a file system lists them, and the parts differ in size by at most one;
* writes ordinary reports for its part, plus ``shard.json`` (:func:`write_manifest`): the
  whole class in order, and which shard grades which submission.

:func:`merge` reads the shard outputs, refuses them unless they are one class graded the
same way (same class list, every shard present once, same tests, hidden tests, reference,
package, settings, isolation and calibrated maxima: :func:`calibration`), and writes the
class's reports from the shards' ``grades.json`` with the writers a single run uses, so
they are the same bytes apart from ``graded_at`` and the time per lesson.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from recsys_course.errors import CourseError
from recsys_course.paths import PACKAGE_DIR
from recsys_course.tooling.catalog import Catalog
from recsys_course.tooling.grading.results import ResultError

MANIFEST = "shard.json"
AGREE = ("exercises", "max_points", "possible", "isolation", "calibration", "warnings")


class MergeError(CourseError):
    """Shard outputs that are not one class graded the same way."""

    exit_code = 2


@dataclass(frozen=True)
class Shard:
    index: int  # 0 <= index < count, as Kubernetes' JOB_COMPLETION_INDEX counts
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` -> Shard(I, N); a clear error for anything else."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise CourseError(f"--shard {text!r}: expected I/N, e.g. 0/4 for the first of four shards") from None
        if count < 1 or not 0 <= index < count:
            raise CourseError(f"--shard {text!r}: I must be between 0 and N-1 (shards count from 0)")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owners(self, sources: list[Path]) -> list[int]:
        """The shard index that grades each of ``sources`` (a class in :func:`intake.plan`
        order): rank by a hash of the name (ties, equal names in two folders, by position),
        then deal the ranks out in turn."""
        ranked = sorted(range(len(sources)), key=lambda i: (_name_hash(sources[i]), i))
        owner = [0] * len(sources)
        for rank, i in enumerate(ranked):
            owner[i] = rank % self.count
        return owner

    def select(self, submissions: list) -> list:
        """The part of ``submissions`` (``intake.Submission``, the whole class in order) that
        this shard grades, in class order."""
        owner = self.owners([s.source for s in submissions])
        return [s for s, k in zip(submissions, owner) if k == self.index]


def _name_hash(source: Path) -> bytes:
    return hashlib.sha256(os.fsencode(source.name)).digest()


def _tree_digest(root: Path | None, skip: tuple[str, ...] = ()) -> str:
    """sha256 over the relative paths and bytes of every file under ``root``."""
    digest = hashlib.sha256()
    if root is None or not root.exists():
        return ""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        hidden = any(part.startswith(".") or part == "__pycache__" for part in relative.parts)
        if hidden or relative.parts[0] in skip:
            continue
        digest.update(os.fsencode(str(relative)) + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def calibration(catalog: Catalog, options) -> dict:
    """What a class's grades depend on besides the submissions: digests of the course's
    tests (as the grader copies them), the hidden tests, the reference solutions and their
    definitions, the package the sandboxes import, and the grading settings. Shards merge
    only when these agree."""
    solutions = catalog.root / "solutions"
    reference = hashlib.sha256()
    for lesson in catalog.lessons:
        for path in (solutions / lesson.filename, solutions / f"{lesson.slug}.yml"):
            reference.update(path.name.encode() + b"\0" + (path.read_bytes() if path.exists() else b"") + b"\0")
    return {
        "lessons": [lesson.id for lesson in catalog.lessons],
        "tests": _tree_digest(catalog.root / "tests", skip=("decoys", "browser", "dev")),
        "hidden_tests": _tree_digest(Path(options.extra_tests) if options.extra_tests else None),
        "reference": reference.hexdigest(),
        "package": _tree_digest(PACKAGE_DIR),
        "settings": {"timeout": options.timeout, "test_timeout": options.test_timeout,
                     "cell_timeout": options.cell_timeout, "memory_mb": options.memory_mb,
                     "junit": bool(options.junit), "hidden_summary": bool(options.hidden_summary)},
    }


def write_manifest(out: Path, shard: Shard, planned: list[tuple[Path, str]]) -> None:
    """``shard.json``: this shard, and the whole class in order with each submission's shard."""
    from recsys_course.tooling.grading.reports import write_atomic
    from recsys_course.tooling.grading.text import escape_name

    owners = shard.owners([source for source, _ in planned])
    manifest = {"shard": shard.index, "count": shard.count,
                "class": [{"name": name, "source": escape_name(source.name or str(source)), "shard": k}
                          for (source, name), k in zip(planned, owners)]}
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))


def _read(folder: Path) -> tuple[dict, dict]:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MergeError(f"{folder} has no {MANIFEST}: it is not the output of course grade --shard I/N") from None
    except (OSError, ValueError) as error:
        raise MergeError(f"{folder / MANIFEST} cannot be read ({error})") from None
    try:
        grades = json.loads((folder / "grades.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise MergeError(f"{folder / 'grades.json'} cannot be read ({error}); grade that shard again") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("class"), list) or not isinstance(grades, dict):
        raise MergeError(f"{folder}: shard.json or grades.json is not what course grade --shard writes; "
                         "grade that shard again")
    return manifest, grades


def merge(folders: list[Path], out: Path) -> tuple[dict, list[dict]]:
    """Combine shard outputs into one class's reports in ``out``; returns the header and
    the submissions' records (``reports.entry``), in class order. Raises :class:`MergeError`
    naming what disagrees or is missing."""
    from recsys_course.tooling.grading.reports import write_entries

    if not folders:
        raise MergeError("no shard outputs to merge")
    shards = [(folder, *_read(folder)) for folder in folders]
    first_folder, first_manifest, first_grades = shards[0]
    count = first_manifest.get("count")
    problems = []
    by_index: dict[int, Path] = {}
    for folder, manifest, grades in shards:
        if manifest.get("count") != count:
            problems.append(f"{folder} is shard {manifest.get('shard')} of {manifest.get('count')}, "
                            f"{first_folder} one of {count}")
        if manifest.get("class") != first_manifest.get("class"):
            problems.append(f"{folder} and {first_folder} graded different classes (the submissions differ); "
                            "run every shard on the same class folder")
        if manifest.get("shard") in by_index:
            problems.append(f"{folder} and {by_index[manifest['shard']]} are both shard {manifest.get('shard')}")
        by_index[manifest.get("shard")] = folder
        for key in AGREE:
            if grades.get(key) != first_grades.get(key):
                problems.append(f"{folder} and {first_folder} were graded with a different {key.replace('_', ' ')}"
                                + _difference(grades.get(key), first_grades.get(key)))
    missing = sorted(set(range(count if isinstance(count, int) else 0)) - set(by_index))
    if missing:
        problems.append(f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing: pass every shard's output")
    if problems:
        raise MergeError("cannot merge:\n  " + "\n  ".join(dict.fromkeys(problems)))

    entries: dict[str, dict] = {}
    for folder, manifest, grades in shards:
        expected = [m.get("name") for m in manifest["class"]
                    if isinstance(m, dict) and m.get("shard") == manifest["shard"]]
        got = [e.get("name") if isinstance(e, dict) else None for e in grades.get("submissions", [])]
        if got != expected:
            raise MergeError(f"{folder}: grades.json holds {len(got)} submission(s), its shard should hold "
                             f"{len(expected)}; grade that shard again")
        entries.update({e["name"]: e for e in grades["submissions"]})
    ordered = [entries[m["name"]] for m in first_manifest["class"]]
    head = {key: value for key, value in first_grades.items() if key != "submissions"}
    head["graded_at"] = max(grades.get("graded_at", "") for _, _, grades in shards)
    settings = head.get("calibration", {}).get("settings", {})
    try:
        write_entries(out, head, ordered, junit=settings.get("junit", False),
                      hidden_summary=settings.get("hidden_summary", True))
    except (ResultError, KeyError, TypeError, AttributeError) as error:
        raise MergeError(f"a shard's grades.json is malformed ({type(error).__name__}: {error}); "
                         "grade that shard again") from None
    return head, ordered


def _difference(value, other) -> str:
    if isinstance(value, dict) and isinstance(other, dict):
        keys = sorted(k for k in set(value) | set(other) if value.get(k) != other.get(k))
        return f" ({', '.join(map(str, keys))})" if keys else ""
    return ""
