"""Training: it runs for each network, it learns, and a killed run resumes to the same weights."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, load_config

from thighct import train
from thighct.labels import LabelTable
from thighct.models import load_model
from thighct.run_settings import train_for_model

TINY = load_config(REPO / "tests" / "config" / "tiny.yaml")
# The train section as one model's job gets it (train.by_model merged, epochs a count).
TRAIN = train_for_model(TINY["train"], "unet")
N_CLASSES = 5


def small_labels(n: int = N_CLASSES) -> LabelTable:
    return LabelTable(
        pd.DataFrame(
            {
                "id": range(n),
                "name": ["background"] + [f"muscle{i}" for i in range(1, n)],
                "display": ["Background"] + [f"Muscle {i}" for i in range(1, n)],
                "group": ["background"] + ["anterior"] * (n - 1),
                "colour": ["#000000"] + ["#e6194b"] * (n - 1),
            }
        )
    )


def thigh_phantom(rng: np.random.Generator, shape=(32, 32, 32), n_classes: int = N_CLASSES) -> dict:
    """A cylinder cut into muscle sectors around a central bone, each with its own intensity."""
    x, y, z = np.indices(shape)
    centre = np.array(shape[:2]) / 2 + rng.uniform(-2, 2, 2)
    r = np.hypot((x - centre[0]) / 11, (y - centre[1]) / 9)
    body = (r < 1) & (z > 2) & (z < shape[2] - 3)
    angle = np.arctan2(y - centre[1], x - centre[0]) + rng.uniform(-0.2, 0.2)
    sector = ((angle + np.pi) / (2 * np.pi) * (n_classes - 2)).astype(int) % (n_classes - 2) + 1
    label = np.zeros(shape, np.uint8)
    label[body] = sector[body]
    label[body & (r < 0.3)] = n_classes - 1
    image = label * 0.15 + rng.normal(0, 0.05, shape)
    return {
        "subject": f"S{rng.integers(1e6)}",
        "image": image.astype(np.float32)[None],
        "label": label[None],
    }


def phantoms(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [thigh_phantom(rng) for _ in range(n)]


def settings(tmp_path, **over) -> dict:
    cfg = {**TRAIN, "checkpoint_dir": str(tmp_path / "checkpoints"), "threads": 1}
    cfg.update(over)
    return cfg


@pytest.mark.parametrize("model", ["unetr", "unet"])
def test_one_epoch_of_each_network_writes_a_loadable_model_and_a_log(tmp_path, model):
    labels = small_labels()
    net_cfg = TINY["networks"][model]
    cfg = settings(tmp_path, epochs=1)
    result = train.train_model(model, net_cfg, cfg, labels, phantoms(2, 1), phantoms(1, 2), seed=7)
    train.write_outputs(
        result, tmp_path / "model.pt", tmp_path / "log.tsv", model, net_cfg, cfg, labels, 7,
        TINY["preprocess"],
    )

    log = pd.read_csv(tmp_path / "log.tsv", sep="\t")
    assert list(log.columns) == ["epoch", "train_loss", "val_dice", "lr", "seconds"]
    assert log["epoch"].tolist() == [1]
    assert 0 <= log["val_dice"].iloc[0] <= 1
    net, meta = load_model(tmp_path / "model.pt", labels, net_cfg=net_cfg)
    assert meta["seed"] == 7 and meta["best_epoch"] == 1
    assert meta["preprocess"]["spacing_mm"] == TINY["preprocess"]["spacing_mm"]
    assert "figure" not in meta["preprocess"] and meta["thighct_version"]
    assert not train.checkpoint_path(cfg["checkpoint_dir"], model).exists()


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_killed_run_resumes_to_the_same_weights_bit_for_bit(tmp_path, precision):
    if precision == "bfloat16" and not train.cpu_has_native_bf16():
        pytest.skip("this CPU has no native bfloat16 (training would run in float32)")
    labels, net_cfg = small_labels(), TINY["networks"]["unet"]
    data = phantoms(4, 3), phantoms(1, 4)
    # With brightness/contrast augmentation on: its draws must resume too.
    cfg = settings(
        tmp_path,
        epochs=4,
        val_every=2,
        checkpoint_every=2,
        crops_per_image=2,
        intensity_prob=1.0,
        intensity_shift=0.1,
        intensity_scale=0.1,
        scale_prob=0.5,
        scale_range=0.15,
        flip_prob=0.5,
        precision=precision,
    )

    whole = train.train_model(
        "unet", net_cfg, cfg, labels, *data, seed=11, checkpoint_dir=tmp_path / "a"
    )
    killed = train.train_model(
        "unet", net_cfg, cfg, labels, *data, seed=11, checkpoint_dir=tmp_path / "b", stop_after=3
    )
    assert not killed.finished
    assert train.checkpoint_path(tmp_path / "b", "unet").exists()
    resumed_epochs = []
    resumed = train.train_model(
        "unet",
        net_cfg,
        cfg,
        labels,
        *data,
        seed=11,
        checkpoint_dir=tmp_path / "b",
        on_epoch=lambda row: resumed_epochs.append(row["epoch"]),
    )

    assert resumed_epochs == [4]
    assert whole.precision == resumed.precision == precision
    a, b = whole.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    cols = ["epoch", "train_loss", "val_dice", "lr"]
    pd.testing.assert_frame_equal(whole.log[cols], resumed.log[cols])


def test_a_changed_training_config_starts_afresh_instead_of_resuming(tmp_path):
    labels, net_cfg = small_labels(), TINY["networks"]["unet"]
    data = phantoms(2, 3), phantoms(1, 4)
    cfg = settings(tmp_path, epochs=3)
    train.train_model("unet", net_cfg, cfg, labels, *data, seed=11, stop_after=1)
    epochs = []
    train.train_model(
        "unet",
        net_cfg,
        {**cfg, "lr": cfg["lr"] / 2},
        labels,
        *data,
        seed=11,
        on_epoch=lambda row: epochs.append(row["epoch"]),
    )
    assert epochs == [1, 2, 3]


def test_training_on_small_phantoms_learns(tmp_path):
    """Validation Dice rises well above its value after the first epoch."""
    labels, net_cfg = small_labels(), {**TINY["networks"]["unet"], "channels": [8, 16, 32]}
    cfg = settings(
        tmp_path,
        epochs=12,
        val_every=1,
        lr=3e-3,
        lr_schedule="cosine",
        crops_per_image=2,
        batch_size=2,
        # The sectors of these phantoms are not mirror-symmetric, so mirrored crops are new
        # layouts to learn; 12 epochs measure learning, not that.
        flip_prob=0.0,
    )
    result = train.train_model("unet", net_cfg, cfg, labels, phantoms(6, 5), phantoms(2, 6), seed=3)
    dice = result.log["val_dice"].tolist()
    assert result.best_dice == max(dice)
    assert dice[0] < 0.4
    assert result.best_dice > 0.7
    assert result.best_dice > dice[0] + 0.3


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    labels, net_cfg = small_labels(), TINY["networks"]["unet"]
    data = phantoms(2, 3), []
    cfg = settings(tmp_path, epochs=1)
    a, b, c = (
        train.train_model("unet", net_cfg, cfg, labels, *data, seed=s).net.state_dict()
        for s in (1, 1, 2)
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_dice_of_a_mask_with_itself_is_1_and_a_missed_class_counts_0():
    truth = torch.zeros(8, 8, 8, dtype=torch.long)
    truth[:4] = 1
    truth[4:, :4] = 2
    assert train.mean_dice(truth, truth, 3) == 1.0
    missed = truth.clone()
    missed[missed == 2] = 1
    # class 1: 2*256/(256+384) = 0.8, class 2: 0
    assert math.isclose(train.mean_dice(missed, truth, 3), 0.4)


def test_learning_rate_warms_up_then_decays_to_zero_by_cosine():
    factors = [train.lr_factor(s, 100, 10, "cosine") for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))
    assert factors[-1] < 0.01
    assert train.lr_factor(50, 100, 0, "constant") == 1.0


def test_labels_beyond_the_label_table_are_refused(tmp_path):
    item = thigh_phantom(np.random.default_rng(0), n_classes=7)
    with pytest.raises(train.ThighctError, match="label table has 5 classes"):
        train.train_model(
            "unet", TINY["networks"]["unet"], settings(tmp_path), small_labels(), [item], [], seed=1
        )


def test_an_epoch_visits_every_training_image_once_in_seeded_order():
    a = train.epoch_batches(7, 2, order_seed=5)
    assert sorted(i for b in a for i in b) == list(range(7))
    assert [len(b) for b in a] == [2, 2, 2, 1]
    assert a == train.epoch_batches(7, 2, order_seed=5) != train.epoch_batches(7, 2, order_seed=6)


def test_epochs_must_be_resolved_to_a_count_for_the_model():
    with pytest.raises(train.ThighctError, match="positive count"):
        train.TrainSettings.from_config({**TRAIN, "epochs": None})
    assert train.TrainSettings.from_config({**TRAIN, "epochs": 3}).epochs == 3
    with pytest.raises(train.ThighctError, match="by_model"):
        train.TrainSettings.from_config(TINY["train"])  # the whole section: not one model's


def test_scale_augmentation_zooms_image_and_label_together_by_a_seeded_factor():
    n, size, side = 4, 24, 8
    labels = torch.zeros(n, 1, size, size, size, dtype=torch.long)
    lo = (size - side) // 2
    labels[:, :, lo : lo + side, lo : lo + side, lo : lo + side] = 3
    images = labels.float() / 3
    off = train.TrainSettings(epochs=1)
    assert train.augment_scale(images, labels, off) == (images, labels)
    on = train.TrainSettings(epochs=1, scale_prob=1.0, scale_range=0.3)
    torch.manual_seed(7)
    out_images, out_labels = train.augment_scale(images, labels, on)
    torch.manual_seed(7)
    factors = 1.0 + (2 * torch.rand(2, n)[1] - 1) * 0.3
    torch.manual_seed(7)
    again = train.augment_scale(images, labels, on)
    assert torch.equal(again[0], out_images) and torch.equal(again[1], out_labels)
    assert out_labels.dtype == torch.long and set(out_labels.unique().tolist()) <= {0, 3}
    for k in range(n):
        # The cube's edge scales with the factor (nearest neighbour: within a voxel).
        edge = (out_labels[k, 0] == 3).any(dim=(1, 2)).sum().item()
        assert abs(edge - side * factors[k].item()) <= 1.0, (edge, factors[k])
        # The image moves with its label: the bright voxels are the labelled ones.
        bright = out_images[k, 0] > 0.5
        assert (bright == (out_labels[k, 0] == 3)).float().mean() > 0.98
    assert not torch.equal(out_labels, labels)


def test_flip_augmentation_mirrors_image_and_label_together_per_crop():
    n = 8
    images = torch.rand(n, 1, 5, 4, 3)
    labels = torch.randint(0, 4, (n, 1, 5, 4, 3))
    before = images.clone(), labels.clone()
    off = train.TrainSettings(epochs=1)
    assert train.augment_flip(images, labels, off) == (images, labels)
    on = train.TrainSettings(epochs=1, flip_prob=0.5, flip_axes=(0, 2))
    torch.manual_seed(3)
    out_images, out_labels = train.augment_flip(images, labels, on)
    torch.manual_seed(3)
    draws = torch.rand(2, n) < 0.5
    torch.manual_seed(3)
    again = train.augment_flip(images, labels, on)
    assert torch.equal(again[0], out_images) and torch.equal(again[1], out_labels)
    seen = set()
    for k in range(n):
        # Crop axes (x, y, z) are tensor dims 1..3 of a (1, x, y, z) crop.
        dims = [1 + a for a, flip in zip((0, 2), draws[:, k].tolist(), strict=True) if flip]
        seen.add(tuple(dims))
        want_image = torch.flip(images[k], dims) if dims else images[k]
        want_label = torch.flip(labels[k], dims) if dims else labels[k]
        assert torch.equal(out_images[k], want_image) and torch.equal(out_labels[k], want_label)
    assert len(seen) > 1  # some crops mirrored, some not (seed 3)
    # The input batch is left as it was.
    assert torch.equal(images, before[0]) and torch.equal(labels, before[1])


def test_intensity_augmentation_is_a_seeded_affine_change_per_crop():
    images = torch.rand(6, 1, 4, 4, 4)
    off = train.TrainSettings(epochs=1)
    assert train.augment_intensity(images, off) is images
    on = train.TrainSettings(epochs=1, intensity_prob=1.0, intensity_shift=0.1, intensity_scale=0.2)
    torch.manual_seed(5)
    first = train.augment_intensity(images, on)
    torch.manual_seed(5)
    again = train.augment_intensity(images, on)
    assert torch.equal(first, again)
    for crop, out in zip(images, first, strict=True):
        # One scale and one shift per crop, within the configured bounds.
        a, b = np.polyfit(crop.flatten().numpy(), out.flatten().numpy(), 1)
        assert 0.8 - 1e-4 <= a <= 1.2 + 1e-4 and abs(b) <= 0.1 + 1e-4
        np.testing.assert_allclose(out.numpy(), a * crop.numpy() + b, atol=1e-5)
    assert not torch.equal(first, images)


CPUINFO_X86 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
CPUINFO_OLD = "processor\t: 0\nflags\t\t: fpu avx2 avx512f\n"
CPUINFO_ARM = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path):
    for k, (text, expected) in enumerate(
        [(CPUINFO_X86, True), (CPUINFO_OLD, False), (CPUINFO_ARM, True)]
    ):
        path = tmp_path / f"cpuinfo{k}"  # read once per path
        path.write_text(text)
        assert train.cpu_has_native_bf16(path) is expected
    assert train.cpu_has_native_bf16(tmp_path / "missing") is False


@pytest.mark.parametrize(
    ("precision", "amp", "device", "native", "expected"),
    [
        ("auto", True, "cpu", True, torch.bfloat16),
        ("auto", True, "cpu", False, None),  # never emulated bfloat16
        ("bfloat16", True, "cpu", False, None),
        ("float32", True, "cpu", True, None),
        ("auto", True, "cuda", True, torch.float16),  # CUDA: train.amp decides
        ("bfloat16", False, "cuda", True, None),
    ],
)
def test_the_autocast_dtype_follows_precision_device_and_cpu(
    monkeypatch, precision, amp, device, native, expected
):
    monkeypatch.setattr(train.precision, "cpu_has_native_bf16", lambda *a: native)
    settings_ = train.TrainSettings.from_config({"epochs": 1, "precision": precision, "amp": amp})
    assert train.autocast_dtype(settings_, torch.device(device)) is expected


def test_an_unknown_precision_is_refused_with_the_allowed_values():
    with pytest.raises(train.ThighctError, match="auto, float32 or bfloat16"):
        train.TrainSettings.from_config({"epochs": 1, "precision": "fp8"})


def test_channels_last_is_a_memory_layout_not_other_arithmetic(tmp_path):
    labels, net_cfg = small_labels(), TINY["networks"]["unet"]
    torch.manual_seed(0)
    net = train.build_network("unet", net_cfg, labels.n_classes).eval()
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        plain = net(x)
        net_cl = net.to(memory_format=torch.channels_last_3d)
        cl = net_cl(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(plain, cl, rtol=1e-4, atol=1e-5)
    # Training in channels-last writes plain (contiguous) weights.
    result = train.train_model(
        "unet",
        net_cfg,
        settings(tmp_path, epochs=1, channels_last=True),
        labels,
        phantoms(2, 5),
        phantoms(1, 6),
        seed=3,
    )
    assert all(v.is_contiguous() for v in result.net.state_dict().values())
    assert 0 <= result.best_dice <= 1
