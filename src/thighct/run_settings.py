"""Which config keys are run settings: they change how fast or where a job runs, not what it writes.

A rule's ``params`` carry only the keys that shape its outputs (Snakemake reruns a job whose
params change); the run settings reach the job's script from the config directly, so raising a
job's threads, memory or runtime, or moving it to a GPU, never reruns it or anything after it.
The same split decides what a training checkpoint's hash and ``model.pt``'s metadata record.

Classed as run settings:

- ``threads``, ``resources`` (runtime, memory, GPU count, type and partition): where and how
  wide a job runs.
- ``train.checkpoint_every``, ``train.checkpoint_dir``: when and where a resumable state is
  kept; a resumed run ends with the same weights as an uninterrupted one.
- ``train.sw_batch_size``, ``infer.sw_batch_size``: windows per network call (batch norm runs
  with fixed statistics in evaluation, so windows do not affect each other).
- ``train.cache_rate``: how many training images stay in memory between epochs.
- ``train.channels_last``, ``infer.cpu_fastpath``, ``infer.workers``: memory layout and the CPU
  inference's rewritten network and window workers, which give the same results up to float
  rounding.
- ``infer.device``: CPU or CUDA.

Everything else (epochs, learning rate, precision, overlap, blending, mirroring, the
half-precision window sums, ...) shapes the outputs and stays in ``params``.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Run-setting keys per config section.
RUN_KEYS: dict[str, frozenset[str]] = {
    "train": frozenset(
        {
            "threads",
            "resources",
            "checkpoint_every",
            "checkpoint_dir",
            "sw_batch_size",
            "cache_rate",
            "channels_last",
        }
    ),
    "infer": frozenset(
        {
            "threads",
            "resources",
            "device",
            "sw_batch_size",
            "cpu_fastpath",
            "workers",
        }
    ),
}


def science(section: str, values: Mapping) -> dict:
    """The keys of config section ``section`` that shape what its jobs write."""
    run = RUN_KEYS[section]
    return {k: v for k, v in values.items() if k not in run}


def run_only(section: str, values: Mapping) -> dict:
    """The run settings of config section ``section`` (see the module's docstring)."""
    run = RUN_KEYS[section]
    return {k: v for k, v in values.items() if k in run}


def infer_for_model(infer_cfg: Mapping, model: str) -> dict:
    """The ``infer`` settings one model's predict jobs run with: the shared keys with the model's
    own ``infer.by_model.<model>`` merged over them; ``figure``, ``postprocess`` and
    ``by_model`` themselves belong to other rules and are left out."""
    shared = {k: v for k, v in infer_cfg.items() if k not in ("figure", "postprocess", "by_model")}
    return {**shared, **(infer_cfg.get("by_model") or {}).get(model, {})}


def train_for_model(train_cfg: Mapping, model: str) -> dict:
    """The ``train`` settings one model trains with: the shared keys with the model's own
    ``train.by_model.<model>`` merged over them, and ``epochs`` resolved to the model's count
    when it is given per model (``epochs: {unetr: 70, unet: 60}``)."""
    merged = {k: v for k, v in train_cfg.items() if k != "by_model"}
    merged.update((train_cfg.get("by_model") or {}).get(model, {}))
    epochs = merged.get("epochs")
    if isinstance(epochs, Mapping):
        merged["epochs"] = epochs.get(model)
    return merged
