"""The paper's protocol (config/paper.yaml) at smoke size on the CPU: UNETR-base and the U-Net
train one step per image on 96³ crops and segment a whole scan with 96³ windows.

About 20 minutes on 2 cores, so it runs only when asked:
``THIGHCT_PAPER_SMOKE=1 pytest tests/test_paper_smoke.py``. It checks that the paper config's
shapes, windows and memory fit together on real data flow, not its accuracy.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import REPO, TINY, run_snakemake

pytestmark = [
    pytest.mark.workflow,
    pytest.mark.skipif(
        not os.environ.get("THIGHCT_PAPER_SMOKE"),
        reason="about 20 minutes on 2 cores: THIGHCT_PAPER_SMOKE=1 pytest tests/test_paper_smoke.py",
    ),
]

PAPER = REPO / "config" / "paper.yaml"
SMOKE = REPO / "tests" / "config" / "paper_smoke.yaml"


def test_the_paper_protocol_trains_and_segments_at_paper_size_on_cpu(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    targets = [f"results/models/{m}/model.pt" for m in ("unetr", "unet")]
    run_snakemake(work, "--cores", "2", *targets, configfiles=[TINY, PAPER, SMOKE], timeout=5400)
    for model in ("unetr", "unet"):
        saved = torch.load(work / f"results/models/{model}/model.pt", weights_only=True)
        assert saved["meta"]["network"]["roi"] == [96, 96, 96]
    unetr = torch.load(work / "results/models/unetr/model.pt", weights_only=True)["meta"]
    assert unetr["network"]["hidden_size"] == 768 and unetr["network"]["num_heads"] == 12
    # One validation per model ran with the paper's 96³ sliding windows.
    log = (work / "results/models/unetr/train_log.tsv").read_text().splitlines()
    assert len(log) == 2 and log[1].split("\t")[2] != ""
