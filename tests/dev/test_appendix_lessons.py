"""A lesson without exercises (an appendix, such as 10_scale_ladder) goes through the catalog,
the site's cards and banner, and the learners' and instructors' commands without pretending
it has something to check, and without running the whole test suite instead."""

from __future__ import annotations

from pathlib import Path

from recsys_course.tooling.catalog import Catalog, load_catalog, parse_lesson
from recsys_course.tooling.commands import learner
from recsys_course.tooling.grading.runner import run_tests
from recsys_course.tooling.site import pages
from recsys_course.tooling.site.markdown import banner

APPENDIX = parse_lesson('id: "10"\ntitle: An appendix\nblurb: Read numbers.\nexercises: []\n', "10_appendix", set())


def test_an_appendix_parses_without_exercises():
    assert APPENDIX.exercises == () and APPENDIX.points == 0 and APPENDIX.blurb == "Read numbers."


def test_the_home_page_card_says_appendix_not_zero_exercises():
    card = pages.lesson_cards(Catalog(Path("."), (APPENDIX,)), {"10": 12.0}, "synthetic data")
    assert "appendix, no exercises" in card and "0 exercises" not in card


def test_the_banner_offers_no_check_command():
    text = banner(APPENDIX, "synthetic data", None)
    assert "course check" not in text and "python lessons/10_appendix.py" in text


def test_grading_a_lesson_without_tests_runs_nothing(tmp_path):
    (tmp_path / "tests").mkdir()
    run = run_tests(tmp_path, ["10"], tests_dir=tmp_path / "tests")
    assert run.returncode == 0 and run.output == "", "no pytest run: without paths it would collect every test"
    assert run.report["exercises"] == [] and run.report["possible"] == 0


def test_check_and_watch_say_there_is_nothing_to_do(capsys):
    appendices = [lesson for lesson in load_catalog().lessons if not lesson.exercises]
    assert appendices, "the course has an appendix (10_scale_ladder)"
    assert learner.check(appendices[0].id) == 0
    assert "no exercises (an appendix): nothing to check" in capsys.readouterr().out
    assert learner.watch_queue(load_catalog(), set(), appendices[0].id) == []
