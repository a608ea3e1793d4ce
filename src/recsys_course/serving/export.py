"""Writing models where TensorFlow Serving looks for them, and inspecting what was written.

TF Serving's layout is ``<base_path>/<model name>/<version>/`` where ``<version>`` is a
folder named by a positive integer holding a SavedModel (``saved_model.pb``,
``variables/``, ``assets/``, optionally ``assets.extra/``). The server polls each model's
base path and treats every child folder whose name parses as an integer as a version; other
names are ignored. :func:`save_version` uses that: it writes into a hidden folder in the same
directory and renames it to its version number only when the SavedModel is complete, so a
polling server never sees half a model (a rename within one file system is atomic on POSIX).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

SERVING_SIGNATURE = "serving_default"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
#: The image tag matching the tensorflow-serving-api version this course pins.
TF_SERVING_IMAGE = "tensorflow/serving:2.21.0"


MAX_VERSION = 2**63 - 1  # TF Serving's versions are int64


def is_version_name(name: str) -> bool:
    """A folder name TF Serving reads as a version: ASCII digits of an int64 (``"٣"`` and
    ``"²"`` pass ``str.isdigit`` but are not versions)."""
    return name.isascii() and name.isdigit() and len(name) <= 19 and int(name) <= MAX_VERSION


def version_dirs(model_dir: str | Path) -> list[int]:
    """Version numbers under ``model_dir`` that hold a SavedModel, in numeric order.

    Children whose names are not integers (``.tmp-...`` exports in progress, ``README``) or
    that lack ``saved_model.pb`` are ignored. Numeric order matters: ``10`` comes after ``9``.
    """
    path = Path(model_dir)
    if not path.is_dir():
        return []
    versions = []
    for child in path.iterdir():
        if is_version_name(child.name) and child.is_dir() and any(
            (child / name).exists() for name in SAVED_MODEL_FILES
        ):
            versions.append(int(child.name))
    return sorted(versions)


def next_version(model_dir: str | Path) -> int:
    """One more than the highest existing version (1 for an empty or missing folder)."""
    existing = version_dirs(model_dir)
    return existing[-1] + 1 if existing else 1


def save_version(
    obj: Any,
    model_dir: str | Path,
    version: int | None = None,
    *,
    signatures: Mapping[str, Any] | Any,
    warmup_requests: Sequence[Mapping[str, Any]] | None = None,
    model_name: str = "",
) -> Path:
    """Export ``obj`` as version ``version`` of the model in ``model_dir``, atomically.

    Args:
        obj: a ``tf.Module`` (or Keras model) to save.
        model_dir: the model's base path, ``<models>/<name>``; created if missing.
        version: the version number; ``None`` means :func:`next_version`.
        signatures: passed to ``tf.saved_model.save``; a ``{"serving_default": fn}`` dict.
        warmup_requests: optional example inputs (one ``{input name: values}`` mapping per
            request) written to ``assets.extra/tf_serving_warmup_requests`` before the rename.
        model_name: the model name recorded in the warm-up requests.

    Returns:
        The final ``model_dir/<version>`` path.

    Raises:
        FileExistsError: that version already exists (versions are immutable: roll forward
            with a new number instead of overwriting one a server may have loaded).
    """
    import tensorflow as tf

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(model_dir) if version is None else int(version)
    if version <= 0:
        raise ValueError(f"versions are positive integers, got {version}")
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"{final} already exists; export a new version instead")
    staging = model_dir / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    try:
        tf.saved_model.save(obj, str(staging), signatures=signatures)
        if warmup_requests:
            from recsys_course.serving.warmup import write_warmup_requests

            write_warmup_requests(staging, warmup_requests, model_name=model_name)
        os.rename(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final


def saved_model_cli_path() -> str:
    """The ``saved_model_cli`` installed with TensorFlow next to this Python, else on PATH."""
    beside = Path(sys.executable).with_name("saved_model_cli")
    if beside.exists():
        return str(beside)
    found = shutil.which("saved_model_cli")
    if not found:
        raise FileNotFoundError(
            "saved_model_cli not found: it is installed with the tensorflow package"
        )
    return found


def saved_model_cli(*args: str, timeout: float = 300) -> str:
    """Run ``saved_model_cli`` with ``args`` and return its standard output.

    Raises ``subprocess.CalledProcessError`` (with stderr attached) when it fails.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [saved_model_cli_path(), *map(str, args)], capture_output=True, text=True,
        timeout=timeout, env=env, stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
    return done.stdout


def signature_section(show_all_output: str) -> str:
    """The SignatureDefs part of ``saved_model_cli show --all`` (before the op list and the
    concrete functions, which are long for Keras models)."""
    lines = []
    for line in show_all_output.splitlines():
        if line.startswith(("The MetaGraph with tag set", "Concrete Functions:")):
            break
        lines.append(line)
    return "\n".join(lines).strip()


def model_config_text(
    base_paths: Mapping[str, str | Path],
    *,
    versions: Mapping[str, Sequence[int]] | None = None,
    labels: Mapping[str, Mapping[str, int]] | None = None,
) -> str:
    """A TF Serving ``--model_config_file`` (a text-format ``ModelServerConfig``).

    Args:
        base_paths: model name -> base path *as the server will see it* (inside a Docker
            container that is the mount target, e.g. ``/models/retrieval``).
        versions: model name -> the versions to serve (a ``specific`` version policy);
            models not listed get TF Serving's default policy, the latest version only.
        labels: model name -> {label: version}, e.g. ``{"stable": 1, "canary": 2}``.

    The text is built from the real ``tensorflow_serving.config`` protos, so it parses.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name, base_path in base_paths.items():
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = str(base_path)
        entry.model_platform = "tensorflow"
        if versions and name in versions:
            entry.model_version_policy.specific.versions.extend(int(v) for v in versions[name])
        for label, version in ((labels or {}).get(name) or {}).items():
            entry.version_labels[label] = int(version)
    return text_format.MessageToString(config)


def docker_command(
    models_dir: str | Path,
    *,
    config_file: str = "models.config",
    image: str = TF_SERVING_IMAGE,
    grpc_port: int = 8500,
    rest_port: int = 8501,
    poll_seconds: int = 60,
) -> str:
    """The ``docker run`` command that serves every model of ``models_dir`` with TF Serving.

    ``models_dir`` is mounted read-only at ``/models`` and must contain ``config_file``
    written with ``/models/<name>`` base paths. Port 8500 is gRPC, 8501 REST; both are
    published on 127.0.0.1 only, so the model server is not reachable from the network.

    A relative ``models_dir`` is written as ``"$PWD/<models_dir>"`` (Docker's ``--mount``
    needs an absolute path; the shell supplies it), so the printed command holds no path of
    the machine that printed it and works from the folder it is relative to.
    """
    source = Path(models_dir)
    if not source.is_absolute() and re.fullmatch(r"[A-Za-z0-9._/-]+", source.as_posix()):
        mount_source = f'"$PWD/{source.as_posix()}"'
    else:
        mount_source = shlex.quote(str(source.resolve()))
    parts = [
        "docker run --rm",
        f"-p 127.0.0.1:{grpc_port}:8500",
        f"-p 127.0.0.1:{rest_port}:8501",
        f"--mount type=bind,source={mount_source},target=/models,readonly",
        image,
        f"--model_config_file=/models/{config_file}",
        f"--model_config_file_poll_wait_seconds={poll_seconds}",
        "--enable_model_warmup=true",
    ]
    return " \\\n    ".join(parts)
