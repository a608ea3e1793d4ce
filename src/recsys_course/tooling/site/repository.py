"""Where the course is published: its repository, the revision a build was made from, the
site's address and the links a lesson page offers (source on GitHub, notebook in Colab).

Nothing here is written into mkdocs.yml by hand for a fork to edit. The repository is, in
order: ``$COURSE_REPO_URL`` (local builds), ``$GITHUB_SERVER_URL/$GITHUB_REPOSITORY``
(set by GitHub Actions in the repository the workflow runs in), else mkdocs.yml's
``repo_url``. The revision is ``$COURSE_REVISION``, else ``$GITHUB_SHA``, else the commit
checked out in the course root, else :data:`DEFAULT_BRANCH`. The site's address is
``$COURSE_SITE_URL`` (the Pages workflow passes the address GitHub reports), else the
GitHub Pages address of a repository found through ``$GITHUB_REPOSITORY``, else
mkdocs.yml's ``site_url``.

Colab opens notebooks from GitHub repositories only (``colab.research.google.com/github/
OWNER/REPO/blob/BRANCH/PATH``; it has no way to open an arbitrary URL), so the Pages
workflow pushes the generated notebooks to the branch :data:`NOTEBOOKS_BRANCH`, which holds
nothing else: the source branches never carry a generated notebook.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

NOTEBOOKS_BRANCH = "notebooks"  # generated notebooks only, force-pushed by .github/workflows/pages.yml
DEFAULT_BRANCH = "main"
COLAB = "https://colab.research.google.com/github"
GITHUB = re.compile(r"^https://github\.com/(?P<owner>[\w.-]+)/(?P<name>[\w.-]+?)(?:\.git)?/?$")


@dataclass(frozen=True)
class Repository:
    """A public repository of the course and the revision a build was made from."""

    url: str  # https://github.com/OWNER/NAME, without a trailing slash or ".git"
    revision: str  # a commit id, or a branch name when the commit is unknown

    @property
    def name(self) -> str:
        """``OWNER/NAME`` on GitHub, else the URL's last part (what the header shows)."""
        match = GITHUB.match(self.url)
        return f"{match['owner']}/{match['name']}" if match else self.url.rsplit("/", 1)[-1]

    @property
    def on_github(self) -> bool:
        return GITHUB.match(self.url) is not None

    def blob(self, path: str) -> str:
        """A file of the repository at this revision, as the host shows it."""
        return f"{self.url}/blob/{self.revision}/{path}"

    def colab(self, path: str) -> str | None:
        """Colab's address of a notebook on :data:`NOTEBOOKS_BRANCH` (GitHub only)."""
        return f"{COLAB}/{self.name}/blob/{NOTEBOOKS_BRANCH}/{path}" if self.on_github else None

    def pages_url(self) -> str | None:
        """The default GitHub Pages address: ``https://OWNER.github.io/NAME/`` (a custom
        domain is only known to GitHub: the Pages workflow passes it as $COURSE_SITE_URL)."""
        match = GITHUB.match(self.url)
        if not match:
            return None
        owner, name = match["owner"].lower(), match["name"]
        if name.lower() == f"{owner}.github.io":  # a user or organisation site
            return f"https://{owner}.github.io/"
        return f"https://{owner}.github.io/{name}/"


def repository_url(configured: str | None, env: Mapping[str, str] = os.environ) -> str | None:
    """The course's repository URL (see the module docstring for the order)."""
    if env.get("COURSE_REPO_URL", "").strip():
        url = env["COURSE_REPO_URL"].strip()
    elif env.get("GITHUB_REPOSITORY", "").strip():
        server = env.get("GITHUB_SERVER_URL", "").strip() or "https://github.com"
        url = f"{server.rstrip('/')}/{env['GITHUB_REPOSITORY'].strip()}"
    else:
        url = (configured or "").strip()
    url = url.rstrip("/").removesuffix(".git")
    return url or None


def revision(root: Path, env: Mapping[str, str] = os.environ) -> str:
    """The commit a build is made from (see the module docstring for the order)."""
    for variable in ("COURSE_REVISION", "GITHUB_SHA"):
        if env.get(variable, "").strip():
            return env[variable].strip()
    return _git_head(root) or DEFAULT_BRANCH


def _git_head(root: Path) -> str | None:
    """HEAD of the git checkout whose top level is ``root`` (not of a repository that merely
    contains it, such as a copy of the course in a temporary folder)."""
    try:
        top = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(top) != 2 or Path(top[0]).resolve() != Path(root).resolve():
        return None
    return top[1]


def site_url(repository: Repository | None, configured: str | None, env: Mapping[str, str] = os.environ) -> str | None:
    """The published site's address, ending in "/" (see the module docstring for the order)."""
    url = env.get("COURSE_SITE_URL", "").strip()
    if not url and env.get("GITHUB_REPOSITORY", "").strip() and repository is not None:
        url = repository.pages_url() or ""
    url = url or (configured or "").strip()
    return url.rstrip("/") + "/" if url else None


def from_environment(configured_url: str | None, root: Path, env: Mapping[str, str] = os.environ) -> Repository | None:
    url = repository_url(configured_url, env)
    return Repository(url, revision(root, env)) if url else None
