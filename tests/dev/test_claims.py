"""Claims on lesson pages: a false one fails the strict site build, a learner's run only
gets a notice, check cells stay off the page and generated sentences render as Markdown."""

import jupytext
import nbformat
import pytest

from recsys_course import claims
from recsys_course.tooling.catalog import Lesson
from recsys_course.tooling.lessons import make_stub
from recsys_course.tooling.site.markdown import to_markdown


def test_false_claim_raises_only_while_the_site_is_built(monkeypatch, capsys):
    monkeypatch.setenv(claims.STRICT_ENV, "1")
    with pytest.raises(claims.ClaimError, match="the towers beat popularity"):
        claims.claim(0.2 > 0.3, "the towers beat popularity")
    assert claims.claim(0.3 > 0.2, "the towers beat popularity") is True

    monkeypatch.delenv(claims.STRICT_ENV)
    assert claims.claim(False, "the towers beat popularity") is False
    assert "does not hold on the data of this run" in capsys.readouterr().err


def test_pick_returns_the_true_wording():
    assert claims.pick(1 < 2, "lower", "higher") == "lower"
    assert claims.pick(0, "lower", "higher") == "higher"


def test_say_prints_in_a_script(capsys):
    claims.say("EASE reaches **0.25**")
    assert capsys.readouterr().out == "EASE reaches **0.25**\n"


SOURCE = '''# %% [markdown]
# # Lesson 09
# The towers beat popularity.

# %% tags=["check"]
claim(True, "The towers beat popularity.")

# %%
say("generated")
'''


def test_check_cells_are_hidden_and_generated_markdown_is_rendered():
    lesson = Lesson("09", "09_test", "Test", ())
    executed = jupytext.reads(SOURCE, fmt="py:percent")
    executed.cells[2].outputs = [
        nbformat.v4.new_output("display_data", data={"text/markdown": "EASE reaches **0.25**"})
    ]
    stubs = jupytext.reads(make_stub(SOURCE, lesson), fmt="py:percent")
    markdown = to_markdown(lesson, executed, stubs, "Synthetic data").markdown
    assert "claim(True" not in markdown, "check cells must not appear on the page"
    assert "\nEASE reaches **0.25**\n" in markdown, "say() output is Markdown, not a code block"
    assert "```text\nEASE reaches" not in markdown


def test_strict_build_fails_on_a_false_claim(tmp_path):
    from test_site import ROOT, build_copy

    lesson00 = (ROOT / "solutions" / "00_introduction.py").read_text()
    guard = 'claim(sparsity(ratings) > 0.9, "Almost all of it is empty")'
    assert guard in lesson00, "the guarded sentence this test relies on has moved"
    false = lesson00.replace(guard, 'claim(sparsity(ratings) > 0.9999, "Almost all of it is empty")')
    done = build_copy(tmp_path, false)
    assert done.returncode != 0, "a false claim must fail mkdocs build --strict"
    assert "Almost all of it is empty" in done.stdout + done.stderr
