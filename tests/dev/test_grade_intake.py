"""The edges of batch grading: hostile intake, similarity flags, reports safe to open, shards.

Intake and report functions are tested directly (no sandbox, milliseconds). One small
class, lesson 00 only, is then graded through the instructor's door (``course grade``) once
whole and once as two shards merged with ``course merge``: the batch must finish with
reports for every malformed submission, flag the copies, keep every report safe to open,
and the merged reports must be the single run's, byte for byte apart from timestamps and
durations. Those tests need bubblewrap; where it is missing they skip, except under
``COURSE_REQUIRE_SANDBOX=1`` (CI), where a missing sandbox fails loudly.
"""

from __future__ import annotations

import ast
import base64
import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

import recsys_course
from recsys_course.errors import CourseError
from recsys_course.tooling.catalog import Catalog, load_catalog
from recsys_course.tooling.grading import similarity
from recsys_course.tooling.grading.batch import LessonRun, Options, SubmissionGrade
from recsys_course.tooling.grading.intake import MAX_ZIP_MEMBERS, Submission, plan, stage_all
from recsys_course.tooling.grading.reports import summary_table, write_reports
from recsys_course.tooling.grading.results import ExerciseResult
from recsys_course.tooling.grading.results import TestOutcome as Outcome  # not collected as a test class
from recsys_course.tooling.grading.sandbox import problem
from recsys_course.tooling.grading.shards import MergeError, Shard, merge, write_manifest
from recsys_course.tooling.grading.similarity import fingerprints
from recsys_course.tooling.grading.text import MAX_MESSAGE, MAX_NOTES, clean, dedupe, one_line
from recsys_course.tooling.lessons import make_stub

# Meant to keep the whole module on one worker, so the class below is graded once. With
# pytest 9.2 and pytest-xdist 3.8 the mark has no effect (xdist writes the group into the
# old _nodeid field, pytest-dev/pytest-xdist#1386): under -n 2 each worker grades the class.
pytestmark = pytest.mark.xdist_group("grade_intake")

CATALOG = load_catalog()
LESSON = CATALOG.lesson("00")
ONE_LESSON = Catalog(CATALOG.root, (LESSON,))
FILE = LESSON.filename
SOLUTION = (CATALOG.root / "solutions" / FILE).read_text(encoding="utf-8")
STUB = make_stub(SOLUTION, LESSON)


# Malformed submissions, each built the way a learner's tool (or an attacker) would --------

def _zip(path: Path, members: list[tuple[str, str]]) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, text in members:
            archive.writestr(name, text)
    path.write_bytes(buffer.getvalue())
    return path


def _patched(path: Path, change) -> None:
    data = bytearray(path.read_bytes())
    change(data)
    path.write_bytes(bytes(data))


def _encrypt_flag(data: bytearray) -> None:
    """Set the 'encrypted' bit of the first member, as a password-protecting tool does."""
    data[6] |= 1  # local file header, general purpose flags
    data[data.find(b"PK\x01\x02") + 8] |= 1  # central directory header


def _declare_huge(data: bytearray) -> None:
    """Declare ~4 GB of uncompressed data for the last member (a zip bomb's header)."""
    at = data.rfind(b"PK\x01\x02")
    data[at + 24:at + 28] = (0xFFFFFFF0).to_bytes(4, "little")


MALFORMED_ZIPS = {
    # name -> (members, patch or None, words the note must hold)
    "encrypted": ([(f"lessons/{FILE}", SOLUTION)], _encrypt_flag, "encrypted"),
    "corrupt": ([(f"lessons/{FILE}", SOLUTION)],
                lambda d: d.__setitem__(slice(d.find(b"# %%"), d.find(b"# %%") + 4), b"#!%%"), "CRC"),
    "truncated": ([(f"lessons/{FILE}", SOLUTION)], lambda d: d.__delitem__(slice(len(d) // 2, None)), "truncated"),
    "bomb_size": ([(f"lessons/{FILE}", SOLUTION), ("data.bin", "x")], _declare_huge, "zip bomb"),
    "absolute": ([(f"/home/x/lessons/{FILE}", SOLUTION)], None, "absolute path"),
    "dotdot": ([(f"../../lessons/{FILE}", SOLUTION)], None, "'..'"),
    "not_utf8": ([(f"lessons/{FILE}", SOLUTION), ("résumé.txt", "x")],
                 lambda d: d.__setitem__(slice(None), d.replace("résumé".encode(), b"r\xff\xfesum\xff\xfe")),
                 "not valid UTF-8"),
    "too_long": ([("a" * 300 + f"/lessons/{FILE}", SOLUTION)], None, "too long"),
}


def build_malformed(root: Path, outside: Path) -> dict[str, str]:
    """Write one submission of every malformed kind into ``root``; returns its entry name ->
    the words its note must hold. ``outside`` is a folder beside the class."""
    expected = {}
    for name, (members, patch, words) in MALFORMED_ZIPS.items():
        path = _zip(root / f"{name}.zip", members)
        if patch:
            _patched(path, patch)
        expected[f"{name}.zip"] = words
    _zip(root / "bomb_members.zip", [(f"f{i}", "") for i in range(MAX_ZIP_MEMBERS + 1)])
    expected["bomb_members.zip"] = "members"
    os.mkfifo(root / "named_pipe.zip")
    expected["named_pipe.zip"] = "neither a folder nor a zip"
    # A lesson file that is a hard link to the reference solution outside the submission.
    reference = outside / "copy_of_the_reference.py"
    reference.write_text(SOLUTION, encoding="utf-8")
    (root / "hard_link" / "lessons").mkdir(parents=True)
    os.link(reference, root / "hard_link" / "lessons" / FILE)
    expected["hard_link"] = "hard link"
    # A submission folder that is a symlink to a folder outside the class.
    (outside / "someone" / "lessons").mkdir(parents=True)
    (outside / "someone" / "lessons" / FILE).write_text(SOLUTION, encoding="utf-8")
    (root / "symlinked_root").symlink_to(outside / "someone")
    expected["symlinked_root"] = "symbolic link"
    # A lesson file that is a symlink, and a lesson file that is a named pipe.
    (root / "symlinked_file" / "lessons").mkdir(parents=True)
    (root / "symlinked_file" / "lessons" / FILE).symlink_to(reference)
    expected["symlinked_file"] = "symbolic link"
    (root / "pipe_lesson" / "lessons").mkdir(parents=True)
    os.mkfifo(root / "pipe_lesson" / "lessons" / FILE)
    expected["pipe_lesson"] = "not a regular file"
    return expected


def test_intake_refuses_every_malformed_kind_with_a_note_and_never_raises(tmp_path):
    root, outside = tmp_path / "class", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    expected = build_malformed(root, outside)
    subs = {s.source.name: s for s in stage_all([root], tmp_path / "staging", ONE_LESSON)}
    assert set(subs) == set(expected)
    for source, words in expected.items():
        sub = subs[source]
        assert not sub.found and not any((sub.lessons_dir).iterdir()), f"{source}: took {sub.found}"
        assert any(words in p for p in sub.problems), f"{source}: {sub.problems}"
    for source in ("hard_link", "symlinked_root", "symlinked_file"):
        assert subs[source].flags, f"{source}: what was refused must be flagged"


def test_intake_takes_regular_files_and_prefers_lessons_folder(tmp_path):
    root = tmp_path / "class"
    (root / "alice" / "lessons").mkdir(parents=True)
    (root / "alice" / "lessons" / FILE).write_text("A = 1\n")
    (root / "alice" / FILE).write_text("B = 2\n")
    _zip(root / "bob.zip", [(f"x/scratch/{FILE}", "B = 2\n"), (f"x/lessons/{FILE}", "A = 1\n")])
    subs = stage_all([root], tmp_path / "staging", ONE_LESSON)
    assert [s.found for s in subs] == [{FILE: f"lessons/{FILE}"}, {FILE: f"x/lessons/{FILE}"}]
    assert all((s.lessons_dir / FILE).read_text() == "A = 1\n" and not s.problems for s in subs)


def test_odd_folder_names_get_safe_names_and_keep_the_original_escaped(tmp_path):
    root = tmp_path / "class"
    root.mkdir()
    raw = [b"caf\xe9", b"red\x1b[31mname\x1b[0m", b"two\nlines", b"=HYPERLINK(x)", b"n" * 250, b"CON", b"con"]
    for name in raw:
        os.mkdir(os.fsencode(root) + b"/" + name)
    planned = plan([root], ONE_LESSON)
    names = [name for _, name in planned]
    assert len({n.lower() for n in names}) == len(names), "report file names must differ, even without case"
    for name in names:
        assert name.isascii() and len(name) <= 70 and name.split(".")[0].upper() not in {"CON", "NUL"}
        assert all(c.isalnum() or c in "._-" for c in name)
    labels = {s.label for s in stage_all([root], tmp_path / "staging", ONE_LESSON)}
    assert {"caf\\xe9", "red\\x1b[31mname\\x1b[0m", "two\\x0alines", "=HYPERLINK(x)", "n" * 250} <= labels
    assert all(c.isprintable() for label in labels for c in label)


def test_shards_name_submissions_like_the_whole_class(tmp_path):
    """Names are assigned over the whole class in one order, whatever the listing order."""
    root = tmp_path / "class"
    for name in ("b", "a", "Jurgen Muller", "jurgen_muller"):
        (root / name).mkdir(parents=True)
    _zip(root / "Jurgen Muller.zip", [("x", "")])
    first = plan([root], ONE_LESSON)
    assert plan([root], ONE_LESSON) == first
    assert [n for _, n in first] == ["Jurgen_Muller", "Jurgen_Muller-2", "a", "b", "jurgen_muller-3"]


# Similarity and provenance ------------------------------------------------------------------

RENAMES = {"n_users": "how_many_people", "n_movies": "how_many_films", "filled": "nonempty", "stats": "table",
           "n_test": "size_of_test", "ordered": "by_time", "cut": "boundary", "counts": "tally",
           "ranking": "order", "seen": "history", "rated": "done", "test_items": "truth", "hits": "found",
           "movie": "film", "user": "person"}


def renamed_reference() -> str:
    """The reference with every local variable of the exercises renamed, and one line added to 0.5."""
    start, end = SOLUTION.index('exercise="0.1"'), SOLUTION.index("# %% [markdown]\n# ## 8.")
    body = SOLUTION[start:end]
    for old, new in RENAMES.items():
        body = re.sub(rf"\b{old}\b", new, body)
    body = body.replace("    return float(np.mean(found))", "    found = list(found)\n    return float(np.mean(found))")
    return SOLUTION[:start] + body + SOLUTION[end:]


def exec_of_encoded_reference() -> str:
    """The stub whose last exercise cell runs the reference's five functions from a
    compressed, encoded string (so they replace the stubs while the lesson loads)."""
    tree = ast.parse(SOLUTION)
    functions = [ast.get_source_segment(SOLUTION, node) for node in tree.body
                 if isinstance(node, ast.FunctionDef) and node.name in {e.function for e in LESSON.exercises}]
    payload = base64.b64encode(zlib.compress("\n\n".join(functions).encode())).decode()
    cell = STUB.index('exercise="0.5"')
    end = STUB.index("\n# %%", cell)
    code = f"\nimport base64, zlib\nexec(zlib.decompress(base64.b64decode({payload!r})).decode())\n"
    return STUB[:end] + code + STUB[end:]


HONEST = {
    "sparsity": '''def sparsity(ratings):
    pairs = set(zip(ratings["user_id"], ratings["movie_id"]))
    users = set(ratings["user_id"])
    movies = set(ratings["movie_id"])
    return 1.0 - len(pairs) / (len(users) * len(movies))
''',
    "recommend_popular": '''def recommend_popular(train, user_ids, k=10):
    order = train["movie_id"].value_counts().rename_axis("movie_id").reset_index(name="count")
    order = order.sort_values(["count", "movie_id"], ascending=[False, True])["movie_id"].tolist()
    result = {}
    for u in user_ids:
        already = set(train.loc[train["user_id"] == u, "movie_id"])
        picks = []
        for m in order:
            if len(picks) == k:
                break
            if m not in already:
                picks.append(m)
        result[u] = picks
    return result
''',
    "hit_rate_at_k": '''def hit_rate_at_k(recommendations, test, k=10):
    users = test["user_id"].unique()
    if len(users) == 0:
        return 0.0
    hits = 0
    for user in users:
        watched = set(test.loc[test["user_id"] == user, "movie_id"])
        if any(m in watched for m in recommendations.get(user, [])[:k]):
            hits += 1
    return float(hits / len(users))
''',
}


def honest_solution() -> str:
    """The stub with three exercises solved in the learner's own way (all correct)."""
    text = STUB
    for function, code in HONEST.items():
        cell = text.index(f"def {function}(")
        end = text.index("\n# %%", cell)
        text = text[:cell] + code + text[end:]
    return text


def test_similarity_survives_renaming_and_flags_code_loading(tmp_path):
    root = tmp_path / "class"
    sources = {"renamed": renamed_reference(), "encoded": exec_of_encoded_reference(),
               "honest": honest_solution(), "honest_twin": honest_solution(), "stub": STUB}
    for name, text in sources.items():
        (root / name / "lessons").mkdir(parents=True)
        (root / name / "lessons" / FILE).write_text(text, encoding="utf-8")
    subs = {s.name: s for s in stage_all([root], tmp_path / "staging", ONE_LESSON)}
    similarity.flag(list(subs.values()), ONE_LESSON, CATALOG.root / "solutions")
    renamed = " ".join(subs["renamed"].flags)
    for ex in ("0.1", "0.2", "0.3", "0.4"):
        assert f"exercise {ex} is identical to the reference" in renamed, renamed
    assert "exercise 0.5 is nearly identical to the reference" in renamed, "a line added changes little"
    encoded = " ".join(subs["encoded"].flags)
    assert "loads or decodes code" in encoded and "exec()" in encoded and "imports base64" in encoded
    assert not subs["stub"].flags and not any("reference" in f or "loads" in f for f in subs["honest"].flags)
    # Two learners who hand in the same code are flagged together, naming each other.
    assert any("identical to honest_twin" in f for f in subs["honest"].flags)


def test_normalisation_keeps_what_carries_the_approach():
    functions = {"f": "9.9"}
    body = "    total = 0\n    for value in values:\n        total = total + value * 2 + len(str(value))\n" * 3
    own = fingerprints(f"def f(values):\n{body}    return total\n", functions)["9.9"]
    renamed = fingerprints(f"def f(xs):\n{body.replace('value', 'x').replace('total', 't')}    return t\n",
                           functions)["9.9"]
    other = fingerprints(f"def f(values):\n{body.replace('len(str', 'abs(float')}    return total\n",
                         functions)["9.9"]
    assert own.digest == renamed.digest, "local names are placeholders"
    assert own.digest != other.digest and own.resemblance(other) < 1, "called functions are kept"


# Reports safe to open -------------------------------------------------------------------------

FORGED_ROW = "\n! correct                    13/13  100%  "
GRADER_PATHS = (f"{sys.prefix}/lib/python3/site-packages/x.py", "/tmp/course-batch-k2j4/grader/tests/t.py",
                f"{CATALOG.root}/solutions/{FILE}")


def hostile_grade(tmp_path: Path, name: str, label: str) -> SubmissionGrade:
    """A graded submission whose every text is hostile: escape sequences, formulas, a forged
    summary row, grader paths, an 8 MB message and 50,000 notes (half of them repeats)."""
    failure = ("=HYPERLINK(\"http://x\")\x1b]0;owned\x07\x1b[2J" + FORGED_ROW + " ".join(GRADER_PATHS)
               + "\ud800\x00\x0b\ufffe" + "y" * 8_000_000)
    notes = [f"@note {i % 25_000}\r\x1b[1A" for i in range(50_000)]
    sub = Submission(name, tmp_path / name, tmp_path / "staging" / name, found={FILE: f"lessons/\x1b[31m{FILE}"},
                     problems=["-problem\x1b[31m " + GRADER_PATHS[1]] * 3, flags=["+flag\nsecond line", "=1+1"],
                     display=label)
    exercises = {}
    for ex in LESSON.exercises:
        test = Outcome(f"tests/test_lesson_00.py::test_{ex.function}", ex.id, ex.points, passed=False,
                           ran=True, failure=failure)
        exercises[ex.id] = ExerciseResult(ex.id, ex.title, ex.points, 0, "failed", failure, [test], notes[:100])
    return SubmissionGrade(sub, exercises, {"00": LessonRun(1.5, "whole", notes)})


@pytest.fixture(scope="module")
def hostile_reports(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reports")
    grades = [hostile_grade(tmp, "evil", "evil\x1b[31m" + FORGED_ROW), hostile_grade(tmp, "formula", "=cmd|'/C calc'!A0")]
    options = Options(out=tmp / "out", junit=True)
    entries = write_reports(grades, ONE_LESSON, options, ["a warning\x1b[0m"], {"sandbox": "test"})
    return {"out": options.out, "entries": entries, "summary": summary_table(entries, 13)}


def test_csv_escapes_formulas_and_reads_back_with_default_limits(hostile_reports):
    with open(hostile_reports["out"] / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))  # raises if a field exceeds csv.field_size_limit()
    assert len(rows) == 4 and all(len(row) == len(rows[0]) for row in rows)
    for row in rows[2:]:
        text = [cell for cell in row if not cell.isdigit()]
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in text), row
        assert all(c.isprintable() for cell in text for c in cell), "no control character in a cell"
    assert rows[3][1] == "'=cmd|'/C calc'!A0" and rows[2][rows[0].index("flags")].startswith("'+flag")


def test_terminal_summary_cannot_be_forged_or_drive_the_terminal(hostile_reports):
    summary = hostile_reports["summary"]
    lines = summary.split("\n")
    assert len(lines) == 1 + 2 + 1, summary  # header, two submissions, the flag legend
    assert all(c.isprintable() for line in lines for c in line)
    assert not any(line.lstrip("! ").startswith("correct") for line in lines)


def test_junit_is_well_formed_and_json_is_bounded(hostile_reports):
    out = hostile_reports["out"]
    for path in (out / "junit").glob("*.xml"):
        ET.parse(path)  # raises on a character XML forbids
    size = (out / "grades.json").stat().st_size
    assert size < 2_000_000, f"grades.json is {size} bytes for two submissions"
    data = json.loads((out / "grades.json").read_text(encoding="utf-8"))
    for sub in data["submissions"]:
        assert len(sub["notes"]) <= MAX_NOTES and sub["notes"][-1].startswith("... and")
        assert len(sub["problems"]) == 1, "repeated notes are kept once"
        assert all(len(e["first_failure"]) <= MAX_MESSAGE for e in sub["exercises"])


def test_feedback_quotes_no_grader_path(hostile_reports):
    out = hostile_reports["out"]
    names = sorted(p.name for p in (out / "feedback").iterdir())
    assert names == ["evil.md", "formula.md"]
    for path in (out / "feedback").iterdir():
        text = path.read_text(encoding="utf-8")
        assert len(text) < 50_000 and "\x1b" not in text
        for secret in (sys.prefix, "/tmp/course-batch-", str(CATALOG.root)):
            assert secret not in text, f"{path.name} quotes {secret}"
        # The placeholders, escaped for Markdown (a bare <python> would render as an HTML tag).
        assert all(f"&lt;{p}&gt;/" in text for p in ("python", "grader", "course"))


def test_text_helpers_are_idempotent():
    hostile = "=a\x1b[31m\nb\ud800\t" + "z" * 5000
    for function in (clean, one_line):
        once = function(hostile)
        assert function(once) == once and len(once) <= MAX_MESSAGE
    notes = [str(i % 7) for i in range(100_000)] + [str(i) for i in range(100)]
    kept = dedupe(notes, cap=20)
    assert kept[:7] == [str(i) for i in range(7)] and len(kept) == 20 and dedupe(kept, cap=20) == kept


# Shards -----------------------------------------------------------------------------------------

def test_shard_parts_depend_on_names_only_and_are_balanced():
    names = [Path(f"learner{i:03d}") for i in range(101)]
    shard = Shard.parse("2/4")
    owners = dict(zip(names, shard.owners(names)))
    shuffled = sorted(names, key=lambda p: hashlib.md5(p.name.encode()).digest())
    assert dict(zip(shuffled, shard.owners(shuffled))) == owners, "a listing order must not move a submission"
    sizes = [list(owners.values()).count(k) for k in range(4)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 101
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(CourseError, match="--shard"):
            Shard.parse(bad)


def _shard_outputs(tmp: Path, grades: list, count: int, calibration: dict) -> list[Path]:
    """What ``course grade --shard k/count`` writes for each k, from already graded submissions."""
    planned = [(g.submission.source, g.submission.name) for g in grades]
    folders = []
    for k in range(count):
        shard = Shard(k, count)
        part = shard.select([g.submission for g in grades])
        options = Options(out=tmp / f"shard{k}", junit=True)
        write_reports([g for g in grades if g.submission in part], ONE_LESSON, options, ["w"], {"sandbox": "x"},
                      calibration=calibration, maxima={e.id: e.points for e in LESSON.exercises})
        write_manifest(options.out, shard, planned)
        folders.append(options.out)
    return folders


def test_merge_rebuilds_the_single_run_and_refuses_what_does_not_belong_together(tmp_path):
    grades = [hostile_grade(tmp_path, f"learner{i}", f"Learner {i}\x1b[0m") for i in range(5)]
    calibration = {"tests": "t", "reference": "r", "settings": {"junit": True, "hidden_summary": True}}
    single = Options(out=tmp_path / "single", junit=True)
    write_reports(grades, ONE_LESSON, single, ["w"], {"sandbox": "x"}, calibration=calibration,
                  maxima={e.id: e.points for e in LESSON.exercises})
    folders = _shard_outputs(tmp_path, grades, 3, calibration)
    merge(list(reversed(folders)), tmp_path / "merged")
    assert_same_reports(single.out, tmp_path / "merged")

    with pytest.raises(MergeError, match="shard.s. 1/3 missing"):
        merge([folders[0], folders[2]], tmp_path / "m2")
    with pytest.raises(MergeError, match="both shard 0"):
        merge([folders[0], folders[0], folders[1], folders[2]], tmp_path / "m3")
    other = _shard_outputs(tmp_path / "other", grades, 3, {**calibration, "tests": "changed"})
    with pytest.raises(MergeError, match="different calibration .tests."):
        merge([folders[0], folders[1], other[2]], tmp_path / "m4")
    data = json.loads((other[1] / "grades.json").read_text())
    data["max_points"]["0.1"] += 1
    data["calibration"] = calibration
    (other[1] / "grades.json").write_text(json.dumps(data))
    with pytest.raises(MergeError, match="different max points"):
        merge([folders[0], other[1], folders[2]], tmp_path / "m5")
    with pytest.raises(MergeError, match="not the output of course grade --shard"):
        merge([single.out], tmp_path / "m6")
    data = json.loads((other[2] / "grades.json").read_text())
    data["calibration"] = calibration
    data["submissions"][0]["exercises"] = [{"id": "0.1", "earned": "all of them"}]
    (other[2] / "grades.json").write_text(json.dumps(data))
    with pytest.raises(MergeError, match="malformed"):
        merge([folders[0], folders[1], other[2]], tmp_path / "m7")


def _normalised(path: Path) -> bytes:
    """A report's bytes, with the run's timestamp and durations (which differ between runs) blanked."""
    data = path.read_bytes()
    if path.name != "grades.json":
        return data
    report = json.loads(data)
    report["graded_at"] = ""
    for sub in report["submissions"]:
        for lesson in sub["lessons"].values():
            lesson["seconds"] = 0
    return json.dumps(report, indent=2, ensure_ascii=False).encode()


def assert_same_reports(expected: Path, got: Path) -> None:
    files = sorted(p.relative_to(expected) for p in expected.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(got) for p in got.rglob("*") if p.is_file() and p.name != "shard.json")
    for relative in files:
        assert _normalised(expected / relative) == _normalised(got / relative), f"{relative} differs"


# One small class through the instructor's door: whole, and as two merged shards -------------

FORGED_NAME = b"red\x1b[31m\n! forged_row                 13 of 13  100%"  # no "/" in a file name
HOSTILE_MESSAGE = '''def user_activity(ratings):
    import sys
    raise ValueError("cannot group " + sys.prefix + " " + str(globals().get("__file__")) + " " + "z" * 300_000)
'''


def _course(*args: str) -> subprocess.Popen:
    """``course ARGS`` as an instructor runs it, in a process of its own."""
    env = {**os.environ, "PYTHONPATH": str(Path(recsys_course.__file__).parents[1]), "COURSE_DATA": "synthetic"}
    return subprocess.Popen([sys.executable, "-m", "recsys_course.tooling.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="backslashreplace")


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    if problem() is not None:
        if os.environ.get("COURSE_REQUIRE_SANDBOX") == "1":
            raise RuntimeError(f"COURSE_REQUIRE_SANDBOX=1 but the sandbox cannot run: {problem()}")
        pytest.skip(f"no sandbox here: {problem()}")
    tmp = tmp_path_factory.mktemp("graded_class")
    root, outside = tmp / "class", tmp / "outside"
    root.mkdir(), outside.mkdir()
    malformed = build_malformed(root, outside)
    graded = {b"caf\xe9 renamed": renamed_reference(), b"exec_encoded": exec_of_encoded_reference(),
              b"honest": honest_solution().replace(
                  STUB[STUB.index("def user_activity("):STUB.index("\n# %%", STUB.index("def user_activity("))],
                  HOSTILE_MESSAGE)}
    for raw, text in graded.items():
        folder = os.fsencode(root) + b"/" + raw
        os.makedirs(folder + b"/lessons")
        Path(os.fsdecode(folder + b"/lessons/" + FILE.encode())).write_text(text, encoding="utf-8")
    os.mkdir(os.fsencode(root) + b"/" + FORGED_NAME)  # a name only: no lesson files
    _zip(root / "=SUM(A1)+cmd.zip", [(f"lessons/{FILE}", "x = 1\n")])  # nothing solved
    common = ["--lessons", "00", "--junit", "--timeout", "300", "--test-timeout", "120", "--cell-timeout", "120",
              "--memory-mb", "3000"]
    runs = {"single": [], "shard0": ["--shard", "0/2"], "shard1": ["--shard", "1/2"]}
    started = {k: _course("grade", str(root), "--out", str(tmp / k), *common, *extra) for k, extra in runs.items()}
    done = {k: (p.wait(timeout=900), *p.communicate()) for k, p in started.items()}
    merged = _course("merge", str(tmp / "shard1"), str(tmp / "shard0"), "--out", str(tmp / "merged"))
    done["merged"] = (merged.wait(timeout=300), *merged.communicate())
    return {"tmp": tmp, "out": tmp / "single", "runs": done, "malformed": malformed,
            "data": json.loads((tmp / "single" / "grades.json").read_text(encoding="utf-8"))}


def _by_source(graded_class) -> dict[str, dict]:
    return {s["source"]: s for s in graded_class["data"]["submissions"]}


def test_the_batch_finishes_with_a_report_for_every_malformed_submission(graded_class):
    for run, (code, _, err) in graded_class["runs"].items():
        assert code == 0, f"{run} exited with {code}: {err[-2000:]}"
    subs = _by_source(graded_class)
    for source, words in graded_class["malformed"].items():
        assert subs[source]["total"] == 0 and any(words in n for n in subs[source]["notes"]), subs[source]["notes"]
        assert (graded_class["out"] / "feedback" / f"{subs[source]['name']}.md").exists()
        assert (graded_class["out"] / "junit" / f"{subs[source]['name']}.xml").exists()
    for source in ("hard_link", "symlinked_root", "symlinked_file"):
        assert subs[source]["flags"], f"{source} hid a file from elsewhere: it must be flagged"


def test_an_undecodable_name_is_graded_under_a_safe_name(graded_class):
    sub = _by_source(graded_class)["caf\\xe9 renamed"]
    assert sub["name"] == "caf_renamed" and sub["total"] == sub["possible"] == 13
    assert sum("identical to the reference" in f for f in sub["flags"]) == 5, sub["flags"]


def test_code_loaded_at_run_time_is_flagged_and_honest_code_is_not(graded_class):
    subs = _by_source(graded_class)
    encoded = subs["exec_encoded"]
    assert encoded["total"] == 13, "the reference it runs earns the points: the flag is what tells"
    assert any("loads or decodes code" in f and "exec()" in f for f in encoded["flags"])
    assert subs["honest"]["flags"] == []
    honest = {e["id"]: e for e in subs["honest"]["exercises"]}
    assert honest["0.1"]["earned"] == 2 and honest["0.4"]["earned"] == 3 and honest["0.5"]["earned"] == 3
    assert honest["0.2"]["earned"] == 0 and len(honest["0.2"]["first_failure"]) <= MAX_MESSAGE


def test_reports_of_a_real_run_are_safe_to_open(graded_class):
    out = graded_class["out"]
    code, summary, progress = graded_class["runs"]["single"]
    assert "\x1b[31m" not in summary + progress and "\x1b]" not in summary + progress
    assert not any(line.lstrip("! ").startswith("forged_row") for line in summary.splitlines()), summary
    with open(out / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert "'=SUM(A1)+cmd.zip" in [r["source"] for r in rows]
    for path in (out / "junit").glob("*.xml"):
        ET.parse(path)
    feedback = "".join(p.read_text(encoding="utf-8") for p in (out / "feedback").glob("*.md"))
    for secret in (sys.prefix, "/tmp/course-batch-", str(CATALOG.root), str(graded_class["tmp"])):
        assert secret not in feedback, f"feedback quotes {secret}"
    honest = (out / "feedback" / "honest.md").read_text(encoding="utf-8")
    assert "cannot group &lt;python&gt; " in honest, "the sandbox's sys.prefix reached the message, replaced"


def test_two_shards_merge_into_the_single_runs_reports(graded_class):
    tmp = graded_class["tmp"]
    assert graded_class["runs"]["merged"][0] == 0, graded_class["runs"]["merged"][2]
    parts = [json.loads((tmp / k / "grades.json").read_text())["submissions"] for k in ("shard0", "shard1")]
    names = [s["name"] for part in parts for s in part]
    assert all(parts) and sorted(names) == sorted(s["name"] for s in graded_class["data"]["submissions"])
    assert_same_reports(graded_class["out"], tmp / "merged")
