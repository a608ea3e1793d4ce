"""Errors a ``course`` user can fix, each mapped to an exit code by the CLI dispatcher.

Anything else that escapes a command is a bug and is shown with its traceback.
"""

from __future__ import annotations


class CourseError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""

    exit_code = 2


class UnknownTarget(CourseError):
    """No lesson or exercise with that id (``course check 9.9``)."""

    exit_code = 2


class MissingTool(CourseError):
    """A program the command needs is missing or cannot run here (bubblewrap for ``grade``)."""

    exit_code = 2


class Refused(CourseError):
    """The command would destroy work and was not told to (``course sync`` without --force)."""

    exit_code = 3
