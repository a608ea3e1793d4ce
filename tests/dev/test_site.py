"""The site renderer: exercise cells become task boxes, outputs become Markdown, and a
strict build fails on a failing cell or a broken link."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from recsys_course.tooling.catalog import Exercise, Lesson, load_catalog
from recsys_course.tooling.lessons import make_stub
from recsys_course.tooling.site.markdown import to_markdown

ROOT = load_catalog().root
LESSON = Lesson(
    "09", "09_test", "Test",
    (Exercise("9.1", "Double it", 2, "double", ("gentle", "explicit"), "09"),),
)
SOURCE = '''# %% [markdown]
# # Lesson 09

# %% tags=["exercise"] exercise="9.1"
def double(x):
    # BEGIN SOLUTION
    return 2 * x
    # END SOLUTION

# %%
print("I0000 00:00:1.1 123 port.cc:153] oneDNN noise")
print("result", double(2))
'''


def executed_notebook():
    nb = jupytext.reads(SOURCE, fmt="py:percent")
    nb.cells[2].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="I0000 00:00:1.1 123 port.cc:153] oneDNN noise\nresult 4\n"),
        nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="}),
    ]
    return nb


def test_exercise_cell_becomes_a_task_box_with_hints_and_folded_solution():
    stubs = jupytext.reads(make_stub(SOURCE, LESSON), fmt="py:percent")
    page = to_markdown(LESSON, executed_notebook(), stubs, "Synthetic data")
    md = page.markdown
    assert '!!! question "Exercise 9.1 · Double it · 2 points"' in md
    assert "`course check 9.1`" in md and "NotImplementedError" in md
    assert '??? tip "Hint 1 of 2"' in md and '??? tip "Hint 2 of 2"' in md
    solution = md.split('??? success "Solution"')[1]
    assert "return 2 * x" in solution and "BEGIN SOLUTION" not in md
    assert md.index("Hint 1 of 2") < md.index("Hint 2 of 2") < md.index("Solution")
    assert "Synthetic data" in md.split("Exercise 9.1")[0], "the dataset banner comes first"


def test_outputs_keep_results_drop_log_noise_and_extract_figures():
    stubs = jupytext.reads(make_stub(SOURCE, LESSON), fmt="py:percent")
    page = to_markdown(LESSON, executed_notebook(), stubs, "x")
    assert "```text\nresult 4\n```" in page.markdown, "the log line must be dropped from the output"
    (name,) = page.figures
    assert f"]({name})" in page.markdown and page.figures[name].startswith(b"\x89PNG")


def build_copy(tmp_path: Path, solution: str, extra_page: str = "") -> subprocess.CompletedProcess:
    """Build a minimal copy of the site (lesson 00 only) with ``mkdocs build --strict``."""
    for name in ("mkdocs.yml",):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copytree(ROOT / "overrides", tmp_path / "overrides")
    hook = tmp_path / "src" / "recsys_course" / "tooling" / "site"
    hook.mkdir(parents=True)
    shutil.copy(ROOT / "src" / "recsys_course" / "tooling" / "site" / "hook.py", hook / "hook.py")
    (tmp_path / "solutions").mkdir()
    shutil.copy(ROOT / "solutions" / "00_introduction.yml", tmp_path / "solutions")
    (tmp_path / "solutions" / "00_introduction.py").write_text(solution)
    if extra_page:
        (tmp_path / "docs" / "learners.md").write_text(extra_page)
    env = {**os.environ, "COURSE_DATA": "synthetic", "COURSE_ROOT": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def lesson00():
    return (ROOT / "solutions" / "00_introduction.py").read_text()


def test_strict_build_fails_on_a_failing_cell(tmp_path, lesson00):
    broken = lesson00.replace('print("Dataset:", data.summary())', 'print("Dataset:", data.summary())\n1 / 0')
    done = build_copy(tmp_path, broken)
    assert done.returncode != 0
    assert "ZeroDivisionError" in done.stdout + done.stderr


def test_strict_build_fails_on_a_broken_link(tmp_path, lesson00):
    done = build_copy(tmp_path, lesson00, "# Learners\n\nSee [the missing page](nowhere.md).\n")
    assert done.returncode != 0
    assert "nowhere.md" in done.stdout + done.stderr


def test_keras_epoch_logs_become_one_line_per_epoch_and_long_outputs_fold():
    from recsys_course.tooling.site.markdown import FOLD_LINES, clean_stream, text_output

    log = "".join(
        f"Epoch {e}/3\n 1/10 [==>...........] - ETA: 1s - loss: 0.9\r10/10 [==============================]"
        f" - 1s 5ms/step - loss: 0.{9 - e} - val_loss: 0.{8 - e}\n"
        for e in (1, 2, 3)
    )
    assert clean_stream(log).splitlines() == [
        "epoch 1/3  loss: 0.8 · val_loss: 0.7",
        "epoch 2/3  loss: 0.7 · val_loss: 0.6",
        "epoch 3/3  loss: 0.6 · val_loss: 0.5",
    ]
    verbose2 = "Epoch 1/40\n26/26 - 8s - loss: 1.4717 - val_rmse: 1.1581 - 8s/epoch - 303ms/step\n"
    assert clean_stream(verbose2) == "epoch  1/40  loss: 1.4717 · val_rmse: 1.1581"
    tf_log = "I0000 00:00:1796126540.129639   10506 port.cc:153] oneDNN custom operations are on.\n"
    assert clean_stream(tf_log + "kept\n") == "kept", "TensorFlow's C++ log lines stay off the page"
    assert "Output" not in text_output("short") and "cell-output" in text_output("short")
    long = "\n".join(str(i) for i in range(FOLD_LINES + 1))
    assert text_output(long).startswith('??? output no-copy "Output (')


def test_build_machine_paths_are_shortened(tmp_path):
    from recsys_course.tooling.site.markdown import short_paths

    root = tmp_path / "course"
    text = f"data in {root}/data, shared {tmp_path}/shared/ml, home {Path.home()}/x, tmp /tmp/abc"
    assert short_paths(text, root) == "data in ./data, shared ../shared/ml, home ~/x, tmp $TMPDIR/abc"
    assert short_paths(f"--mount source={root}/models,target=/m", root) == "--mount source=$PWD/models,target=/m"


def test_references_are_merged_across_lessons_one_line_each():
    from recsys_course.tooling.site.references import page

    a = "- A. Author, B. Author. *Some Paper.* Venue 42,\n  2020. <https://doi.org/x>\n- Guide: <https://example.org/guide>"
    b = "- A. Author et al. *Some paper.* Venue 2020.\n- Other guide: <https://example.org/guide/>"
    text = page([("lessons/01_a.md", "01", a), ("lessons/03_b.md", "03", b)])
    items = [line for line in text.splitlines() if line.startswith("- ")]
    assert len(items) == 2, items
    paper = next(item for item in items if "Some Paper" in item)
    assert "Venue 42, 2020. <https://doi.org/x>" in paper, "the fullest entry, joined into one line"
    assert "[01](lessons/01_a.md), [03](lessons/03_b.md)" in paper


def test_dataframes_hide_the_default_index_and_show_a_dash_for_missing_values():
    import pandas as pd

    from recsys_course.tooling.site.kernel_setup import dataframe_html, format_number

    html = dataframe_html(pd.DataFrame({"rmse": [0.91312, float("nan")], "n": [1234, 5]}))
    assert "–" in html and "nan" not in html.lower().replace("dataframe", "")
    assert "0.9131" in html and "1,234" in html and "row_heading" not in html
    named = dataframe_html(pd.DataFrame({"x": [1.5]}, index=pd.Index(["als"], name="model")))
    assert "als" in named
    pivot = dataframe_html(pd.DataFrame([[1.0, 2.0]], columns=[0.05, 0.15]))
    assert ">0.05<" in pivot and ">0.15<" in pivot and "0.050000" not in pivot, "column labels are formatted too"
    assert format_number(0.00003) == "3.00e-05" and format_number(12345.6) == "12,346"


def cells(html: str, column: int) -> list[str]:
    import re

    return re.findall(rf'<td id="T_t_row\d+_col{column}" class="([^"]*)" >([^<]*)</td>', html)


def test_table_columns_are_formatted_as_one_and_text_reads_from_the_left():
    import numpy as np
    import pandas as pd

    from recsys_course.tooling.site.kernel_setup import dataframe_html

    frame = pd.DataFrame({
        "movie_id": [1234, 56], "timestamp": [881250949, 891250949], "user_rating": [3.0, 5.0],
        "recall": [0.2590, 0.210712], "batch_size": [4096.0, 512.0], "movie_title": ["Toy Story (1995)", "Heat"],
        "rmse": [1.127123, 0.913123], "lambda": [0.0, 0.05], "fit seconds": [0.0, 21.9735],
        "cosine": np.float32([0.537, 0.486]).astype(float),
    })
    html = dataframe_html(frame)
    assert [text for _, text in cells(html, 0)] == ["1234", "56"], "ids have no thousands separator"
    assert [text for _, text in cells(html, 1)] == ["1997-12-04 15:55", "1998-03-30 09:42"], "timestamps are dates"
    assert [text for _, text in cells(html, 2)] == ["3", "5"], "whole ratings are integers, not 3.000"
    assert [text for _, text in cells(html, 3)] == ["0.2590", "0.2107"], "one number of decimals per column"
    assert [text for _, text in cells(html, 4)] == ["4,096", "512"], "a whole float is an integer"
    assert [text for _, text in cells(html, 6)] == ["1.1271", "0.9131"]
    assert [text for _, text in cells(html, 7)] == ["0.00", "0.05"], "typed parameters shown as typed"
    assert [text for _, text in cells(html, 8)] == ["0", "22"], "durations to two significant digits"
    assert [text for _, text in cells(html, 9)] == ["0.537", "0.486"], "float32 values the lesson rounded"
    assert all("text" in classes.split() for classes, _ in cells(html, 5) + cells(html, 0))
    assert not any("text" in classes.split() for classes, _ in cells(html, 3))
    assert 'class="col_heading level0 col5 text"' in html, "a text column's header is aligned with it"
    assert ">1,234<" in dataframe_html(pd.DataFrame([[1234, 2]], columns=["a", "a"])), "duplicate labels still render"


def test_site_stamp_tells_a_current_build_from_a_stale_one(tmp_path):
    from recsys_course.tooling.site import stamp

    root, site = tmp_path / "course", tmp_path / "course" / "site"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "index.md").write_text("# Home\n")
    (root / "mkdocs.yml").write_text("site_name: x\n")
    site.mkdir()
    assert "no finished build" in stamp.why_stale(site, root, ["00"], None)
    stamp.write(site, root, "synthetic", ["00"])
    assert stamp.why_stale(site, root, ["00"], None) is None
    assert stamp.why_stale(site, root, ["00"], "synthetic") is None
    assert "COURSE_DATA=tfds" in stamp.why_stale(site, root, ["00"], "tfds")
    assert "COURSE_SITE_LESSONS" in stamp.why_stale(site, root, ["00", "01"], None)
    (root / "docs" / "index.md").write_text("# Home, edited\n")
    assert "changed" in stamp.why_stale(site, root, ["00"], None)


def test_pages_name_the_dataset_as_readers_know_it():
    from recsys_course.tooling.site.markdown import reader_name

    assert reader_name("local:/tmp/data/ml-100k", "MovieLens 100K with demographics from /tmp/data/ml-100k") == (
        "MovieLens 100K (GroupLens)")
    assert reader_name("tfds", "MovieLens 100K via TFDS (/root/tensorflow_datasets)") == "MovieLens 100K (TFDS)"
    assert reader_name("synthetic", "Synthetic MovieLens-shaped data (small, seed 0)") == (
        "synthetic MovieLens-shaped data (small)")
    assert reader_name("local:/x/ml-latest-small", "MovieLens (ml-latest-small) from /x/ml-latest-small") == (
        "MovieLens ml-latest-small (GroupLens)")
    assert reader_name("tfds:1m", "MovieLens 1M via TFDS (/root/tensorflow_datasets)") == "MovieLens 1M (TFDS)"
    assert reader_name("local:/d/ml-10M100K", "MovieLens 10M from /d/ml-10M100K") == "MovieLens 10M (GroupLens)"


def test_outputs_name_the_data_without_its_path_and_wide_figures_scroll_on_phones():
    from recsys_course.tooling.site.markdown import Page, render_outputs

    description = "MovieLens 100K with demographics from /somewhere/ml-100k"
    outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"Dataset: {description}: 100 ratings\n"),
        nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="},
                               metadata={"image/png": {"width": 700, "height": 250}}),
    ]
    blocks = render_outputs(outputs, "fig", Page(""), aliases={description: "MovieLens 100K (GroupLens)"})
    assert "Dataset: MovieLens 100K (GroupLens): 100 ratings" in blocks[0] and "/somewhere" not in blocks[0]
    assert blocks[1].startswith('<div class="figure-wide" markdown>')


def test_home_page_cards_and_exercise_index_come_from_the_catalog():
    from recsys_course.tooling.catalog import Catalog
    from recsys_course.tooling.site import pages

    lesson = Lesson("09", "09_test", "Test", LESSON.exercises, "Build a thing.")
    catalog = Catalog(ROOT, (lesson,))
    cards = pages.lesson_cards(catalog, {"09": 125.0}, "synthetic MovieLens-shaped data (small)")
    assert "[09 · Test](lessons/09_test.md)" in cards and "Build a thing." in cards
    assert "runs in 2 min 05 s" in cards and "1 exercises, 2 points" in cards
    assert "CPU" not in cards
    index = pages.exercise_index(catalog)
    assert '"Every exercise: 1 exercises, 2 points"' in index
    assert "[9.1 · Double it](lessons/09_test.md#exercise-9-1) | 2 |" in index
    stubs = jupytext.reads(make_stub(SOURCE, LESSON), fmt="py:percent")
    assert '<span id="exercise-9-1"></span>' in to_markdown(LESSON, executed_notebook(), stubs, "x").markdown


def test_reading_time_counts_prose_and_shown_code_not_folded_solutions():
    from recsys_course.tooling.site.pages import reading_minutes, with_reading_time

    prose = " ".join(["word"] * 400)
    assert reading_minutes(prose) == 2
    code = "```python\n" + "x = 1\n" * 60 + "```"
    assert reading_minutes(prose + "\n\n" + code) == 4
    folded = '??? success "Solution"\n    ```python\n' + "    x = 1\n" * 600 + "    ```\n"
    assert reading_minutes(prose + "\n\n" + folded) == 2
    page = with_reading_time("# Title\n\n" + prose)
    assert page.startswith("# Title\n\n<p class=\"reading-time\"") and "About 2 min to read" in page


def test_glossary_terms_are_linked_once_outside_code_and_headings():
    from recsys_course.tooling.site.pages import glossary_anchors, link_terms, parse_glossary

    glossary = (ROOT / "docs" / "glossary.md").read_text()
    terms = parse_glossary(glossary)
    names = {term.name for term in terms}
    for needed in ("EASE", "MMR", "BPR", "Recall@k", "LogQ correction", "Accidental hits", "NDCG@k",
                   "Hit rate@k", "Precision@k", "Coverage@k", "Novelty@k", "Intra-list diversity@k"):
        assert needed in names, f"the glossary lacks {needed}"
    html = ("<h2>EASE</h2><p>We fit <code>EASE</code>, then EASE again, and recall@10 "
            "with accidental hits; ease is a word.</p><table><td>NDCG@10</td></table><p>NDCG@10 here.</p>")
    linked = link_terms(html, terms, "../../glossary/")
    assert linked.count('href="../../glossary/#ease"') == 1
    assert "<h2>EASE</h2>" in linked and "<code>EASE</code>" in linked
    assert '#ease" title="Embarrassingly shallow autoencoder' in linked
    assert '>recall@10</a>' in linked and '#recall-at-k"' in linked
    assert '#accidental-hits"' in linked and ">ease is" not in linked.replace("</a> is", "")
    assert "<td>NDCG@10</td>" in linked and '#ndcg-at-k" title=' in linked and '>NDCG@10</a> here' in linked
    page = glossary_anchors("<dl><dt><strong>EASE</strong> (02)</dt><dd>x</dd></dl>", terms)
    assert '<dt id="ease">' in page


def test_every_lesson_has_a_one_line_blurb_for_the_home_page():
    missing = [lesson.slug for lesson in load_catalog().lessons if not lesson.blurb]
    assert not missing, f"add a one-line `blurb:` to solutions/<lesson>.yml of: {missing}"
    long = [lesson.slug for lesson in load_catalog().lessons if len(lesson.blurb) > 200]
    assert not long, f"blurbs are one line (at most 200 characters): {long}"
