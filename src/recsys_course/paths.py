"""Where the course's trees live."""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV_VAR = "COURSE_ROOT"
PACKAGE_DIR = Path(__file__).resolve().parent  # .../src/recsys_course
SRC_DIR = PACKAGE_DIR.parent  # what PYTHONPATH needs to import this very copy of the package


def course_root() -> Path:
    """The repository root: ``$COURSE_ROOT``, else the clone this package was installed from
    (editable install), else the nearest parent of the working directory with ``solutions/``.
    """
    if os.environ.get(ROOT_ENV_VAR):
        return Path(os.environ[ROOT_ENV_VAR]).resolve()
    here = SRC_DIR.parent
    if any((here / "solutions").glob("[0-9][0-9]_*.yml")):
        return here
    for parent in [Path.cwd(), *Path.cwd().parents]:
        if any((parent / "solutions").glob("[0-9][0-9]_*.yml")):
            return parent
    raise FileNotFoundError(
        "Cannot find the course repository (a folder with solutions/NN_*.yml). Run the "
        "command inside your clone, or set COURSE_ROOT=/path/to/clone."
    )
