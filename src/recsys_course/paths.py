"""Where the course's trees live."""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV_VAR = "COURSE_ROOT"


def course_root() -> Path:
    """The repository root: ``$COURSE_ROOT``, else the clone this package was installed from
    (editable install), else the nearest parent of the working directory with ``solutions/``.
    """
    if os.environ.get(ROOT_ENV_VAR):
        return Path(os.environ[ROOT_ENV_VAR]).resolve()
    here = Path(__file__).resolve().parents[2]
    if (here / "solutions" / "exercises.yml").exists():
        return here
    for parent in [Path.cwd(), *Path.cwd().parents]:
        if (parent / "solutions" / "exercises.yml").exists():
            return parent
    raise FileNotFoundError(
        "Cannot find the course repository (a folder with solutions/exercises.yml). Run the "
        "command inside your clone, or set COURSE_ROOT=/path/to/clone."
    )
