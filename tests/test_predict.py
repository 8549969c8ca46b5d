"""Prediction: streamed sliding windows give MONAI's labels; predictions lie on the scan's own grid;
the CPU fast path gives the plain path's labels, and falls back to it with one warning."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNETR, UNet
from torch import nn

from thighct import io, predict
from thighct import preprocess as pp
from thighct.predict import cpu_fastpath as fast
from thighct.predict import cpu_kernels, network, streaming, windows

REPO = Path(__file__).resolve().parents[1]
REAL_CT = REPO.parent / "shared" / "data" / "real-ct" / "example_ct.nii.gz"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: tiny networks run many tiny ops, and on a shared 2-core machine each
    op of a 2-thread run waits for the other thread to be scheduled."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_unet(n_classes=5):
    torch.manual_seed(0)
    return UNet(3, 1, n_classes, (4, 8), (2,), norm="instance").eval()


def small_unetr(n_classes=5, roi=(16, 16, 16)):
    torch.manual_seed(0)
    return UNETR(1, n_classes, roi, feature_size=4, hidden_size=32, mlp_dim=64, num_heads=2).eval()


def monai_labels(net, image, roi, overlap, mode="constant"):
    with torch.no_grad():
        x = torch.from_numpy(image)[None, None]
        out = sliding_window_inference(x, roi, 1, net, overlap=overlap, mode=mode)
    return out.argmax(1)[0].numpy()


def random_image(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.mark.parametrize(
    "shape, roi, overlap",
    [
        ((40, 23, 31), (16, 16, 16), 0.25),
        ((300, 133, 225), (96, 96, 96), 0.25),
        ((50, 16, 70), (16, 16, 8), 0.6),
    ],
)
def test_windows_are_monais_windows_in_monais_order(shape, roi, overlap):
    steps = windows.scan_interval(shape, roi, overlap)
    theirs = [tuple(s.start for s in sl) for sl in dense_patch_slices(shape, roi, steps)]
    assert windows.window_starts(shape, roi, overlap) == theirs
    assert predict.count_windows(shape, roi, overlap) == len(theirs)


@pytest.mark.parametrize("mode", ["constant", "gaussian"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_streamed_labels_equal_monai_sliding_window_labels(mode, axis):
    """Same windows, same weights: the slab-streamed argmax is MONAI's, voxel for voxel."""
    net = small_unet()
    image = random_image((41, 23, 30))  # not a multiple of the step on any axis
    roi = (16, 16, 16)
    expected = monai_labels(net, image, roi, 0.25, mode)
    got = streaming.sliding_window_labels(
        image, net, roi, 5, overlap=0.25, mode=mode, sw_batch_size=3, slab_axis=axis
    )
    assert got.dtype == np.uint8 and got.shape == image.shape
    np.testing.assert_array_equal(got, expected)


def test_windows_computed_by_two_workers_give_the_same_labels():
    net = small_unet()
    image = random_image((41, 23, 30), seed=2)
    one = streaming.sliding_window_labels(image, net, (16, 16, 16), 5, sw_batch_size=2)
    two = streaming.sliding_window_labels(image, net, (16, 16, 16), 5, sw_batch_size=2, workers=2)
    np.testing.assert_array_equal(two, one)
    np.testing.assert_array_equal(one, monai_labels(net, image, (16, 16, 16), 0.25))


def test_axes_shorter_than_the_roi_are_padded_as_monai_pads():
    net = small_unet()
    image = random_image((40, 9, 20))
    expected = monai_labels(net, image, (16, 16, 16), 0.5)
    got = streaming.sliding_window_labels(image, net, (16, 16, 16), 5, overlap=0.5)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("mode", ["constant", "gaussian"])
def test_prepared_unetr_gives_monais_labels(mode):
    """Group norm for instance norm, channels-last and the head applied after blending."""
    net = small_unetr()
    image = random_image((45, 30, 37), seed=1)
    expected = monai_labels(net, image, (16, 16, 16), 0.25, mode)
    settings = predict.InferSettings(mode=mode, sw_batch_size=4)
    seg = predict.prepare_network(copy.deepcopy(net), 5, torch.device("cpu"), settings)
    assert seg.head is not None and seg.fast_path
    assert isinstance(seg.trunk, fast.StreamlinedUNETR)
    assert isinstance(seg.trunk.net.encoder1.layer, fast.OneChannelResBlock)
    assert isinstance(seg.trunk.net.vit.blocks[0].mlp.linear1, fast.OneDNNLinear)
    got = predict.predict_labels(image, seg, (16, 16, 16), settings)
    # Float rounding differs (other kernels, other summation order): near-ties may flip.
    assert (got == expected).mean() >= 0.999


def test_a_linear_layer_routed_to_onednn_computes_the_same_product():
    torch.manual_seed(0)
    for bias in (True, False):
        linear = nn.Linear(48, 20, bias=bias).eval()
        routed = fast.OneDNNLinear(linear)
        # (tokens, features), (batch, tokens, features) and a transposed (strided) input.
        for x in (torch.randn(7, 48), torch.randn(2, 9, 48), torch.randn(48, 9).t()[None]):
            with torch.inference_mode():
                want, got = linear(x), routed(x)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    holder = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 2)), nn.ReLU())
    assert fast.route_linears_to_onednn(holder) == 2
    assert isinstance(holder[1][0], fast.OneDNNLinear)


def test_in_place_norm_of_a_channels_last_tensor_is_instance_norm():
    """The channels-last path (row sums and a Gram diagonal) against torch's instance norm."""
    x = torch.randn(2, 6, 7, 8, 9) * 3 + 2
    for affine in (False, True):
        norm = nn.InstanceNorm3d(6, affine=affine)
        if affine:
            nn.init.normal_(norm.weight)
            nn.init.normal_(norm.bias)
        expected = norm(x)
        given = x.contiguous(memory_format=torch.channels_last_3d)
        out = fast.InstanceNormInPlace(norm)(given)
        assert out.data_ptr() == given.data_ptr()  # in place
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("patch", "norm"), [(8, "instance"), (4, "instance"), (8, "batch")])
def test_prepared_patch_unetr_gives_its_plain_labels(patch, norm):
    from thighct.models import PatchUNETR

    torch.manual_seed(2)
    net = PatchUNETR(
        1,
        5,
        (16, 16, 16),
        patch_size=patch,
        feature_size=4,
        hidden_size=32,
        mlp_dim=64,
        num_heads=2,
        norm_name=norm,
    ).eval()
    for module in net.modules():  # trained-looking statistics, not the identity
        if isinstance(module, nn.BatchNorm3d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    image = random_image((40, 27, 33), seed=4)
    expected = monai_labels(net, image, (16, 16, 16), 0.25)
    settings = predict.InferSettings(sw_batch_size=2)
    seg = predict.prepare_network(copy.deepcopy(net), 5, torch.device("cpu"), settings)
    assert isinstance(seg.trunk, fast.StreamlinedUNETR)
    got = predict.predict_labels(image, seg, (16, 16, 16), settings)
    assert (got == expected).mean() >= 0.999


def test_instance_norm_as_group_norm_is_the_same_normalisation():
    x = torch.randn(2, 6, 7, 8, 9)
    for affine in (False, True):
        norm = nn.InstanceNorm3d(6, affine=affine)
        if affine:
            nn.init.normal_(norm.weight)
            nn.init.normal_(norm.bias)
        torch.testing.assert_close(cpu_kernels.InstanceNormAsGroupNorm(norm)(x), norm(x))


def test_the_head_is_split_only_from_a_final_pointwise_convolution():
    unetr = small_unetr()
    x = torch.rand(2, 1, 16, 16, 16)
    with torch.no_grad():
        logits = unetr(x)
        trunk, head = streaming.split_linear_head(copy.deepcopy(unetr))
        features = trunk(x)
    assert head.weight.shape == (5, 4)
    again = (
        torch.einsum("cf,bfxyz->bcxyz", head.weight, features)
        + head.bias[None, :, None, None, None]
    )
    torch.testing.assert_close(again, logits, rtol=1e-4, atol=1e-5)
    assert streaming.split_linear_head(small_unet()) is None  # ends in a 3x3x3 (transposed) conv


class ThresholdNet(nn.Module):
    """Class 1 where the input exceeds 0.5, else 0: makes predictions checkable voxel by voxel."""

    def forward(self, x):
        return torch.cat([0.5 - x, x - 0.5], dim=1)


def test_prediction_lies_on_the_ingested_grid_of_a_non_ras_scan():
    """An LPS scan with anisotropic voxels: the labels come back on the ingested RAS grid, and a
    thresholding 'network' finds exactly the bright voxels there."""
    rng = np.random.default_rng(0)
    shape = (50, 44, 23)
    hu = np.full(shape, -1000, np.int16)
    hu[8:40, 10:35, 3:20] = 40
    bright = rng.random(shape) < 0.05
    hu[8:40, 10:35, 3:20][bright[8:40, 10:35, 3:20]] = 300
    lps = np.diag([-0.9, -0.9, 2.5, 1.0])  # DICOM-like: i towards the left, j posterior
    lps[:3, 3] = [20.0, 30.0, -100.0]
    ras_hu, ras_affine = io.to_canonical(hu, lps)  # what ingest stores
    assert io.orientation_of(ras_affine) == "RAS"
    settings = pp.PreprocessSettings(spacing_mm=(0.9, 0.9, 2.5), body_coarse_mm=2.0)
    pre = pp.preprocess_volume(ras_hu, ras_affine, settings)
    seg = predict.Segmenter(ThresholdNet(), 2, None, torch.device("cpu"))
    native = predict.predict_native(
        pre.image, pre.transform, seg, (16, 16, 16), predict.InferSettings()
    )
    assert native.shape == ras_hu.shape and native.dtype == np.uint8
    np.testing.assert_array_equal(native, (ras_hu >= 300).astype(np.uint8))
    predict.check_native_grid(pre.transform, ras_hu.shape, ras_affine)


def test_a_stale_transform_is_refused():
    from thighct.errors import ThighctError

    transform = {"ingested": {"shape": [10, 10, 10], "affine": np.eye(4).tolist()}}
    with pytest.raises(ThighctError, match="out of date"):
        predict.check_native_grid(transform, (10, 10, 11), np.eye(4), subject="S1")


def test_settings_from_config_reject_unknown_blending():
    with pytest.raises(ValueError, match="mode"):
        predict.InferSettings.from_config({"mode": "median"})
    assert predict.InferSettings.from_config({"overlap": 0.5}).overlap == 0.5


def test_mirrored_predictor_averages_the_window_and_its_mirror_images():
    torch.manual_seed(0)
    conv = nn.Conv3d(1, 3, 3, padding=1).eval()
    x = torch.rand(2, 1, 6, 7, 8)
    assert streaming.mirrored(conv, ()) is conv
    with torch.inference_mode():
        got = streaming.mirrored(conv, (0, 2))(x)
        expected = sum(torch.flip(conv(torch.flip(x, d)), d) for d in [(), (2,), (4,), (2, 4)]) / 4
        plain = conv(x)
        # Averaged over the mirror images, the output mirrors with its input.
        for d in [(2,), (4,)]:
            flipped_first = streaming.mirrored(conv, (0, 2))(torch.flip(x, d))
            torch.testing.assert_close(flipped_first, torch.flip(got, d))
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, plain, atol=1e-3)


def test_mirroring_makes_the_prepared_network_left_right_equivariant_end_to_end():
    """Windows, blending, head and argmax: labels of the mirrored scan, mirrored back."""
    net = small_unetr()
    # x = 16 + 2 x 12: the windows' grid along x is its own mirror image at overlap 0.25.
    image = random_image((40, 30, 37), seed=2)
    mirrored_image = np.ascontiguousarray(image[::-1])
    agreement = {}
    for axes in [(), (0,)]:
        settings = predict.InferSettings(sw_batch_size=2, mirror_axes=axes)
        seg = predict.prepare_network(copy.deepcopy(net), 5, torch.device("cpu"), settings)
        labels = predict.predict_labels(image, seg, (16, 16, 16), settings)
        back = predict.predict_labels(mirrored_image, seg, (16, 16, 16), settings)[::-1]
        agreement[axes] = (labels == back).mean()
    assert agreement[(0,)] >= 0.999
    assert agreement[()] < 0.95


def test_mirror_axes_from_config_are_checked():
    assert predict.InferSettings.from_config({"mirror_axes": [0, 2]}).mirror_axes == (0, 2)
    assert predict.InferSettings.from_config({"mirror_axes": []}).mirror_axes == ()
    for bad in ([3], [0, 0]):
        with pytest.raises(ValueError, match="mirror_axes"):
            predict.InferSettings.from_config({"mirror_axes": bad})


@pytest.mark.realct
@pytest.mark.skipif(not REAL_CT.exists(), reason=f"no real CT at {REAL_CT}")
def test_a_real_ct_with_metal_and_a_cut_field_of_view_gives_a_well_formed_prediction(tmp_path):
    """TotalSegmentator's example CT (real HU, a hip implant, cut at the femoral heads), the
    default config's pre-processing and UNETR (trained if results/models/unetr/model.pt exists,
    else untrained: the point is a well-formed label map on the scan's own grid)."""
    import yaml

    from thighct import ingest, volumes
    from thighct.body import body_region
    from thighct.labels import read_labels
    from thighct.models import build_network, load_model

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    labels = read_labels(REPO / "config" / "labels.tsv")
    ingest.ingest_subject(
        REAL_CT,
        tmp_path / "image.nii.gz",
        tmp_path / "info.json",
        ingest.IngestSettings(),
        subject="realct",
    )
    scan = io.load_nifti(tmp_path / "image.nii.gz")
    pre = pp.preprocess_volume(
        scan.array, scan.affine, pp.PreprocessSettings.from_config(config["preprocess"])
    )
    assert np.isfinite(pre.image).all() and 0.0 <= pre.image.min() and pre.image.max() <= 1.0
    trained = REPO / "results" / "models" / "unetr" / "model.pt"
    net_cfg = config["networks"]["unetr"]
    if trained.exists():
        net, meta = load_model(trained, labels)
        net_cfg = meta["network"]
    else:
        torch.manual_seed(0)
        net = build_network("unetr", net_cfg, labels.n_classes)
    settings = predict.InferSettings.from_config(config["infer"])
    seg = predict.prepare_network(net, labels.n_classes, torch.device("cpu"), settings)
    native = predict.predict_native(pre.image, pre.transform, seg, net_cfg["roi"], settings)
    assert native.shape == scan.shape and native.dtype == np.uint8
    body_settings = pp.PreprocessSettings.from_config(config["preprocess"])
    body = body_region(scan.array, scan.affine, body_settings)
    labelled_outside = int(((native > 0) & ~body).sum())
    counts = predict.postprocess_labels(
        native,
        scan.array,
        scan.affine,
        body_settings,
        predict.PostprocessSettings.from_config(config["infer"]["postprocess"]),
    )
    assert counts["outside_body"] == labelled_outside
    assert not native[~body].any()
    assert int(native.max()) < labels.n_classes
    io.save_nifti(tmp_path / "pred.nii.gz", native, scan.affine, np.uint8)
    back = io.load_nifti(tmp_path / "pred.nii.gz")
    np.testing.assert_array_equal(back.affine, scan.affine)
    np.testing.assert_array_equal(back.array, native)
    table = volumes.subject_volumes(
        "realct", native, scan.array, scan.affine, labels, volumes.VolumeSettings()
    )
    counts = np.bincount(native.ravel(), minlength=labels.n_classes)
    classes = table[table["class_id"] > 0].set_index("class_id")
    np.testing.assert_allclose(classes["volume_mm3"], counts[1:] * 27.0)
    np.testing.assert_allclose(
        classes["volume_left_mm3"] + classes["volume_right_mm3"], classes["volume_mm3"]
    )
    on_edge = set(np.unique(native[:, :, 0])) | set(np.unique(native[:, :, -1]))
    assert set(classes.index[classes["fov_cut"]]) == on_edge - {0}


def test_fig6_dice_of_a_mask_with_itself_is_one_and_absent_classes_are_left_out():
    from thighct import metrics
    from thighct.plots import segmentation

    truth = np.zeros((6, 6, 4), np.uint8)
    truth[:3] = 1
    truth[3:, :3] = 2
    assert segmentation.mean_dice(metrics.confusion_matrix(truth, truth, 30)) == 1.0
    pred = truth.copy()
    pred[pred == 2] = 0  # class 2 missed: Dice 0; class 1 perfect; the rest absent
    assert segmentation.mean_dice(metrics.confusion_matrix(pred, truth, 30)) == 0.5


def test_fig6_slices_span_the_labelled_extent_and_the_figure_is_written(tmp_path):
    from thighct.labels import read_labels
    from thighct.plots import segmentation

    labels = read_labels(REPO / "config" / "labels.tsv")
    truth = np.zeros((20, 16, 30), np.uint8)
    truth[5:15, 4:12, 10:21] = 3
    assert segmentation.level_slices(truth, [0.0, 0.5, 1.0]) == [10, 15, 20]
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    rows = [
        segmentation.ExampleRow("S1", k, 3.0 * k, np.full((20, 16), 40.0), truth[:, :, k],
                                {"unetr": truth[:, :, k]}, affine, {"unetr": 1.0})
        for k in (10, 15)
    ]  # fmt: skip
    png = tmp_path / "fig6.png"
    segmentation.plot_examples(rows, ["unetr"], labels, png, model_names={"unetr": "UNETR"}, dpi=50)
    assert png.stat().st_size > 0


def _body_scene():
    """An axial ellipse of muscle HU in air, a gas bubble inside it, a thin table below."""
    hu = np.full((40, 34, 12), -1000.0, np.float32)
    x, y = np.ogrid[:40, :34]
    body = ((x - 20) / 14.0) ** 2 + ((y - 14) / 10.0) ** 2 <= 1
    hu[body] = 40.0
    hu[18:22, 12:16, 4:7] = -900.0  # bowel gas: a hole in the body, still inside it
    hu[:, 30:32, :] = 300.0  # the table: two voxels thick, apart from the body
    return hu, np.diag([3.0, 3.0, 5.0, 1.0]), body


def test_labels_in_the_air_and_on_the_table_are_cleared_and_the_body_is_kept():
    hu, affine, body = _body_scene()
    labels = np.zeros(hu.shape, np.uint8)
    labels[body] = 3
    labels[19, 13, 5] = 7  # inside the gas bubble: kept (the body's holes are filled)
    labels[2:4, 0:2, :] = 5  # air, away from the body
    labels[10:30, 30:32, 2:8] = 6  # on the table
    expected_cleared = 2 * 2 * 12 + 20 * 2 * 6
    before = labels.copy()
    counts = predict.postprocess_labels(
        labels, hu, affine, pp.PreprocessSettings(), predict.PostprocessSettings()
    )
    assert counts == {"outside_body": expected_cleared, "small_pieces": 0}
    assert not labels[2:4, 0:2, :].any() and not labels[:, 30:32, :].any()
    np.testing.assert_array_equal(labels[body], before[body])
    assert labels[19, 13, 5] == 7
    off = predict.PostprocessSettings(body_only=False)
    again = before.copy()
    assert predict.postprocess_labels(again, hu, affine, pp.PreprocessSettings(), off) == {
        "outside_body": 0,
        "small_pieces": 0,
    }
    np.testing.assert_array_equal(again, before)


def test_small_pieces_of_a_class_are_dropped_and_both_sides_kept():
    labels = np.zeros((30, 10, 10), np.uint8)
    labels[2:7, 2:7, 2:7] = 2  # left, 125 voxels
    labels[20:25, 2:7, 2:6] = 2  # right, 100 voxels
    labels[14, 8, 8] = 2  # a stray voxel
    labels[14, 2:4, 2:4] = 4  # one piece only: kept whatever its size
    before = labels.copy()
    assert predict.postprocess.drop_small_pieces(labels, 0.0) == {} and np.array_equal(
        labels, before
    )
    assert predict.postprocess.drop_small_pieces(labels, 0.1) == {2: 1}
    assert labels[14, 8, 8] == 0
    assert (labels == 2).sum() == 225 and (labels == 4).sum() == 4
    with pytest.raises(ValueError, match="min_component_fraction"):
        predict.PostprocessSettings.from_config({"min_component_fraction": 2})


def test_the_fused_one_channel_residual_block_computes_monais_block():
    from monai.networks.blocks.dynunet_block import UnetResBlock

    torch.manual_seed(3)
    block = UnetResBlock(3, 1, 6, kernel_size=3, stride=1, norm_name=("instance", {"affine": True}))
    for m in block.modules():
        if isinstance(m, nn.InstanceNorm3d):
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    block.eval()
    x = torch.rand(2, 1, 12, 10, 9) * 2 + 0.5
    with torch.inference_mode():
        expected = block(x)
        fused = copy.deepcopy(block)
        fast.swap_instance_norms(fused, in_place=True)
        holder = nn.Sequential(fused)
        assert fast.fuse_one_channel_blocks(holder) == 1
        assert isinstance(holder[0], fast.OneChannelResBlock)
        got = holder(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_freed_memory_is_kept_for_reuse_in_its_own_process():
    """Process-global (glibc mallopt), so checked in a child process: the call succeeds and
    large tensors are still allocated, freed and reused."""
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from thighct.predict import cpu_fastpath\n"
        "assert cpu_fastpath.reuse_freed_memory()\n"
        "for _ in range(3):\n"
        "    a = torch.ones(64 << 20, dtype=torch.uint8)\n"
        "    assert int(a.sum()) == 64 << 20\n"
        "    del a\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_half_precision_sums_give_the_float32_labels_of_near_all_voxels():
    net = small_unetr()
    image = random_image((45, 30, 37), seed=5)
    settings = predict.InferSettings(mode="gaussian", sw_batch_size=2)
    seg = predict.prepare_network(copy.deepcopy(net), 5, torch.device("cpu"), settings)
    wide = predict.predict_labels(image, seg, (16, 16, 16), replace(settings, accumulate="float32"))
    half = predict.predict_labels(image, seg, (16, 16, 16), settings)
    assert settings.accumulate == "float16"  # the default
    assert (half == wide).mean() >= 0.999
    assert (half == monai_labels(net, image, (16, 16, 16), 0.25, "gaussian")).mean() >= 0.999


def test_a_half_precision_sum_that_could_overflow_is_widened_to_float32(caplog):
    """Logits of 1e4 over 8 overlapping windows exceed float16's range (65504)."""

    class Loud(nn.Module):
        def forward(self, x):
            return torch.cat([x * 1e4, 1e4 - x * 1e4, x * 0], dim=1)

    image = random_image((24, 24, 24), seed=6)
    kwargs = dict(overlap=0.5, mode="gaussian")
    wide = streaming.sliding_window_labels(image, Loud(), (16, 16, 16), 3, **kwargs)
    with caplog.at_level("WARNING", logger="thighct.predict.streaming"):
        half = streaming.sliding_window_labels(
            image, Loud(), (16, 16, 16), 3, accumulate="float16", **kwargs
        )
    assert "accumulating in float32" in caplog.text
    np.testing.assert_array_equal(half, wide)
    with pytest.raises(ValueError, match="accumulate"):
        predict.InferSettings.from_config({"accumulate": "bfloat16"})


def test_the_most_windows_over_one_voxel_are_counted_from_the_windows_themselves():
    for size, roi, overlap in [
        ((24, 24, 24), (16, 16, 16), 0.5),
        ((300, 133, 225), (96,) * 3, 0.25),
    ]:
        counts = np.zeros(size, dtype=int)
        for corner in windows.window_starts(size, roi, overlap):
            counts[tuple(slice(c, c + r) for c, r in zip(corner, roi, strict=True))] += 1
        assert windows.max_cover(size, roi, overlap) == counts.max()


def test_a_convolution_written_into_a_buffer_adds_to_it_as_a_convolution_would():
    torch.manual_seed(3)
    conv = nn.Conv3d(6, 4, 3, padding=1).eval()
    cl = torch.channels_last_3d
    x = torch.randn(2, 6, 7, 8, 9).contiguous(memory_format=cl)
    out = torch.full((2, 4, 7, 8, 9), 5.0).contiguous(memory_format=cl)
    weight = conv.weight.detach().contiguous(memory_format=cl)
    with torch.inference_mode():
        want = conv(x)
        fast._conv_into(out, x, weight, conv.bias, conv, accumulate=False)  # overwrites the 5s
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
        fast._conv_into(out, x, weight, None, conv, accumulate=True)
        torch.testing.assert_close(out, 2 * want - conv.bias.view(1, -1, 1, 1, 1))
        # A 1x1x1 convolution of a concatenation, written over its first half.
        point = nn.Conv3d(10, 6, 1).eval()
        other = torch.randn(2, 4, 7, 8, 9).contiguous(memory_format=cl)
        want = point(torch.cat([x, other], dim=1))
        w = point.weight.detach()[:, :, 0, 0, 0]
        cpu_kernels.project_into(
            x, other, w[:, :6].T.contiguous(), w[:, 6:].T.contiguous(), point.bias
        )
    torch.testing.assert_close(x, want, rtol=1e-5, atol=1e-5)


def test_every_up_block_of_a_prepared_unetr_runs_in_place_and_gives_monais_output():
    """All four up-blocks take the in-place path (their split weights are cached), the last in
    the three buffers kept per thread; the features equal MONAI's up to float rounding."""
    net = small_unetr()
    settings = predict.InferSettings(sw_batch_size=2)
    seg = predict.prepare_network(copy.deepcopy(net), 5, torch.device("cpu"), settings)
    x = torch.rand(2, 1, 16, 16, 16)
    with torch.inference_mode():
        want = net(x)
        for _ in range(2):  # the second call reuses the kept buffers
            features = seg.trunk(x.contiguous(memory_format=torch.channels_last_3d))
    got = torch.einsum("cf,bfxyz->bcxyz", seg.head.weight, features)
    got = got + seg.head.bias.view(1, -1, 1, 1, 1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert len(seg.trunk._split_cache) == 4
    kept = seg.trunk._local.buffers
    assert len(kept) == 3 and tuple(kept[0].shape) == (2, 4, 16, 16, 16)
    assert features.data_ptr() == kept[2].data_ptr()  # the output is the third buffer


def test_cuda_runs_the_plain_modules_and_auto_picks_the_device(monkeypatch):
    """On CUDA the fast path is never chosen and nothing CPU-only is even vetted."""
    settings = predict.InferSettings()
    assert predict.uses_cpu_fast_path(torch.device("cpu"), settings)
    assert not predict.uses_cpu_fast_path(torch.device("cuda"), settings)
    assert not predict.uses_cpu_fast_path(
        torch.device("cpu"), predict.InferSettings(cpu_fastpath=False)
    )

    def vetted(net):
        raise AssertionError("the CPU fast path was vetted for a CUDA network")

    monkeypatch.setattr(fast, "fastpath_problem", vetted)
    assert not network.choose_fast_path(small_unetr(), torch.device("cuda"), settings)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert predict.resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert predict.resolve_device("auto").type == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        predict.resolve_device("cuda")


# ----------------------------------------------------------------------------- fallbacks
@pytest.fixture
def fresh_probes():
    """Operator probes run once per process: cleared so a monkeypatched operator is probed."""
    fast.operator_problem.cache_clear()
    yield
    fast.operator_problem.cache_clear()


class _Raising:
    """Stands in for a private operator that a future torch removed or changed."""

    def __init__(self, exc):
        self.exc = exc

    def __call__(self, *args, **kwargs):
        raise self.exc

    def __getattr__(self, name):  # an overload such as ``.binary``
        return self


class _OwnBlock(nn.Module):
    """A decoder block MONAI does not build (same computation, unknown type)."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x)


def _break_mkldnn_op(monkeypatch, name, exc):
    monkeypatch.setattr(torch.ops.mkldnn, name, _Raising(exc))


FALLBACKS = {
    "torch version": lambda mp: mp.setattr(fast, "WRITTEN_FOR", ((1, 0), (1, 13))),
    "operator missing": lambda mp: mp.setattr(
        torch.ops,
        "mkldnn",
        SimpleNamespace(_convolution_pointwise_=torch.ops.mkldnn._convolution_pointwise_),
    ),
    "operator raising": lambda mp: _break_mkldnn_op(
        mp, "_convolution_pointwise_", RuntimeError("unexpected arguments")
    ),
    "operator with another result": lambda mp: mp.setattr(
        torch, "mkldnn_convolution", lambda x, w, b, *a: torch.zeros(1)
    ),
}


def _plain_and_fallback(net, settings, image, caplog, roi=(16, 16, 16)):
    """Labels of the plain path and of a fast path that must fall back; the warnings logged."""
    plain_settings = replace(settings, cpu_fastpath=False)
    seg = predict.prepare_network(copy.deepcopy(net), 5, torch.device("cpu"), plain_settings)
    plain = predict.predict_labels(image, seg, roi, plain_settings)
    caplog.clear()
    with caplog.at_level("WARNING", logger="thighct"):
        seg = predict.prepare_network(copy.deepcopy(net), 5, torch.device("cpu"), settings)
        labels = predict.predict_labels(image, seg, roi, settings)
    assert not seg.fast_path
    return plain, labels, [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize("cause", list(FALLBACKS))
def test_a_fast_path_that_cannot_be_trusted_falls_back_to_monais_modules_with_one_warning(
    cause, monkeypatch, fresh_probes, caplog
):
    net = small_unetr()
    image = random_image((40, 27, 33), seed=7)
    settings = predict.InferSettings(accumulate="float32")
    FALLBACKS[cause](monkeypatch)
    plain, labels, caught = _plain_and_fallback(net, settings, image, caplog)
    assert len(caught) == 1 and caught[0].startswith("CPU fast path off"), caught
    np.testing.assert_array_equal(labels, plain)
    # The plain path is MONAI's network: its labels are MONAI's up to float rounding.
    assert (plain == monai_labels(net, image, (16, 16, 16), 0.25)).mean() >= 0.999


def test_an_unexpected_unetr_block_falls_back_with_one_warning_also_with_two_workers(
    fresh_probes, caplog
):
    net = small_unetr()
    net.decoder2.conv_block = _OwnBlock(net.decoder2.conv_block)
    image = random_image((40, 27, 33), seed=8)
    settings = predict.InferSettings(workers=2, sw_batch_size=2)
    plain, labels, caught = _plain_and_fallback(net, settings, image, caplog)
    assert len(caught) == 1 and "decoder 3" in caught[0], caught
    np.testing.assert_array_equal(labels, plain)


def test_two_workers_with_unetr_fall_back_to_the_one_worker_plain_labels(
    monkeypatch, fresh_probes, caplog
):
    net = small_unetr()
    image = random_image((40, 27, 33), seed=9)
    _break_mkldnn_op(monkeypatch, "_linear_pointwise", TypeError("takes 3 arguments"))
    settings = predict.InferSettings(workers=2, sw_batch_size=1)
    plain, labels, caught = _plain_and_fallback(net, settings, image, caplog)
    assert len(caught) == 1 and "_linear_pointwise" in caught[0], caught
    np.testing.assert_array_equal(labels, plain)
    one = predict.InferSettings(workers=1, cpu_fastpath=False)
    seg = predict.prepare_network(copy.deepcopy(net), 5, torch.device("cpu"), one)
    np.testing.assert_array_equal(predict.predict_labels(image, seg, (16, 16, 16), one), plain)


def test_the_fast_path_is_vetted_without_warning_on_the_torch_it_was_written_for(
    fresh_probes, caplog
):
    assert fast.torch_version_problem() is None
    assert fast.torch_version_problem("2.14.0+cpu") is not None
    assert fast.operator_problem() is None
    with caplog.at_level("WARNING", logger="thighct"):
        seg = predict.prepare_network(
            small_unetr(), 5, torch.device("cpu"), predict.InferSettings()
        )
    assert not caplog.records
    assert seg.fast_path and isinstance(seg.trunk, fast.StreamlinedUNETR)
