"""One module per lesson, each registering its benchmark with ``recsys_course.bench.register``."""
