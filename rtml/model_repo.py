"""MLServer model repository: layout, settings files and server launch helpers.

Layout written here (one folder per model *version*)::

    repo_dir/
      settings.json                  # server-wide MLServer settings
      <name>/<version>/
        model.joblib                 # the fitted scikit-learn estimator
        model-settings.json          # MLServer: runtime, name, version, uri
        metadata.json                # rtml: feature names, sklearn version, ...

MLServer discovers every ``model-settings.json`` under ``repo_dir`` at start
(recursive glob that skips dot-folders) and registers each one as a version of
model ``<name>``. Every version is addressable at
``/v2/models/<name>/versions/<version>/...``; the unversioned route
``/v2/models/<name>/...`` goes to the *latest* version, compared as integers when
both versions parse as ints, else as strings. Use integer versions ("1", "2",
...) so that "10" is newer than "9".

Ports and host are deliberately not in ``settings.json``: MLServer gives values
in the file priority over environment variables, so the stack passes them via
:func:`mlserver_env` instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib

SERVER_SETTINGS_FILENAME = "settings.json"
MODEL_SETTINGS_FILENAME = "model-settings.json"
MODEL_FILENAME = "model.joblib"
METADATA_FILENAME = "metadata.json"

SKLEARN_IMPLEMENTATION = "mlserver_sklearn.SKLearnModel"
# MLServer's NumpyRequestCodec decodes a single input whatever its name; this is
# the name MLServer itself uses, so clients and metadata agree on it.
DEFAULT_INPUT_NAME = "input-0"
DEFAULT_OUTPUT = "predict_proba"

SMOKE_MODEL_NAME = "smoke"
SMOKE_MODEL_VERSION = "1"
SMOKE_FEATURES = ["f0", "f1", "f2"]

# Every MLSERVER_* variable is read by MLServer's pydantic settings (and
# MLSERVER_MODEL_* leaks into *every* model's settings), so inherited ones are
# dropped from the server's environment.
_ENV_PREFIX = "MLSERVER_"
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def server_settings() -> dict[str, Any]:
    """Return the server-wide MLServer settings rtml uses (pure).

    ``parallel_workers`` is 0: inference runs in the server's own process, with no
    IPC hop or extra worker processes, which suits small sklearn models on a
    small machine. (Workers > 0 also crash with "There is no current event loop"
    unless uvloop < 0.22 is installed; requirements/mlserver.txt pins it.)
    """
    return {
        "parallel_workers": 0,
        # Models come only from the repository folder, all loaded at start, so
        # /v2/health/ready means "every published version is loaded".
        "load_models_at_startup": True,
        # debug=true (MLServer's default) logs every request and at DEBUG level.
        "debug": False,
    }


def write_server_settings(repo_dir: Path) -> Path:
    """Write ``repo_dir/settings.json`` for MLServer and return its path.

    Idempotent: the file is rewritten with the same content each time. Ports and
    host are not written (see :func:`mlserver_env`).
    """
    repo_dir.mkdir(parents=True, exist_ok=True)
    path = repo_dir / SERVER_SETTINGS_FILENAME
    _write_json(path, server_settings())
    return path


def model_settings(
    name: str,
    version: str,
    *,
    n_features: int,
    n_outputs: int | None = None,
    output: str = DEFAULT_OUTPUT,
) -> dict[str, Any]:
    """Return the ``model-settings.json`` content for one sklearn model version (pure).

    ``parameters.extra.predict_fn`` is mlserver-sklearn's default output when a
    request names no ``outputs``; a request may still ask for ``predict``,
    ``predict_proba`` or ``transform`` explicitly. The ``uri`` is relative to the
    settings file, so the repository can be moved.
    """
    return {
        "name": name,
        "implementation": SKLEARN_IMPLEMENTATION,
        # Advertised by /v2/models/{name}[/versions/{v}] metadata; without a
        # content_type they do not change how MLServer decodes requests.
        "inputs": [{"name": DEFAULT_INPUT_NAME, "datatype": "FP64", "shape": [-1, n_features]}],
        "outputs": [{"name": output, "datatype": "FP64", "shape": [-1, n_outputs or -1]}],
        "parameters": {
            "uri": f"./{MODEL_FILENAME}",
            "version": version,
            "extra": {"predict_fn": output},
        },
    }


def publish_sklearn_model(
    model: Any,
    repo_dir: Path,
    name: str,
    version: str,
    *,
    feature_names: list[str],
    threshold: float | None = None,
    created_at: datetime | None = None,
) -> Path:
    """Publish a fitted sklearn estimator as ``repo_dir/name/version`` and return that folder.

    Writes ``model.joblib``, ``model-settings.json`` (default output
    ``predict_proba`` if the estimator has it, else ``predict``) and
    ``metadata.json`` (with `threshold`, the score at or above which scoring jobs decide
    "positive", when given). The folder is assembled under a dot-named temporary folder
    and renamed into place, so a server scanning the repository never sees a
    half-written version. Versions are immutable: publishing an existing one
    raises :class:`FileExistsError`.
    """
    import sklearn  # lazy: keeps `import rtml.model_repo` cheap for the stack CLI

    _check_segment("name", name)
    _check_segment("version", version)
    n_in = getattr(model, "n_features_in_", None)
    if n_in is not None and n_in != len(feature_names):
        raise ValueError(f"model expects {n_in} features, got {len(feature_names)} names")

    target = repo_dir / name / version
    if target.exists():
        raise FileExistsError(f"model {name!r} version {version!r} exists: {target}")
    target.parent.mkdir(parents=True, exist_ok=True)

    has_proba = hasattr(model, "predict_proba")
    classes = getattr(model, "classes_", None)
    settings = model_settings(
        name,
        version,
        n_features=len(feature_names),
        n_outputs=len(classes) if has_proba and classes is not None else None,
        output=DEFAULT_OUTPUT if has_proba else "predict",
    )
    metadata = {
        "name": name,
        "version": version,
        "feature_names": list(feature_names),
        "sklearn_version": sklearn.__version__,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "created_at": (created_at or datetime.now(UTC)).isoformat(),
    }
    if threshold is not None:
        metadata["threshold"] = check_threshold(threshold, f"model {name} version {version}")

    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=target.parent))
    try:
        joblib.dump(model, tmp / MODEL_FILENAME)
        _write_json(tmp / METADATA_FILENAME, metadata)
        _write_json(tmp / MODEL_SETTINGS_FILENAME, settings)
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def ensure_smoke_model(repo_dir: Path) -> Path:
    """Publish the ``smoke`` model, version ``1``, unless present; return its folder.

    A LogisticRegression on seeded synthetic data with float features f0, f1,
    f2, so the stack can be checked end to end without a real model. Idempotent.
    """
    target = repo_dir / SMOKE_MODEL_NAME / SMOKE_MODEL_VERSION
    if (target / MODEL_SETTINGS_FILENAME).is_file():
        return target
    return publish_sklearn_model(
        train_smoke_model(),
        repo_dir,
        SMOKE_MODEL_NAME,
        SMOKE_MODEL_VERSION,
        feature_names=SMOKE_FEATURES,
    )


def train_smoke_model() -> Any:
    """Train the deterministic smoke LogisticRegression (same coefficients on every call)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(42)
    x = rng.normal(size=(200, len(SMOKE_FEATURES)))
    y = (x @ np.array([1.5, -2.0, 0.5]) + rng.normal(scale=0.5, size=200) > 0).astype(int)
    return LogisticRegression(random_state=0).fit(x, y)


def mlserver_command(venv_dir: Path, repo_dir: Path) -> list[str]:
    """Return the argv that runs MLServer in the foreground on ``repo_dir``.

    Paths are made absolute so the caller may pick any working directory. Run it
    with ``cwd=repo_dir``: MLServer reads a ``.env`` file and puts ``.`` on
    ``sys.path`` from its working directory.
    """
    return [str(venv_dir.absolute() / "bin" / "mlserver"), "start", str(repo_dir.absolute())]


# One native thread per model call unless the environment says otherwise. MLServer answers many
# small concurrent requests; OpenMP (HistGradientBoosting) and BLAS threads only contend for the
# cores with each other and with Kafka and Flink. Measured on this 2-core machine under load, 256
# rows through the fraud model: p50 64 ms, max 1.8 s with OpenMP's default; 11 ms, max 41 ms with 1.
MODEL_THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def mlserver_env(
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    *,
    host: str = "127.0.0.1",
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return environment variables that set MLServer's listen address and ports.

    Without ``base`` only the ``MLSERVER_*`` variables are returned. With
    ``base`` (e.g. ``os.environ``) the full environment for the server process
    is returned: ``base`` minus any inherited ``MLSERVER_*`` variable, plus ours,
    with ``MODEL_THREADS`` where ``base`` does not set them.
    """
    ours = {
        "MLSERVER_HOST": host,
        "MLSERVER_HTTP_PORT": str(http_port),
        "MLSERVER_GRPC_PORT": str(grpc_port),
        "MLSERVER_METRICS_PORT": str(metrics_port),
    }
    if base is None:
        return ours
    env = {**MODEL_THREADS, **{k: v for k, v in base.items() if not k.startswith(_ENV_PREFIX)}}
    env.update(ours)
    return env


@dataclass(frozen=True)
class ModelMetadata:
    """What scoring needs from a model version's metadata.json."""

    feature_names: tuple[str, ...]  # its input columns, in order
    threshold: float | None  # decide "positive" at score >= threshold; None: not given
    version: str  # "<name>/<version>" as the metadata says (the folder's names where it does not)


def read_metadata(folder: Path) -> ModelMetadata:
    """`folder/metadata.json`, checked. FileNotFoundError if missing; ValueError naming the file
    if it is not JSON or its feature names or threshold are wrong."""
    path = folder / METADATA_FILENAME
    try:
        metadata = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    except ValueError as error:
        raise ValueError(f"{path}: not JSON: {error}") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: not a JSON object")
    return ModelMetadata(
        check_feature_names(metadata.get("feature_names"), str(path)),
        check_threshold(metadata.get("threshold"), str(path)),
        f"{metadata.get('name', folder.parent.name)}/{metadata.get('version', folder.name)}",
    )


def check_feature_names(names: object, where: str) -> tuple[str, ...]:
    """Input column names as metadata and promotions hold them: a non-empty list of strings."""
    if (
        not isinstance(names, list | tuple)
        or not names
        or not all(isinstance(n, str) for n in names)
    ):
        raise ValueError(f"{where}: feature_names must be a non-empty list of column names")
    return tuple(names)


def check_threshold(value: object, where: str) -> float | None:
    """A decision threshold as metadata, promotions and settings hold it: None (none given) or a
    number within [0, 1]; ValueError naming `where` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: threshold must be a number, not {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{where}: threshold must be within [0, 1], not {value}")
    return float(value)


def _check_segment(kind: str, value: str) -> None:
    # name and version become folder names and URL path segments
    if not _SEGMENT.match(value):
        raise ValueError(f"invalid model {kind} {value!r}: use letters, digits, '.', '_', '-'")


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic, so a starting server never reads a partial file
