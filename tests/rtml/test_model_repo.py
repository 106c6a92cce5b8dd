"""Unit tests of the MLServer model repository helpers (no server started)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.linear_model import LinearRegression, LogisticRegression

from rtml import model_repo


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_server_settings_avoid_worker_processes_and_leave_ports_to_env(tmp_path: Path) -> None:
    path = model_repo.write_server_settings(tmp_path / "repo")

    assert path == tmp_path / "repo" / "settings.json"
    settings = _json(path)
    assert settings["parallel_workers"] == 0
    assert settings["load_models_at_startup"] is True
    # values in settings.json would override the MLSERVER_* environment variables
    assert not {"host", "http_port", "grpc_port", "metrics_port"} & settings.keys()
    assert model_repo.write_server_settings(tmp_path / "repo") == path
    assert _json(path) == settings


def test_publish_writes_versioned_folder(tmp_path: Path) -> None:
    x = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.2], [0.1, 0.9]])
    model = LogisticRegression().fit(x, [0, 1, 1, 0])
    created = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

    folder = model_repo.publish_sklearn_model(
        model, tmp_path, "fraud", "3", feature_names=["a", "b"], created_at=created
    )

    assert folder == tmp_path / "fraud" / "3"
    assert sorted(p.name for p in folder.iterdir()) == [
        "metadata.json",
        "model-settings.json",
        "model.joblib",
    ]
    settings = _json(folder / "model-settings.json")
    assert settings["name"] == "fraud"
    assert settings["implementation"] == "mlserver_sklearn.SKLearnModel"
    assert settings["parameters"] == {
        "uri": "./model.joblib",
        "version": "3",
        "extra": {"predict_fn": "predict_proba"},
    }
    assert settings["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 2]}]
    assert settings["outputs"] == [{"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]}]
    metadata = _json(folder / "metadata.json")
    assert metadata["feature_names"] == ["a", "b"]
    assert metadata["sklearn_version"] == sklearn.__version__
    assert metadata["created_at"] == "2025-01-02T03:04:05+00:00"
    assert metadata["model_class"] == "sklearn.linear_model._logistic.LogisticRegression"
    np.testing.assert_allclose(
        joblib.load(folder / "model.joblib").predict_proba(x), model.predict_proba(x)
    )
    assert not [p for p in (tmp_path / "fraud").iterdir() if p.name.startswith(".")]


def test_publish_records_the_threshold_when_given(tmp_path: Path) -> None:
    x = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.2], [0.1, 0.9]])
    model = LogisticRegression().fit(x, [0, 1, 1, 0])
    without = model_repo.publish_sklearn_model(model, tmp_path, "m", "1", feature_names=["a", "b"])
    assert "threshold" not in _json(without / "metadata.json")
    folder = model_repo.publish_sklearn_model(
        model, tmp_path, "m", "2", feature_names=["a", "b"], threshold=0.25
    )
    assert _json(folder / "metadata.json")["threshold"] == 0.25
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        model_repo.publish_sklearn_model(
            model, tmp_path, "m", "3", feature_names=["a", "b"], threshold=1.5
        )


def test_publish_two_versions_side_by_side_and_refuses_to_overwrite(tmp_path: Path) -> None:
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    model_repo.publish_sklearn_model(model, tmp_path, "m", "1", feature_names=["x"])
    model_repo.publish_sklearn_model(model, tmp_path, "m", "2", feature_names=["x"])

    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2"]
    with pytest.raises(FileExistsError):
        model_repo.publish_sklearn_model(model, tmp_path, "m", "2", feature_names=["x"])


def test_publish_regressor_defaults_to_predict(tmp_path: Path) -> None:
    model = LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])
    folder = model_repo.publish_sklearn_model(model, tmp_path, "reg", "1", feature_names=["x"])

    settings = _json(folder / "model-settings.json")
    assert settings["parameters"]["extra"] == {"predict_fn": "predict"}
    assert settings["outputs"][0]["name"] == "predict"


@pytest.mark.parametrize(
    "name, version", [("../up", "1"), ("m", "a/b"), ("m", ".hidden"), ("", "1")]
)
def test_publish_rejects_unsafe_names(tmp_path: Path, name: str, version: str) -> None:
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    with pytest.raises(ValueError):
        model_repo.publish_sklearn_model(model, tmp_path, name, version, feature_names=["x"])


def test_publish_rejects_feature_count_mismatch(tmp_path: Path) -> None:
    model = LogisticRegression().fit([[0.0, 1.0], [1.0, 0.0]], [0, 1])
    with pytest.raises(ValueError, match="2 features"):
        model_repo.publish_sklearn_model(model, tmp_path, "m", "1", feature_names=["x"])
    assert not (tmp_path / "m" / "1").exists()


def test_ensure_smoke_model_is_idempotent(tmp_path: Path) -> None:
    folder = model_repo.ensure_smoke_model(tmp_path)

    assert folder == tmp_path / "smoke" / "1"
    assert _json(folder / "metadata.json")["feature_names"] == ["f0", "f1", "f2"]
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert model_repo.ensure_smoke_model(tmp_path) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_smoke_model_is_deterministic() -> None:
    a, b = model_repo.train_smoke_model(), model_repo.train_smoke_model()
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert a.predict_proba([[0.0, 0.0, 0.0]]).shape == (1, 2)


def test_mlserver_command_and_env(tmp_path: Path) -> None:
    argv = model_repo.mlserver_command(Path("venv"), Path("repo"))
    assert argv == [
        str(Path.cwd() / "venv" / "bin" / "mlserver"),
        "start",
        str(Path.cwd() / "repo"),
    ]

    assert model_repo.mlserver_env(1, 2, 3) == {
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": "1",
        "MLSERVER_GRPC_PORT": "2",
        "MLSERVER_METRICS_PORT": "3",
    }
    env = model_repo.mlserver_env(
        1, 2, 3, base={"PATH": "/bin", "MLSERVER_MODEL_NAME": "stray", "MLSERVER_DEBUG": "1"}
    )
    assert env["PATH"] == "/bin"
    assert "MLSERVER_MODEL_NAME" not in env and "MLSERVER_DEBUG" not in env
    assert env["MLSERVER_HTTP_PORT"] == "1"
    assert env["OMP_NUM_THREADS"] == "1" and env["OPENBLAS_NUM_THREADS"] == "1"
    # a user's own thread settings win
    assert model_repo.mlserver_env(1, 2, 3, base={"OMP_NUM_THREADS": "4"})["OMP_NUM_THREADS"] == "4"


def test_read_metadata_gives_features_threshold_and_version_or_names_the_file(
    tmp_path: Path,
) -> None:
    x = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.2], [0.1, 0.9]])
    model = LogisticRegression().fit(x, [0, 1, 1, 0])
    folder = model_repo.publish_sklearn_model(
        model, tmp_path, "fraud", "3", feature_names=["a", "b"], threshold=0.3
    )
    assert model_repo.read_metadata(folder) == model_repo.ModelMetadata(("a", "b"), 0.3, "fraud/3")

    with pytest.raises(FileNotFoundError, match=r"metadata.json not found"):
        model_repo.read_metadata(tmp_path / "nope")
    path = folder / "metadata.json"
    for content, message in [
        ("{broken", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"feature_names": []}', "feature_names must be a non-empty list"),
        ('{"feature_names": ["a"], "threshold": 2}', r"threshold must be within \[0, 1\]"),
    ]:
        path.write_text(content)
        with pytest.raises(ValueError, match=message) as caught:
            model_repo.read_metadata(folder)
        assert str(caught.value).startswith(str(path))
