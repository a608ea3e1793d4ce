"""The sandbox boundary's data format (grading/wire.py) and the in-process guard's watch list.

No sandbox is started here: these are the properties the trusted side relies on whatever
a sandbox sends.
"""

import json

import numpy as np
import pandas as pd
import pytest

from recsys_course.tooling.grading import wire
from recsys_course.tooling.grading.guard import WATCHED, Guard


def refuse(value):
    raise wire.Unsendable(type(value).__name__)


def handles(value):
    return {"$h": 7}


def roundtrip(value, opaque=refuse, **hooks):
    tree, buffers = wire.encode(value, opaque)
    # Through real bytes, as on the pipe.
    import io

    stream = io.BytesIO()
    wire.write_message(stream, {"value": tree}, buffers)
    stream.seek(0)
    header, buffers = wire.read_message(stream)
    return wire.decode(header["value"], buffers, **hooks)


def test_plain_values_keep_their_exact_types():
    value = {"a": [1, 2.5, None, True, "x", b"\x00\xff"], (1, "k"): (float("nan"),), "s": {1, 2}}
    back = roundtrip(value)
    assert back["a"] == [1, 2.5, None, True, "x", b"\x00\xff"]
    assert [type(v) for v in back["a"]] == [int, float, type(None), bool, str, bytes]
    assert np.isnan(back[(1, "k")][0]) and back["s"] == {1, 2}


def test_arrays_frames_and_scalars_round_trip():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]  # not contiguous
    frame = pd.DataFrame({"user_id": ["a", "b"], "n": [1, 2], "mean": [1.5, np.nan]}, index=[10, 20])
    back = roundtrip({"array": array, "zero_d": np.array(3.0), "frame": frame,
                      "series": frame["n"], "scalar": np.int64(5), "text": np.array(["ab", "c"])})
    np.testing.assert_array_equal(back["array"], array)
    assert back["array"].dtype == np.float32
    assert back["zero_d"].shape == ()
    pd.testing.assert_frame_equal(back["frame"], frame)
    pd.testing.assert_series_equal(back["series"], frame["n"])
    assert type(back["scalar"]) is np.int64 and back["scalar"] == 5
    assert back["text"].tolist() == ["ab", "c"]


def test_an_always_equal_float_arrives_as_its_plain_value():
    class AlwaysEqual(float):
        def __eq__(self, other):
            return True

        __hash__ = float.__hash__

        def __float__(self):
            return 0.5  # lies, too: the base value is read with float's own method

    back = roundtrip(AlwaysEqual(0.123))
    assert type(back) is float and back == 0.123 and back != 0.5


def test_paths_are_data_and_tensors_carry_their_origin():
    from pathlib import Path, PurePosixPath

    back = roundtrip({"p": Path("/tmp/a b"), "q": PurePosixPath("rel/x")})
    assert back == {"p": Path("/tmp/a b"), "q": Path("rel/x")} and type(back["p"]).__name__ == "PosixPath"

    class MyPath(type(Path())):
        def __str__(self):
            return "/etc/passwd"  # a subclass could lie: it stays a handle

    assert roundtrip(MyPath("/tmp"), handles, handle=lambda number: "handle") == "handle"
    tree = {"$tf": {"$a": 0, "dtype": "<f4", "shape": [1]}, "h": 5}
    seen = []
    wire.decode(tree, [b"\x00\x00\x80?"], tensor=lambda array, number: seen.append((array.tolist(), number)))
    assert seen == [([1.0], 5)]
    with pytest.raises(wire.WireError):
        wire.decode({"$path": ["not", "text"]}, [])


def test_a_duck_type_stays_an_opaque_handle():
    class Anything:
        def __eq__(self, other):
            return True

    with pytest.raises(wire.Unsendable):
        wire.encode(Anything(), refuse)
    back = roundtrip(Anything(), handles, handle=lambda number: ("handle", number))
    assert back == ("handle", 7)


def test_a_list_subclass_is_not_flattened_into_a_list():
    class Tricky(list):
        def __iter__(self):
            return iter([1, 2, 3])

    assert roundtrip(Tricky([9]), handles, handle=lambda number: "handle") == "handle"


@pytest.mark.parametrize("tree, buffers", [
    ({"$a": 0, "dtype": "|O", "shape": [1]}, [b"\x00" * 8]),  # object dtype: pickle territory
    ({"$a": 0, "dtype": "<f8", "shape": [2]}, [b"\x00" * 8]),  # buffer too short for the shape
    ({"$a": 3, "dtype": "<f8", "shape": [1]}, [b"\x00" * 8]),  # no such buffer
    ({"$a": 0, "dtype": [["a", "<f8"]], "shape": [1]}, [b"\x00" * 8]),  # structured dtype
    ({"$h": 1}, []),  # a handle where none are accepted
    ({"$nope": 1}, []),
    ({"$s": "<f8", "v": {"$l": []}}, []),
])
def test_malformed_values_are_rejected(tree, buffers):
    with pytest.raises(wire.WireError):
        wire.decode(tree, buffers)


def test_a_deeply_nested_value_is_rejected():
    tree = None
    for _ in range(wire.MAX_DEPTH + 5):
        tree = {"$l": [tree]}
    with pytest.raises(wire.WireError):
        wire.decode(json.loads(json.dumps(tree)), [])


def test_every_watched_grader_function_exists_in_this_pytest():
    """A renamed pytest module must fail here, not silently leave a hole in the guard. A
    name listed under two modules (pytest moved it between versions) must exist in one."""
    guard = Guard()
    found = {path for module, path in guard.originals}
    missing = [f"{module}.{path}" for module, path in WATCHED if path not in found]
    assert missing == [], f"the guard watches names that do not exist (any more): {missing}"


def test_a_malformed_report_row_is_a_note_not_a_crash():
    from recsys_course.tooling.grading.batch import _rows
    from recsys_course.tooling.grading.results import ExerciseResult, ResultError

    good = {"id": "0.1", "title": "t", "points": 2, "earned": 1, "status": "partial", "first_failure": "",
            "tests": [{"nodeid": "f::test_a", "points": 1, "passed": True, "failure": "", "hidden": False},
                      {"nodeid": "f::test_b", "points": 1, "passed": False, "failure": "no", "hidden": True}]}
    assert ExerciseResult.from_json(good).hidden_status == "failed"
    assert ExerciseResult.from_json(ExerciseResult.from_json(good).to_json()) == ExerciseResult.from_json(good)
    bad = [{**good, "earned": "x"}, {**good, "earned": 2}, {**good, "points": 1}, {**good, "status": "great"}, "row"]
    for row in bad[:2]:
        with pytest.raises(ResultError):
            ExerciseResult.from_json(row)
    notes: list[str] = []
    rows = _rows({"exercises": [good, *bad]}, {"0.1": 2}, notes)
    assert list(rows) == ["0.1"] and rows["0.1"].earned == 1
    assert len(notes) == len(bad), notes
    # One run grades every lesson: another lesson's rows are neither taken nor a note.
    other = {**good, "id": "1.1", "points": 2, "earned": 2, "status": "passed",
             "tests": [{**good["tests"][0], "points": 2, "passed": True}]}
    notes = []
    assert list(_rows({"exercises": [good, other]}, {"0.1": 2}, notes)) == ["0.1"] and notes == []
