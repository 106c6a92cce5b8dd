"""`rtml train fraud` end to end on the real stack: artifacts and metadata under --out, the primary
published as a new version that the model server answers with the artifact's own scores."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import joblib
import numpy as np
import pytest
import requests
from ephemeral import run_rtml

from rtml import v2client
from rtml.stack import Stack

pytestmark = pytest.mark.integration


def test_train_fraud_publishes_a_model_the_server_scores_like_the_artifact(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    name = f"fraud-it-{uuid.uuid4().hex[:8]}"  # the repository is shared: a name of our own
    out = tmp_path / "models"
    repo = stack.settings.model_repo
    base_url = stack.settings.model_url
    try:
        args = ["train", "fraud", "--out", str(out), "--events", "3000", "--seed", "3"]
        trained = run_rtml(stack_env, *args, "--model-name", name, timeout=600)
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert "published" in trained.stdout, trained.stdout

        summary = json.loads((out / "summary.json").read_text())
        assert summary["training"]["rows"] == 3000  # every generated event got a feature row
        assert summary["training"]["dead_letters"] == {}
        assert summary["training"]["positives"] > 0
        assert summary["published"] == {
            "name": name, "version": "1", "path": str(repo / name / "1"), "loaded": True,
        }  # fmt: skip
        metas = {}
        for role in ("primary", "fallback"):
            meta = json.loads((out / role / "metadata.json").read_text())
            assert (out / role / "model.joblib").is_file()
            assert meta["role"] == role
            assert meta["training"]["featureset"]["name"] == "fraud_card"
            assert meta["input"]["shape"] == [-1, len(meta["feature_names"])]
            assert 0.0 < meta["threshold"] < 1.0
            test = meta["metrics"]["test"]
            assert test["tp"] + test["fp"] + test["tn"] + test["fn"] == test["rows"] > 0
            metas[role] = meta
        assert set(metas["fallback"]["feature_names"]) < set(metas["primary"]["feature_names"])
        assert metas["primary"]["metrics"]["test"]["roc_auc"] > 0.8  # it learned something

        # The server answers with the same scores as the artifact loaded here.
        primary = joblib.load(out / "primary" / "model.joblib")
        published = json.loads((repo / name / "1" / "metadata.json").read_text())
        assert published["feature_names"] == metas["primary"]["feature_names"]
        assert published["threshold"] == metas["primary"]["threshold"]  # jobs decide with it
        rng = np.random.default_rng(0)
        width = len(metas["primary"]["feature_names"])
        rows = np.abs(rng.normal(loc=3.0, scale=4.0, size=(25, width))).round(3)
        served = v2client.infer(base_url, name, rows.tolist(), version="1")
        local = primary.predict_proba(rows)
        assert served.shape == local.shape
        assert np.allclose(served, local, rtol=1e-12, atol=1e-12)
        assert np.allclose(
            v2client.infer(base_url, name, rows.tolist()), local, rtol=1e-12, atol=1e-12
        )  # the unversioned route serves the newest version
    finally:
        requests.post(f"{base_url}/v2/repository/models/{name}/unload", timeout=30)
        shutil.rmtree(repo / name, ignore_errors=True)


def test_train_refuses_a_range_without_a_topic(tmp_path: Path) -> None:
    result = run_rtml(
        dict(os.environ), "train", "fraud", "--out", str(tmp_path), "--from", "2026-11-01"
    )
    assert result.returncode == 1
    assert "rtml: error: --from, --to, --offsets and --group need --topic" in result.stderr
