"""A hard lifetime for a cluster task: ``SIGALRM`` ends the process after
``COURSE_TASK_LIFETIME`` seconds, so a task whose parent died cannot run forever."""

import os
import signal


def limit_lifetime() -> None:
    """Arm the alarm if ``COURSE_TASK_LIFETIME`` is set (the default action of SIGALRM
    terminates the process)."""
    seconds = int(os.environ.get("COURSE_TASK_LIFETIME", "0"))
    if seconds > 0:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(seconds)
