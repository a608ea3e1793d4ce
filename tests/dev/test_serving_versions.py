"""Model versions on the practice server: a new version dropped in while it runs is picked up,
an export renamed into place is never served half-written, a broken version does not take
the service down, config files pin versions and labels (canary, rollback), warm-up records
are replayed, and the command-line server starts with one command and stops on Ctrl-C."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import recsys_course  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow is imported)

import pytest

from recsys_course.serving.client import RestClient, ServingError
from recsys_course.serving.export import model_config_text, save_version
from recsys_course.serving.server import PracticeServer
from toy_models import Scaler

POLL = 0.1


def export_scaler(model_dir: Path, version: int, **kwargs) -> Path:
    """Version ``v`` multiplies by ``v``, so every answer says which version produced it."""
    scaler = Scaler(float(version))
    return save_version(scaler, model_dir, version, signatures={"serving_default": scaler.serve}, **kwargs)


def answer(client: RestClient, **address) -> float:
    return client.predict("scaler", {"instances": [1.0]}, **address)["predictions"][0]


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


@pytest.fixture
def scaler_server(tmp_path):
    model_dir = tmp_path / "scaler"
    export_scaler(model_dir, 1)
    server = PracticeServer(model_base_path=model_dir, model_name="scaler", port=0, poll_seconds=POLL).start()
    client = RestClient(server.rest_url, timeout=30)
    try:
        yield model_dir, server, client
    finally:
        client.close()
        server.stop()


def test_new_version_is_picked_up_and_old_one_unloaded(scaler_server):
    model_dir, _, client = scaler_server
    assert answer(client) == 1.0
    export_scaler(model_dir, 2)
    client.wait_for_version("scaler", 2, timeout=30)
    assert answer(client) == 2.0, "plain requests must go to the highest version"
    wait_until(lambda: client.available_versions("scaler") == [2])
    states = {row["version"]: row["state"] for row in client.status("scaler")["model_version_status"]}
    assert states == {"2": "AVAILABLE", "1": "END"}, f"latest policy: expected v2 AVAILABLE, v1 END, got {states}"
    with pytest.raises(ServingError) as raised:
        answer(client, version=1)
    assert raised.value.status == 404


def test_versions_are_ordered_numerically(scaler_server):
    model_dir, _, client = scaler_server
    for version in (9, 10):
        export_scaler(model_dir, version)
    client.wait_for_version("scaler", 10, timeout=30)
    assert answer(client) == 10.0, "version 10 is newer than version 9 (numeric, not string, order)"


def test_export_renamed_into_place_is_never_served_half_written(scaler_server):
    """While version 2 is copied file by file into a hidden folder (slower than the poll
    interval), every answer still comes from version 1; after the rename, from version 2."""
    model_dir, _, client = scaler_server
    built = export_scaler(model_dir.parent / "build", 2)
    answers, errors, stop = [], [], threading.Event()

    def hammer() -> None:
        own = RestClient(client.url, timeout=30)
        while not stop.is_set():
            try:
                answers.append(answer(own))
            except Exception as error:  # counted below
                errors.append(repr(error))
        own.close()

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        staging = model_dir / ".incoming-2"
        for source in sorted(built.rglob("*")):
            target = staging / source.relative_to(built)
            if source.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                time.sleep(3 * POLL)  # several polls see the partial copy
        assert set(answers) == {1.0}, f"only version 1 may answer before the rename, got {sorted(set(answers))}"
        assert client.available_versions("scaler") == [1]
        os.rename(staging, model_dir / "2")
        client.wait_for_version("scaler", 2, timeout=30)
        time.sleep(3 * POLL)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors, f"{len(errors)} requests failed during the roll-out, e.g. {errors[:3]}"
    assert answers[-1] == 2.0 and set(answers) == {1.0, 2.0}


def test_a_broken_version_is_reported_and_the_previous_one_keeps_serving(scaler_server):
    model_dir, server, client = scaler_server
    broken = model_dir / "2"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"this is not a protocol buffer")
    wait_until(lambda: any(row["version"] == "2" and row["state"] == "END"
                           for row in client.status("scaler")["model_version_status"]))
    row = client.status("scaler", version=2)["model_version_status"][0]
    assert row["status"]["error_message"], "a failed load must carry an error message"
    assert answer(client) == 1.0, "version 1 must keep serving while version 2 is broken"
    shutil.rmtree(broken)  # roll back by removing the bad version
    export_scaler(model_dir, 3)
    client.wait_for_version("scaler", 3, timeout=30)
    assert answer(client) == 3.0


def test_config_file_pins_versions_labels_and_rolls_back(tmp_path):
    model_dir = tmp_path / "models" / "scaler"
    for version in (1, 2):
        export_scaler(model_dir, version)
    config = tmp_path / "models" / "models.config"

    def write(**policy) -> None:
        staging = config.with_suffix(".tmp")
        staging.write_text(model_config_text({"scaler": model_dir}, **policy))
        os.replace(staging, config)

    write(versions={"scaler": [1, 2]}, labels={"scaler": {"stable": 1, "canary": 2}})
    with PracticeServer(model_config_file=config, port=0, poll_seconds=POLL) as server:
        client = RestClient(server.rest_url, timeout=30)
        assert client.available_versions("scaler") == [1, 2]
        assert answer(client, label="stable") == 1.0
        assert answer(client, label="canary") == 2.0
        assert answer(client, version=1) == 1.0
        assert client.status("scaler", label="canary")["model_version_status"][0]["version"] == "2"
        # roll back: serve only version 1, under the stable label
        time.sleep(0.02)  # a new modification time for the config file
        write(versions={"scaler": [1]}, labels={"scaler": {"stable": 1}})
        wait_until(lambda: client.available_versions("scaler") == [1])
        assert answer(client) == 1.0
        with pytest.raises(ServingError) as raised:
            answer(client, label="canary")
        assert raised.value.status == 400, "a label the config no longer defines is INVALID_ARGUMENT, as in TF Serving"
        client.close()


def test_warmup_requests_are_replayed_before_the_version_is_available(tmp_path):
    model_dir = tmp_path / "scaler"
    export_scaler(model_dir, 1, warmup_requests=[{"x": [1.0, 2.0]}, {"x": [3.0]}], model_name="scaler")
    with PracticeServer(model_base_path=model_dir, model_name="scaler", port=0, poll_seconds=POLL) as server:
        assert any("warmed up with 2 requests" in line for line in server.repository.events), server.repository.events
        client = RestClient(server.rest_url)
        assert answer(client) == 1.0
        client.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_command_line_server_starts_and_stops_on_ctrl_c(tmp_path):
    model_dir = tmp_path / "models" / "scaler"
    export_scaler(model_dir, 1)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "recsys_course.serving", "--model-base-path", str(tmp_path / "models"),
         "--port", str(port), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C to stop" in line:
                break
        assert "Press Ctrl-C to stop" in "".join(lines), "".join(lines)[-2000:]
        assert "stand-in for TensorFlow Serving" in "".join(lines)
        client = RestClient(f"http://127.0.0.1:{port}", timeout=30)
        assert answer(client) == 1.0
        client.close()
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, f"expected a clean exit after Ctrl-C, got {process.returncode}: {output[-1000:]}"
        assert "stopped" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_an_empty_numeric_folder_does_not_change_the_layout(tmp_path):
    """``mkdir models/2024`` under a folder of models must not turn it into one model's base
    path (which unloaded every model: issue 19)."""
    models = tmp_path / "models"
    export_scaler(models / "scaler", 1)
    with PracticeServer(model_base_path=models, port=0, poll_seconds=POLL) as server:
        client = RestClient(server.rest_url, timeout=30)
        try:
            assert answer(client) == 1.0
            (models / "2024").mkdir()
            (models / "7").mkdir()
            export_scaler(models / "scaler", 2)
            client.wait_for_version("scaler", 2, timeout=30)  # polls keep running meanwhile
            time.sleep(20 * POLL)
            assert answer(client) == 2.0
            assert server.repository.model_names() == ["scaler"]
        finally:
            client.close()


def test_empty_base_path_waits_for_its_first_version(tmp_path):
    """An empty base path decides nothing; an empty numeric folder decides nothing; the first
    complete version does (one model's base path)."""
    base = tmp_path / "scaler"
    (base / "3").mkdir(parents=True)
    with PracticeServer(model_base_path=base, port=0, poll_seconds=POLL) as server:
        client = RestClient(server.rest_url, timeout=30)
        try:
            assert server.repository.model_names() == []
            export_scaler(base, 4)
            client.wait_for_version("scaler", 4, timeout=30)
            assert answer(client) == 4.0
        finally:
            client.close()


def test_a_failed_version_is_retried_with_back_off_until_it_loads(tmp_path):
    """Copy saved_model.pb first and the variables later (issue 19): the version fails, is
    retried with growing waits, and loads once its files are complete."""
    complete = export_scaler(tmp_path / "staging", 2)
    model_dir = tmp_path / "scaler"
    export_scaler(model_dir, 1)
    with PracticeServer(model_base_path=model_dir, model_name="scaler", port=0, poll_seconds=POLL) as server:
        client = RestClient(server.rest_url, timeout=30)
        try:
            (model_dir / "2").mkdir()
            shutil.copy2(complete / "saved_model.pb", model_dir / "2" / "saved_model.pb")
            wait_until(lambda: sum("version 2 failed to load" in e for e in server.repository.events) >= 3)
            failures = [e for e in server.repository.events if "version 2 failed to load" in e]
            waits = [float(e.split("retry in ")[1].split(" s")[0]) for e in failures]
            assert waits[:3] == sorted(waits[:3]) and waits[2] > waits[0], f"no back-off: {failures}"
            status = client.status("scaler", version=2)["model_version_status"][0]
            assert status["state"] == "END" and status["status"]["error_message"]
            assert str(tmp_path) not in status["status"]["error_message"], "the error leaks a path"
            assert answer(client) == 1.0, "version 1 keeps serving while version 2 fails"
            shutil.copytree(complete / "variables", model_dir / "2" / "variables")
            client.wait_for_version("scaler", 2, timeout=60)
            assert answer(client) == 2.0
        finally:
            client.close()


def test_a_broken_config_file_is_reported_once_per_change_and_events_stay_bounded(tmp_path):
    """Polling a config file that stays broken added one event per poll (issue 36): now one
    per change of the file, and the history keeps the last MAX_EVENTS lines."""
    from recsys_course.serving.repository import MAX_EVENTS, ModelRepository

    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'scaler' base_path: ")  # cut short
    repository = ModelRepository(config_file=config)
    for _ in range(50):
        repository.refresh()
    broken = [e for e in repository.events if "not (re)loaded" in e]
    assert len(broken) == 1, broken
    for stamp in range(1, MAX_EVENTS + 50):  # each a new modification time: a new failure to report
        os.utime(config, ns=(stamp * 10**9, stamp * 10**9))
        repository.refresh()
    assert len(repository.events) == MAX_EVENTS
    assert sum("not (re)loaded" in e for e in repository.events) == MAX_EVENTS
