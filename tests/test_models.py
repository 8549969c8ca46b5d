"""Networks from config, and model files that refuse to be read against the wrong labels."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import REPO, load_config

from thighct.errors import ThighctError
from thighct.labels import LabelTable, read_labels
from thighct.model_file import check_applicable, file_sha256, model_meta
from thighct.models import (
    build_network,
    count_parameters,
    load_model,
    network_roi,
    save_model,
)

LABELS = read_labels(REPO / "config" / "labels.tsv")
TINY = load_config(REPO / "tests" / "config" / "tiny.yaml")


@pytest.mark.parametrize("model", ["unetr", "unet"])
def test_each_network_gives_one_logit_per_class_and_voxel(model):
    cfg = TINY["networks"][model]
    net = build_network(model, cfg, LABELS.n_classes)
    roi = network_roi(cfg)
    with torch.no_grad():
        out = net(torch.zeros(2, 1, *roi))
    assert out.shape == (2, LABELS.n_classes, *roi)


@pytest.mark.parametrize("model", ["unetr", "unet"])
def test_default_networks_build_from_config(model):
    cfg = load_config()["networks"][model]
    net = build_network(model, cfg, LABELS.n_classes)
    assert count_parameters(net) > 0
    # The CPU default's UNETR has 8-voxel patches: MONAI's UNETR with one more token level.
    assert type(net).__name__ == {"unetr": "PatchUNETR", "unet": "UNet"}[model]


def test_paper_unetr_is_unetr_base_with_about_92_million_parameters():
    cfg = load_config(REPO / "config" / "paper.yaml")["networks"]["unetr"]
    assert network_roi(cfg) == (96, 96, 96)
    net = build_network("unetr", cfg, LABELS.n_classes)
    # Hatamizadeh et al. 2021 report 92.58 M parameters for UNETR-base (BTCV, 14 classes).
    assert 90e6 < count_parameters(net) < 95e6


# MONAI's UNETR module names -> PatchUNETR's (levels = 4 at patch 16).
_MONAI_TO_PATCH = {
    "encoder2.": "encoders.0.",
    "encoder3.": "encoders.1.",
    "encoder4.": "encoders.2.",
    "decoder5.": "decoders.0.",
    "decoder4.": "decoders.1.",
    "decoder3.": "decoders.2.",
    "decoder2.": "decoders.3.",
}


def _renamed(key: str) -> str:
    for old, new in _MONAI_TO_PATCH.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def test_patch_unetr_at_patch_16_is_monais_unetr_block_for_block():
    from monai.networks.nets import UNETR

    from thighct.models import PatchUNETR

    kw = {"feature_size": 4, "hidden_size": 32, "mlp_dim": 64, "num_heads": 2}
    torch.manual_seed(0)
    monai_net = UNETR(1, 5, (32, 32, 32), **kw).eval()
    ours = PatchUNETR(1, 5, (32, 32, 32), patch_size=16, **kw).eval()
    state = {_renamed(k): v for k, v in monai_net.state_dict().items()}
    ours.load_state_dict(state, strict=True)  # same parameters, one to one
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), monai_net(x))


@pytest.mark.parametrize("patch, tokens", [(8, 4**3), (4, 8**3)])
def test_finer_unetr_patches_give_more_tokens_and_full_resolution_logits(patch, tokens):
    cfg = {**TINY["networks"]["unetr"], "arch": "unetr", "patch_size": patch}
    net = build_network("unetr", cfg, LABELS.n_classes)
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        feats, hidden = net.vit(x)
        out = net(x)
    assert feats.shape[1] == tokens and len(hidden) == 12
    assert out.shape == (2, LABELS.n_classes, 32, 32, 32)
    assert net.levels == {8: 3, 4: 2}[patch]


def _saved(tmp_path, model="unet"):
    cfg = TINY["networks"][model]
    torch.manual_seed(0)
    net = build_network(model, cfg, LABELS.n_classes)
    path = tmp_path / "model.pt"
    save_model(path, net, model_meta(model, cfg, LABELS, TINY["preprocess"], best_epoch=3))
    return path, net, cfg


def test_saved_model_reloads_with_identical_outputs(tmp_path):
    path, net, cfg = _saved(tmp_path)
    loaded, meta = load_model(path, LABELS, net_cfg=cfg)
    x = torch.rand(1, 1, *network_roi(cfg))
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    assert meta["best_epoch"] == 3
    assert meta["network"]["roi"] == list(network_roi(cfg))
    assert [r["name"] for r in meta["labels"]] == LABELS.names


def test_model_file_holds_only_weights_and_plain_metadata(tmp_path):
    path, _, _ = _saved(tmp_path)
    blob = torch.load(path, weights_only=True)
    assert set(blob) == {"state_dict", "meta"}


def test_loading_against_another_label_table_fails_naming_file_and_fix(tmp_path):
    path, _, _ = _saved(tmp_path)
    table = LABELS.table.copy()
    table.loc[table["id"] == 5, "name"] = "vastus_something_else"
    with pytest.raises(ThighctError) as err:
        load_model(path, LabelTable(table))
    text = str(err.value)
    assert str(path) in text and "vastus_medialis" in text and "fix:" in text


def test_loading_against_fewer_classes_fails(tmp_path):
    path, _, _ = _saved(tmp_path)
    with pytest.raises(ThighctError, match="different label table"):
        load_model(path, LabelTable(LABELS.table.iloc[:10].reset_index(drop=True)))


def test_loading_against_another_network_config_fails(tmp_path):
    path, _, cfg = _saved(tmp_path)
    with pytest.raises(ThighctError, match="channels"):
        load_model(path, LABELS, net_cfg={**cfg, "channels": [8, 16, 32]})


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ThighctError, match="not a thighct model"):
        load_model(path, LABELS)


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"arch": "transformer", "roi": [32, 32, 32]}, "arch"),
        ({"arch": "unetr", "roi": [40, 40, 40]}, "divisible by 16"),
        ({"arch": "unetr", "roi": [32, 32, 32], "patch_size": 6}, "patch_size must be one of"),
        ({"arch": "unetr", "roi": [36, 36, 36], "patch_size": 8}, "divisible by 8"),
        (
            {"arch": "unet", "roi": [32, 32, 32], "channels": [4, 8], "strides": [2], "depth": 3},
            "depth",
        ),
        (
            {"arch": "unet", "roi": [36, 36, 36], "channels": [4, 8, 16], "strides": [2, 4]},
            "divisible by 8",
        ),
        ({"arch": "unet", "roi": [32, 32]}, "three positive"),
    ],
)
def test_a_bad_network_config_is_a_clear_error(cfg, message):
    with pytest.raises(ThighctError, match=message):
        build_network("net", cfg, 3)


def test_label_table_fixture_is_the_papers_30_classes():
    assert LABELS.n_classes == 30
    assert isinstance(LABELS.table, pd.DataFrame)


def test_weights_fit_the_config_they_were_trained_under(tmp_path):
    path, _, cfg = _saved(tmp_path)
    meta = check_applicable(path, "unet", LABELS, cfg, TINY["preprocess"])
    assert meta["model"] == "unet"
    assert len(file_sha256(path)) == 64


def test_weights_under_another_spacing_network_or_labels_name_every_key_with_both_values(
    tmp_path,
):
    path, _, cfg = _saved(tmp_path)
    preprocess = {**TINY["preprocess"], "spacing_mm": [1.5, 1.5, 2.0], "gamma": 1.0}
    network = {**cfg, "channels": [8, 16, 32]}
    table = LABELS.table.copy()
    table.loc[table["id"] == 5, "name"] = "vastus_something_else"
    with pytest.raises(ThighctError) as err:
        check_applicable(path, "unet", LabelTable(table), network, preprocess)
    text = str(err.value)
    assert str(path) in text and "fix:" in text
    assert "preprocess.spacing_mm: model [6.0, 6.0, 10.0] vs config [1.5, 1.5, 2.0]" in text
    assert "preprocess.gamma: model 2.0 vs config 1.0" in text
    assert "networks.unet.channels: model [4, 8, 16] vs config [8, 16, 32]" in text
    assert "labels id 5" in text and "vastus_something_else" in text


def test_a_model_file_without_its_preprocessing_is_not_applied(tmp_path):
    path, _, cfg = _saved(tmp_path)
    blob = torch.load(path, weights_only=True)
    del blob["meta"]["preprocess"]
    torch.save(blob, path)
    with pytest.raises(ThighctError, match="does not record its pre-processing"):
        check_applicable(path, "unet", LABELS, cfg, TINY["preprocess"])
