"""Is the built site (``site/``) current? ``make browser-test`` asks before rebuilding.

The build writes :data:`STAMP` into the site: a digest of everything a page is made from
(mkdocs.yml, docs/, solutions/, the package), the ``COURSE_DATA`` it executed the lessons
with and the lessons it contains. ``python -m recsys_course.tooling.site.stamp SITE`` exits 0 when
the site is current, else prints why and exits 1; ``--data`` prints the last build's data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

STAMP = ".course-build.json"
INPUTS = ("mkdocs.yml", "overrides", "docs", "solutions", "src/recsys_course")
IGNORED_PARTS = {"__pycache__", "vendor"}


def inputs_digest(root: Path) -> str:
    """Hash of the files the site is built from (vendored scripts and bytecode left out)."""
    digest = hashlib.sha256()
    for name in INPUTS:
        path = root / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if IGNORED_PARTS & set(file.relative_to(root).parts) or file.suffix == ".pyc":
                continue
            digest.update(file.relative_to(root).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def write(site_dir: Path, root: Path, data_spec: str, lessons: list[str]) -> None:
    record = {"inputs": inputs_digest(root), "data": data_spec, "lessons": lessons}
    (site_dir / STAMP).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def read(site_dir: Path) -> dict | None:
    try:
        return json.loads((site_dir / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def why_stale(site_dir: Path, root: Path, all_lessons: list[str], wanted_data: str | None) -> str | None:
    """None when ``site_dir`` is current, else the reason it must be rebuilt."""
    record = read(site_dir)
    if record is None:
        return f"no finished build in {site_dir}"
    if sorted(record.get("lessons", [])) != sorted(all_lessons):
        return f"the last build had lessons {record.get('lessons')} only (COURSE_SITE_LESSONS)"
    if wanted_data not in (None, "", "auto") and _same(wanted_data) != _same(record.get("data", "")):
        return (
            f"COURSE_DATA={wanted_data} but the site was built with {record.get('data')}: "
            "every lesson will be executed with the new data (or its cached run reused)"
        )
    if record.get("inputs") != inputs_digest(root):
        return "lessons, docs or code changed since the last build"
    return None


def _same(spec: str) -> str:
    """A data spec in comparable form: paths resolved, names as they are."""
    return str(Path(spec).resolve()) if spec and Path(spec).exists() else spec


def main(argv: list[str] | None = None) -> int:
    from recsys_course.tooling.catalog import load_catalog

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built site folder")
    parser.add_argument("--data", action="store_true", help="print the last build's COURSE_DATA")
    args = parser.parse_args(argv)
    if args.data:
        print((read(args.site) or {}).get("data", ""))
        return 0
    catalog = load_catalog()
    reason = why_stale(
        args.site, catalog.root, [l.id for l in catalog.lessons], os.environ.get("COURSE_DATA")
    )
    if reason:
        print(f"site needs a build: {reason}")
        return 1
    print(f"{args.site} is current: reusing it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
