"""The saved model file (``model.pt``): what it holds, reading it safely, checking it fits a config.

A model file is a plain dict ``{"state_dict": ..., "meta": ...}`` read with
``torch.load(weights_only=True)``, so loading one never runs pickled code. ``meta`` carries what
using the weights correctly needs:

* ``model``, ``network`` (the ``networks.<model>`` config: arch, roi, constructor keys),
  ``n_classes`` and ``labels`` (the label table: ids, names, groups);
* ``preprocess``: the pre-processing the network was trained on (orientation, HU window, gamma,
  voxel size in mm, body crop), the ``preprocess`` config without its figure settings;
* ``thighct_version`` and ``format_version``, and facts of the training (seed, best epoch, ...).

Weights applied to another cohort (``networks.<model>.weights``) are checked against the config
in use before any job runs: every differing label, network or pre-processing key is named with
both values. This module imports torch only to read a file (and never MONAI), so the workflow
can use it while it is read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import __version__
from .errors import ThighctError
from .labels import LabelTable

#: Version of the model.pt layout; bump when it changes.
FORMAT_VERSION = 1
#: Config keys of ``preprocess`` that do not shape the network's input (figure settings).
NON_INPUT_PREPROCESS_KEYS = ("figure",)


def normalise_config(cfg: dict) -> dict:
    """A config as plain JSON types (tuples -> lists), so stored and given compare equal."""
    return json.loads(json.dumps(dict(cfg), sort_keys=True))


def input_preprocessing(preprocess_cfg: dict) -> dict:
    """The ``preprocess`` settings that shape what the network sees (figure settings dropped)."""
    return {k: v for k, v in preprocess_cfg.items() if k not in NON_INPUT_PREPROCESS_KEYS}


def model_meta(
    model_name: str, net_cfg: dict, labels: LabelTable, preprocess: dict, **extra
) -> dict:
    """The metadata stored beside the weights: what shapes the network's input and output.

    ``preprocess`` is the ``preprocess`` config the training scans went through; ``extra`` adds
    facts of the training (seed, epochs, ...).
    """
    meta = {
        "format_version": FORMAT_VERSION,
        "thighct_version": __version__,
        "model": model_name,
        "network": normalise_config(net_cfg),
        "n_classes": labels.n_classes,
        "labels": labels.to_dict(),
        "preprocess": normalise_config(input_preprocessing(preprocess)),
    }
    meta.update(normalise_config(extra))
    return meta


def read_model_file(path: str | Path) -> dict:
    """The raw ``{"state_dict", "meta"}`` dict of a model file (weights-only unpickling).

    The file is memory-mapped: reading ``meta`` alone does not load the weights.
    """
    import torch  # here, not at the top: reading a config needs no torch

    path = Path(path)
    if not path.is_file():
        raise ThighctError(
            "model file not found",
            path=path,
            fix="train the model first (rule train), or correct networks.<model>.weights",
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise ThighctError(
            f"cannot read the model file: {exc}",
            path=path,
            fix="give a model.pt written by thighct (rule train); a damaged one: retrain",
        ) from exc
    if not isinstance(blob, dict) or "state_dict" not in blob or "meta" not in blob:
        raise ThighctError(
            "not a thighct model file (no state_dict/meta)",
            path=path,
            fix="give a model.pt written by rule train",
        )
    return blob


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (a weights file's identity: its content, not its date)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def label_differences(meta: dict, labels: LabelTable) -> list[str]:
    """How the model's label table differs from ``labels``, one line per class id."""
    stored, given = meta["labels"], labels.to_dict()
    if stored == given:
        return []
    stored_ids = {r["id"]: r["name"] for r in stored}
    given_ids = {r["id"]: r["name"] for r in given}
    diffs = [
        f"labels id {i}: model '{stored_ids.get(i, '-')}' vs config '{given_ids.get(i, '-')}'"
        for i in sorted(set(stored_ids) | set(given_ids))
        if stored_ids.get(i) != given_ids.get(i)
    ]
    return diffs or ["labels: the class groups or colours differ"]


def key_differences(stored: dict, given: dict, prefix: str) -> list[str]:
    """``prefix.key: model <value> vs config <value>`` for every key whose values differ."""
    stored, given = normalise_config(stored), normalise_config(given)
    keys = sorted(k for k in set(stored) | set(given) if stored.get(k) != given.get(k))
    return [f"{prefix}.{k}: model {stored.get(k)!r} vs config {given.get(k)!r}" for k in keys]


def _shown(diffs: list[str], limit: int = 8) -> str:
    more = f"\n  ... ({len(diffs)} in all)" if len(diffs) > limit else ""
    return "".join(f"\n  - {d}" for d in diffs[:limit]) + more


def check_labels(meta: dict, labels: LabelTable, path: str | Path) -> None:
    """Raise if the model was trained on another label table than ``labels``."""
    diffs = label_differences(meta, labels)
    if diffs:
        raise ThighctError(
            f"model was trained with a different label table ({len(meta['labels'])} classes) "
            f"than the one given ({len(labels.to_dict())} classes):{_shown(diffs)}",
            path=path,
            fix="use the label table the model was trained with (config 'labels'), or retrain "
            "the model (delete it and rerun rule train)",
        )


def check_network(meta: dict, net_cfg: dict, path: str | Path) -> None:
    """Raise if the stored network config differs from ``net_cfg``."""
    diffs = key_differences(meta["network"], net_cfg, "network")
    if diffs:
        raise ThighctError(
            f"model was trained with another network config:{_shown(diffs)}",
            path=path,
            fix="restore the network settings the model was trained with, or retrain it "
            "(delete it and rerun rule train)",
        )


def check_applicable(
    path: str | Path, model_name: str, labels: LabelTable, net_cfg: dict, preprocess: dict
) -> dict:
    """Check that weights trained elsewhere fit this config; returns the model's ``meta``.

    Compares the label table, ``networks.<model_name>`` and the pre-processing (``preprocess``
    without its figure settings) with what the model file records, and raises one error that
    names every differing key with both values.
    """
    meta = read_model_file(path)["meta"]
    diffs = label_differences(meta, labels)
    diffs += key_differences(meta["network"], net_cfg, f"networks.{model_name}")
    if "preprocess" not in meta:
        diffs.append(
            "preprocess: the model file does not record its pre-processing "
            f"(written by thighct {meta.get('thighct_version', 'before 0.1.0')})"
        )
    else:
        diffs += key_differences(meta["preprocess"], input_preprocessing(preprocess), "preprocess")
    if diffs:
        raise ThighctError(
            f"the weights given for model '{model_name}' were trained under another "
            f"configuration:{_shown(diffs, limit=40)}",
            path=path,
            fix="set these config keys to the model's values (what it was trained with), or "
            f"give networks.{model_name}.weights a model trained under this config",
        )
    return meta
