"""Every lesson's prose against the rules of docs/authoring.md ("Prose that cannot drift from
the numbers"), read statically from ``solutions/NN_*.py``, one test per lesson and rule:

* no data-shaped number written by hand in a Markdown cell, unless a rule or this file's
  allow-list of facts (each with its reason) allows it;
* no ``pick``/``claim`` condition that orders two computed values without a noise threshold
  (``claims.compare``) or a stated margin, unless allowed below with its reason;
* no number formatted inside ``say``/``pick`` with a format spec instead of ``claims.fmt``.

The strict site build checks what each ``claim`` asserts on the data it runs with; these
tests catch what no build can (a stale number in a Markdown cell holds on no data at all).
"""

from http import HTTPStatus

import pytest

from recsys_course.tooling.catalog import load_catalog
from recsys_course.tooling.site import prose
from recsys_course.tooling.site.prose import Fact

ROOT = load_catalog().root
LESSONS = prose.lesson_sources(ROOT)

# The error statuses of HTTP (RFC 9110 and its extensions, as Python's http.HTTPStatus lists
# them): the codes a serving lesson names for each refusal.
HTTP_ERROR_STATUS = r"\b(?:" + "|".join(str(int(status)) for status in HTTPStatus if status >= 400) + r")\b"

# Phrases whose numbers are facts, not measurements of the page's data. Keep the reason
# precise: a source, a constant, or "illustration" for a worked example.
FACTS: dict[str, list[Fact]] = {
    "00": [
        Fact("100,000 ratings (1-5 stars) by 943 users on 1,682 movies",
             "MovieLens 100K's size, from its README (Harper and Konstan, 2015)"),
        Fact("For the real MovieLens 100K this is 1 - 100,000 / (943 × 1,682) ≈ 93.7 %",
             "arithmetic on MovieLens 100K's published size"),
        Fact("MovieLens 25M is above 99.7 %",
             "25,000,095 ratings by 162,541 users on 62,423 movies (MovieLens 25M README)"),
    ],
    "01": [
        Fact(r"In MovieLens 100K that matrix has $943 \times 1682 \approx 1.6$ million cells and "
             "100,000 ratings: about 94 % of it is empty",
             "MovieLens 100K's published size, named as such"),
        Fact('("off by 0.7 stars on average")', "illustration of how MAE reads"),
        Fact("A movie with 300 ratings", "illustration of the damping formula"),
        Fact("From the remaining 80 %", "1 - test_fraction, the code's 0.2"),
        Fact("the Surprise library reports 0.944 for its bias baseline, 0.934 for its SVD",
             "Surprise README, benchmark table"),
        Fact("and 0.919 for SVD++", "Surprise README, benchmark table"),
        Fact("an RMSE 10 % below Netflix's own system", "the Netflix Prize rules (2006)"),
    ],
    "02": [
        Fact("A Unix timestamp such as 880,000,000",
             "illustration: a timestamp of MovieLens 100K's period (late 1997)"),
        Fact("top-100 of 900 movies is much easier than top-100 of 9,742",
             "illustration with two catalogue sizes: the course's small synthetic data (900 movies) and "
             "ml-latest-small (9,742 movies, from its README)"),
        Fact("The tutorial trains on batches of 8,192 pairs",
             "the TFRS basic retrieval tutorial's setting (batch(8192), epochs=3), which course bench 02 reruns"),
    ],
    "03": [
        Fact("Many papers rank the held-out movie among only 100 sampled negatives",
             "the sampled protocol of the literature (He et al. 2017, NCF) that Krichene and Rendle (2020) examine"),
        Fact("(temperature 0.5, the 100 hardest negatives)",
             "settings of the lesson's benchmark, recsys_course/tooling/benchmarks/lesson_03.py "
             "(temperature=0.5, num_hard_negatives=100)"),
    ],
    "04": [
        Fact("the tutorial reports a test RMSE of about 1.1 on MovieLens 100K",
             "the TFRS basic ranking tutorial's reported test RMSE"),
        Fact(r"$1/\log_2 11 \approx 0.29$", "arithmetic: NDCG's discount at position 10"),
        Fact("TFRS's DCN tutorial reports a test RMSE of about 0.93",
             "the TFRS deep & cross network tutorial's reported test RMSE on MovieLens 100K"),
    ],
    "08": [
        Fact(r"\b850[01]\b", "TF Serving's ports: gRPC 8500 (--port), REST 8501 (--rest_api_port), as in its Docker "
             "guide; recsys_course.serving.DEFAULT_GRPC_PORT / DEFAULT_REST_PORT", regex=True),
        Fact(HTTP_ERROR_STATUS, "HTTP error status codes (http.HTTPStatus) that TF Serving and the practice server "
             "answer", regex=True),
        Fact("2,000 idle connections held open meanwhile, and its memory over 50,000 requests",
             "the defaults of scripts/bench_serving.py (--idle 2000, --rss-requests 50,000)"),
    ],
    "09": [
        Fact("64-dimensional float32 embeddings is 25.6 GB",
             "arithmetic: 10^8 rows x 64 x 4 bytes; the table below computes it with table_gigabytes"),
        Fact("(say 1-5 %)", "illustration: a small canary share of traffic, a choice, not a measurement"),
    ],
}

# pick/claim conditions allowed to order two values without a noise threshold, by lesson,
# as ast.unparse writes them, with the reason.
EXACT_COMPARISONS: dict[str, dict[str, str]] = {
    "00": {
        "np.median(movie_counts) < movie_counts.mean()":
            "describes the skew of this data's counts; no estimate is compared",
    },
    "01": {
        "c['fit'].iloc[-1] < c['fit'].iloc[0]":
            "the error on the fitting data itself falls: a fact of this optimisation, not an estimate",
    },
    "02": {
        "recall_table['recall@k, seen masked'] >= recall_table['recall@k, unmasked']":
            "masking removes only movies rated in training, never a test movie, so no test movie's rank can "
            "fall: true by construction on any data, not an estimate",
        "corrected_rows['learning_rate'] < RECIPE['learning_rate']":
            "selects the rows of the recorded grid with a lower learning rate than the recipe's: a filter",
        "lower_rates['best_epoch'] > at_recipe['best_epoch']":
            "whole numbers of epochs read from the recorded search, which the sentence reports as such",
        "r > 0": "picks the first user with a repeated movie (a count) to show: no estimate is compared",
    },
    "07": {
        "column.iloc[-1] > column.iloc[0]":
            "one fixed index searched deeper: Annoy inspects a superset of candidates as search_k grows, so the "
            "recall column is determined by the index, not an estimate",
        "dot_beaten > reduction_beaten":
            "counts of settings matched or beaten within the stated tolerances (SPEED_NOISE, RECALL_NOISE); "
            "the noise is handled per setting, and two counts compare exactly",
    },
}

def lessons(rule: str):
    return [pytest.param(key, id=f"{rule}-{key}") for key in LESSONS]


def _report(key: str, what: str, findings) -> str:
    return f"lesson {key}: {len(findings)} {what}:\n" + "\n".join(f"  {finding}" for finding in findings)


@pytest.mark.parametrize("key", lessons("numbers"))
def test_no_hand_written_data_numbers_in_prose(key):
    source = LESSONS[key].read_text(encoding="utf-8")
    facts = FACTS.get(key, [])
    stale = prose.stale_facts(source, facts)
    assert not stale, f"lesson {key}: allow-listed facts no longer in the lesson, remove them: {stale}"
    findings = prose.unguarded_numbers(source, facts)
    assert not findings, _report(
        key, "hand-written numbers in Markdown (generate them with claims.say/fmt, or list a fact "
        "with its reason in tests/dev/test_prose.py)", findings,
    )


@pytest.mark.parametrize("key", lessons("comparisons"))
def test_comparisons_in_prose_state_their_noise(key):
    source = LESSONS[key].read_text(encoding="utf-8")
    allowed = EXACT_COMPARISONS.get(key, {})
    findings = prose.noiseless_comparisons(source)
    unused = set(allowed) - {finding.text for finding in findings}
    assert not unused, f"lesson {key}: allowed comparisons no longer in the lesson, remove them: {unused}"
    findings = [finding for finding in findings if finding.text not in allowed]
    assert not findings, _report(
        key, "pick/claim conditions ordering two values without a noise threshold (use "
        "claims.compare(value, reference, se=... | noise=...))", findings,
    )


@pytest.mark.parametrize("key", lessons("formats"))
def test_numbers_in_generated_prose_use_the_vocabulary(key):
    findings = prose.hand_formatted_numbers(LESSONS[key].read_text(encoding="utf-8"))
    assert not findings, _report(
        key, "numbers formatted by hand in say()/pick() (use claims.fmt or claims.signed)", findings
    )


# ------------------------------------------------------------------ the rules themselves

LESSON = '''# %% [markdown]
# # Lesson 99 · Test
#
# ## 3. A section
#
# Exercise 9.2 and lessons 01, 02 and 07 come first; Covington et al. (2016) and
# the Netflix Prize (2006-2009) too. The top 10 and k = 32 are explanation, as is
# `recall = 0.913` in code, [a link](https://x.org/1234) and recall@100.
# MovieLens 100K and Python 3.11 are names. We hold out 20 % of the ratings. Issue 619,
# pull request 628 and the exercises (9.1 to 9.3) are references; a 503 is a rule's fact.
# The model reaches 0.913, a change of +0.023 stars, fitted on 80,000 ratings;
# the batch is 1,024 pairs and 95 % of users. Our fact: 943 users.
#
# ## Further reading
#
# - A. Author. *Paper.* Venue 42(4), 2020, pages 101-123.

# %%
test_fraction = 0.2
batch = 1024
print(f"{0.5:.3f}")
say(f"EASE reaches {recall:.3f} with {n:,} users and {name}")
pick(a > b, "higher", "lower")
pick(a > 1.5 * b, "higher", "lower")
pick(len(x) > len(y), "more", "fewer")
beats = model_recall > ease_recall
claim(beats, "beats")
pick(gain > 0, "lowers", "does not lower")
pick(compare(a, b, se=s).better, "better", "not better")
pick(share >= 0.3, "a large leak", "a small leak")
pick(cost <= MAX_LOSS, "within budget", "over budget")
pick(found < K, "missed some", "found all")
'''


def test_numbers_rule_flags_measurements_and_allows_facts():
    facts = [Fact("Our fact: 943 users", "test"), Fact(r"\ba 50[34]\b", "test", regex=True)]
    found = [finding.text for finding in prose.unguarded_numbers(LESSON, facts)]
    assert found == ["0.913", "+0.023", "80,000", "95 %"], found
    assert "503" in [finding.text for finding in prose.unguarded_numbers(LESSON, facts[:1])]
    line = next(f for f in prose.unguarded_numbers(LESSON) if f.text == "0.913").line
    assert LESSON.splitlines()[line - 1].startswith("# The model reaches 0.913")
    assert prose.stale_facts(LESSON, [Fact("943 users", "x"), Fact("not there", "y")]) == [Fact("not there", "y")]


def test_comparison_rule_flags_orderings_without_noise():
    found = [finding.text for finding in prose.noiseless_comparisons(LESSON)]
    assert found == ["a > b", "model_recall > ease_recall", "gain > 0"], found


def test_format_rule_flags_format_specs_in_generated_prose_only():
    found = [finding.text for finding in prose.hand_formatted_numbers(LESSON)]
    assert found == ["{recall:.3f}", "{n:,}"], found
