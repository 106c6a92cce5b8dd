"""The models a backtest scores, from their folders: checked before anything is read.

A candidate is a folder as `rtml train` writes it (DIR/primary and DIR/fallback, each with
`model.joblib` and `metadata.json`) or a single model folder (a model repository version, e.g.
`.rtml/models/fraud/3`). The primary is served on the backtest's loopback V2 server; the fallback,
when there is one, is the scorer's local fallback model, as in the live job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rtml import model_repo


class ModelFolderError(ValueError):
    """A model folder cannot be backtested; the message says which file is missing or wrong."""


@dataclass(frozen=True)
class ModelFolder:
    """One model to score: where its artifacts are and what its metadata says."""

    name: str  # its name in the frame and report (score:<name>)
    role: Literal["candidate", "production"]
    primary: Path  # folder with model.joblib + metadata.json
    fallback: Path | None  # the scorer's local fallback model, if any
    feature_names: tuple[str, ...]
    threshold: float | None  # from the metadata, if it has one
    version: str  # "<name>/<version>" as the metadata says

    @property
    def fallback_features(self) -> tuple[str, ...]:
        if self.fallback is None:
            return ()
        return read_metadata(self.fallback)[0]


def read_metadata(folder: Path) -> tuple[tuple[str, ...], float | None, str]:
    """(feature names, threshold or None, "<name>/<version>") of a model folder."""
    path = folder / model_repo.METADATA_FILENAME
    if not path.is_file():
        raise ModelFolderError(f"{folder}: no {model_repo.METADATA_FILENAME} (not a model folder)")
    if not (folder / model_repo.MODEL_FILENAME).is_file():
        raise ModelFolderError(f"{folder}: no {model_repo.MODEL_FILENAME} beside its metadata")
    try:
        metadata = model_repo.read_metadata(folder)
    except ValueError as error:
        raise ModelFolderError(str(error)) from None
    return metadata.feature_names, metadata.threshold, metadata.version


def load_folder(
    path: Path, role: Literal["candidate", "production"], name: str, *, fallback: Path | None = None
) -> ModelFolder:
    """The model in `path`: a training output (primary/ + fallback/) or one model folder.

    `fallback` (a model folder) is used when `path` has no fallback of its own (production uses
    the live job's RTML_SCORING_FALLBACK_MODEL).
    """
    what = f"{role} folder {path}"
    if not path.exists():
        raise ModelFolderError(f"{what} does not exist")
    if not path.is_dir():
        raise ModelFolderError(f"{what} is not a folder")
    if (path / "primary").is_dir():
        primary = path / "primary"
        own = path / "fallback"
        if (own / model_repo.METADATA_FILENAME).is_file():
            fallback = own
    elif (path / model_repo.METADATA_FILENAME).is_file():
        primary = path
    else:
        raise ModelFolderError(
            f"{what} has no model: expected primary/{model_repo.METADATA_FILENAME} (as written by "
            f"`rtml train fraud --out DIR`) or {model_repo.METADATA_FILENAME} and "
            f"{model_repo.MODEL_FILENAME} (a model repository version)"
        )
    features, threshold, version = read_metadata(primary)
    if fallback is not None:
        fallback_features = read_metadata(fallback)[0]
        missing = [n for n in fallback_features if n not in features]
        if missing:
            raise ModelFolderError(
                f"{role} {name}: its fallback model {fallback} reads {missing}, which the "
                f"primary model does not (the scorer only has the primary's features)"
            )
    return ModelFolder(name, role, primary, fallback, features, threshold, version)


def unique_names(paths: Sequence[Path], taken: Iterable[str] = ()) -> list[str]:
    """A report name per candidate folder: its folder name (the training output's, not
    'primary'), made unique with -2, -3... (pure)."""
    used = set(taken)
    names = []
    for path in paths:
        base = path.resolve().name if path.name not in ("", ".") else "candidate"
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        names.append(name)
    return names


def check_features(model: ModelFolder, columns: Sequence[str], featureset: str) -> None:
    """ModelFolderError unless the feature set's query has every feature the model reads."""
    missing = [n for n in model.feature_names if n not in columns]
    if missing:
        raise ModelFolderError(
            f"{model.role} {model.name} ({model.primary}) reads features {missing} that feature "
            f"set {featureset} does not have (it has {', '.join(columns)})"
        )
