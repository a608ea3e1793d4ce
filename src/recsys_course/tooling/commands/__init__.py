"""The ``course`` subcommands by audience: :mod:`.learner` (check, hint, progress, watch,
reset, run, data) and :mod:`.author` (sync, bench). ``recsys_course.tooling.cli`` parses arguments
and dispatches; instructors' ``course grade`` lives there next to the batch grader's options."""
