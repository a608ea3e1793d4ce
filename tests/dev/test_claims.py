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
    assert 'say("generated")' not in markdown, "a cell that only writes prose shows its prose, not its code"


def test_cells_that_also_show_other_outputs_keep_their_code():
    lesson = Lesson("09", "09_test", "Test", ())
    source = SOURCE + '\n# %%\nsay("x"); print("a result")\n\n# %% tags=["prose"]\ndef describe(): ...\n'
    executed = jupytext.reads(source, fmt="py:percent")
    executed.cells[3].outputs = [
        nbformat.v4.new_output("display_data", data={"text/markdown": "x", "text/plain": "<Markdown>"}),
        nbformat.v4.new_output("stream", name="stdout", text="a result\n"),
    ]
    stubs = jupytext.reads(make_stub(source, lesson), fmt="py:percent")
    markdown = to_markdown(lesson, executed, stubs, "Synthetic data").markdown
    assert 'print("a result")' in markdown, "a cell with a printed result shows its code"
    assert "def describe" not in markdown, "a cell tagged prose is hidden"


def test_strict_build_fails_on_a_false_claim(tmp_path):
    from test_site import ROOT, build_copy

    lesson00 = (ROOT / "solutions" / "00_introduction.py").read_text()
    guard = 'claim(sparsity(ratings) > 0.9, "Almost all of it is empty")'
    assert guard in lesson00, "the guarded sentence this test relies on has moved"
    false = lesson00.replace(guard, 'claim(sparsity(ratings) > 0.9999, "Almost all of it is empty")')
    done = build_copy(tmp_path, false)
    assert done.returncode != 0, "a false claim must fail mkdocs build --strict"
    assert "Almost all of it is empty" in done.stdout + done.stderr


# ------------------------------------------------------------- the comparison vocabulary

@pytest.mark.parametrize("value,kind,text", [
    (4096, "auto", "4,096"), (4096.0, "count", "4,096"), (0.23456, "metric", "0.235"),
    (0.051234, "metric", "0.0512"), (0.91314, "error", "0.9131"), (1.124, "error", "1.1240"), (12.3456, "error", "12.35"), (1.5, "seconds", "1.5 s"),
    (42.4, "seconds", "42 s"), (125, "seconds", "2 min 05 s"), (0.1234, "percent", "12.3 %"),
    (1.26, "ratio", "1.3x"), (1.1667, "number", "1.17"), (12345.6, "number", "12,346"),
    (0.1, "setting", "0.1"), (0.003, "setting", "0.003"), (500.0, "setting", "500"), (1e-5, "setting", "1e-05"),
    (-0.023, "metric", "\u22120.0230"), (float("nan"), "metric", "n/a"),
])
def test_fmt_writes_each_kind_of_number_one_way(value, kind, text):
    assert claims.fmt(value, kind) == text


def test_fmt_refuses_what_is_not_a_number():
    with pytest.raises(TypeError):
        claims.fmt(True)
    with pytest.raises(ValueError, match="unknown kind"):
        claims.fmt(1.0, "stars")


def test_signed_is_new_minus_old_with_one_minus_sign():
    assert claims.signed(0.913 - 0.936) == "\u22120.0230"
    assert claims.signed(0.0231) == "+0.0231"
    assert claims.signed(0.9131 - 0.9361, "error", like=0.9361) == "\u22120.0230", "the decimals of the values"
    assert claims.signed(0.00001, "error", like=0.9361) == "+0.0000"
    assert claims.signed(1500, "count", like=4096) == "+1,500"


def test_compare_says_about_the_same_inside_the_noise():
    inside = claims.compare(0.188, 0.187, se=0.004)
    assert inside.direction == "about the same" and not inside.better and not inside.worse
    assert inside.word() == "about the same as"
    above = claims.compare(0.238, 0.220, se=0.004)
    assert above.direction == "higher" and above.better and above.change() == "+0.018", "decimals of the values"
    assert str(above) == "0.238 higher than 0.220"


def test_compare_knows_when_lower_is_better():
    error = claims.compare(0.9114, 0.9131, noise=0.001, higher_is_better=False, kind="error")
    assert error.direction == "lower" and error.better
    slow = claims.compare(2.0, 1.0, noise=0.2, higher_is_better=False, kind="seconds")
    assert slow.worse and slow.relative == pytest.approx(1.0)


def test_compare_needs_exactly_one_noise_level():
    with pytest.raises(ValueError, match="exactly one"):
        claims.compare(1.0, 2.0)
    with pytest.raises(ValueError, match="exactly one"):
        claims.compare(1.0, 2.0, se=0.1, noise=0.1)
    with pytest.raises(ValueError, match=">= 0"):
        claims.compare(1.0, 2.0, noise=float("nan"))


def test_paired_standard_error_is_the_error_of_the_differences():
    from recsys_course.evaluation import paired_standard_error, standard_error

    a, b = [1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 2.0, 4.0]
    assert paired_standard_error(a, b) == pytest.approx(standard_error([1.0, 0.0, 1.0, 0.0]))
    assert standard_error([1.0, 0.0, 1.0, 0.0]) == pytest.approx(0.5773502691896258 / 2)
    import math

    assert math.isnan(paired_standard_error([1.0, float("nan")], [0.0, 1.0])), "one complete pair has no standard error"
    with pytest.raises(ValueError, match="same length"):
        paired_standard_error([1.0], [1.0, 2.0])
