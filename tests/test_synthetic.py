"""The synthetic whole-thigh CT phantoms: anatomy, intensities, volumes, orientation, cohort design."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, run_snakemake
from scipy import ndimage

from thighct import cohort, io, synthetic
from thighct.errors import ThighctError
from thighct.labels import read_labels
from thighct.synthetic import anatomy

LABELS = read_labels(REPO / "config" / "labels.tsv")
SEED = 20240101


@pytest.fixture(scope="module")
def cfg(default_config) -> dict:
    return default_config["synthetic"]


@pytest.fixture(scope="module")
def tiny_cfg(tiny_config) -> dict:
    return tiny_config["synthetic"]


@pytest.fixture(scope="module")
def man(cfg):
    """An annotated man of average height, non-sarcopenic, at the default grid (RAS render)."""
    design = synthetic.subject_design("SYN0001", "M", 165.0, 7.6, 7.0, cfg, SEED, weight_kg=62.0)
    ct, label, grid = synthetic.render(design, cfg, LABELS, seed=SEED)
    return design, ct, label, grid


def _paper_like_cohort(cfg_cohort, default_config):
    """The default synthetic cohort's included subjects (the paper's 98) with their values."""
    c = default_config
    cutoffs = c["sarcopenia"]["cutoffs"][c["sarcopenia"]["definition"]]
    table = cohort.synthetic_cohort(cfg_cohort, c["criteria"], cutoffs, c["seed"])
    included, _ = cohort.filter_cohort(
        table, c["criteria"], c["split"]["n_val"], c["split"]["folds"], c["seed"]
    )
    return included, cutoffs


# ------------------------------------------------------------------------------- anatomy
def test_every_class_is_present_over_its_expected_height(man, cfg):
    design, _, label, grid = man
    sz = grid.spacing[2]
    taper = cfg["taper_mm"]
    for cid, (lo, hi) in synthetic.expected_z_ranges(design, LABELS).items():
        present = (label == cid).any(axis=(0, 1))
        end = min(taper, synthetic.TAPER_MAX_FRACTION * (hi - lo)) + sz
        core = (grid.z >= lo + end) & (grid.z <= hi - end)
        assert core.any(), LABELS.name_of(cid)
        missing = grid.z[core & ~present]
        assert missing.size == 0, f"{LABELS.name_of(cid)} missing at z = {missing} mm"
        outside = (grid.z < lo - sz) | (grid.z > hi + sz)
        assert not present[outside].any(), f"{LABELS.name_of(cid)} outside {lo:.0f}..{hi:.0f} mm"


def test_scan_runs_from_above_the_iliac_crest_to_below_the_knee(man):
    design, _, label, grid = man
    assert grid.z[0] < 0 < design.length_mm < grid.z[-1]
    iliac = np.flatnonzero((label == LABELS.id_of("iliac")).any(axis=(0, 1)))
    femur = np.flatnonzero((label == LABELS.id_of("femur")).any(axis=(0, 1)))
    assert iliac.max() > femur.max() and femur.min() < iliac.min()


def test_both_legs_hold_every_thigh_muscle_at_mid_thigh(man):
    design, _, label, grid = man
    k = int(np.argmin(abs(grid.z - 0.45 * design.length_mm)))
    right, left = label[grid.x > 0, :, k], label[grid.x < 0, :, k]
    for name in [
        "sartorius",
        "rectus_femoris",
        "vastus_lateralis",
        "vastus_intermedius",
        "vastus_medialis",
        "adductor_longus",
        "adductor_magnus",
        "gracilis",
        "semitendinosus",
        "semimembranosus",
        "biceps_femoris",
        "femur",
    ]:
        cid = LABELS.id_of(name)
        # At least a few voxels thick: a network can learn it at this grid.
        assert (right == cid).sum() >= 9 and (left == cid).sum() >= 9, name


def test_muscles_lie_in_their_compartments_around_the_femur(man):
    """Anterior group in front of the femur, hamstrings behind, adductors medial (RAS)."""
    design, _, label, grid = man
    k = int(np.argmin(abs(grid.z - 0.45 * design.length_mm)))
    right = grid.x > 0
    xs, ys = np.meshgrid(grid.x[right], grid.y, indexing="ij")
    sl = label[right, :, k]

    def centre(name):
        m = sl == LABELS.id_of(name)
        return xs[m].mean(), ys[m].mean()

    fx, fy = centre("femur")
    assert centre("rectus_femoris")[1] > fy + 15
    for name in ("semitendinosus", "semimembranosus", "biceps_femoris"):
        assert centre(name)[1] < fy - 15, name
    # The right leg: lateral is +x, medial towards the midline (-x).
    assert centre("vastus_lateralis")[0] > fx + 15
    assert centre("gracilis")[0] < fx - 25
    k_hip = int(np.argmin(abs(grid.z - 0.82 * design.length_mm)))
    gm = label[:, :, k_hip] == LABELS.id_of("gluteus_maximus")
    il = label[:, :, k_hip] == LABELS.id_of("iliopsoas")
    ys_all = np.broadcast_to(grid.y[None, :], gm.shape)
    assert ys_all[gm].mean() < ys_all[il].mean() - 40


# --------------------------------------------------------------------------- intensities
def test_tissue_intensities_are_in_their_hounsfield_ranges(man, cfg):
    design, ct, label, grid = man
    muscle_ids = [int(i) for i in LABELS.muscles["id"]]
    muscle = ndimage.binary_erosion(np.isin(label, muscle_ids), iterations=1)
    assert 25 < ct[muscle].mean() < 65
    # Neighbouring muscles share one intensity: a model must learn anatomy, not grey values.
    means = [
        ct[muscle & (label == c)].mean() for c in muscle_ids if (muscle & (label == c)).sum() > 200
    ]
    assert np.ptp(means) < 10
    k = int(np.argmin(abs(grid.z - 0.45 * design.length_mm)))
    femur = label[:, :, k] == LABELS.id_of("femur")
    ring = femur & ~ndimage.binary_erosion(femur)
    marrow = ndimage.binary_erosion(femur, iterations=2)
    assert ct[:, :, k][ring].mean() > 700 and ct[:, :, k][ring].max() > 1000  # cortical shell
    assert ct[:, :, k][marrow].mean() < 300  # fatty marrow
    # Subcutaneous fat: unlabelled tissue between the skin and the muscles.
    body = ndimage.binary_fill_holes(ct[:, :, k] > -500)
    fat = body & (label[:, :, k] == 0) & ~ndimage.binary_dilation(label[:, :, k] > 0, iterations=2)
    fat &= ndimage.binary_erosion(body, iterations=2)
    assert -140 < np.median(ct[:, :, k][fat]) < -60
    # Air in front of the body.
    assert abs(np.median(ct[:, -2:, :]) - cfg["hu"]["air"]) < 60
    assert ct.min() >= cfg["hu"]["clip"][0] and ct.max() <= cfg["hu"]["clip"][1]


def test_the_iliac_bone_is_bone(man):
    _, ct, label, _ = man
    iliac = label == LABELS.id_of("iliac")
    assert np.percentile(ct[iliac], 90) > 700


# ------------------------------------------------------------------------------- volumes
def test_truth_volumes_are_voxel_counts_times_voxel_volume(cfg, tiny_cfg):
    scan = synthetic.generate_subject("SYN0002", "F", 151.0, 5.0, 5.4, tiny_cfg, SEED, LABELS)
    voxel = float(np.prod(io.spacing_from_affine(scan.affine)))
    for cid in LABELS.ids[1:]:
        assert scan.truth[cid] == pytest.approx((scan.label == cid).sum() * voxel)
        assert scan.truth[cid] > 0, LABELS.name_of(cid)
    table = synthetic.truth_table("SYN0002", scan.truth, LABELS)
    assert list(table.columns) == ["subject", "class_id", "name", "volume_mm3"]
    assert len(table) == LABELS.n_classes - 1


def test_rasterised_volumes_track_the_designed_volumes(tiny_cfg):
    rng = np.random.default_rng(1)
    designed, counted = [], []
    for i in range(10):
        sex = "FM"[i % 2]
        scan = synthetic.generate_subject(
            f"T{i}",
            sex,
            rng.normal(158, 8),
            rng.normal(6.2, 1.0),
            6.2,
            tiny_cfg,
            SEED,
            LABELS,
            weight_kg=rng.normal(55, 9),
            with_targets=True,
        )
        designed.append([scan.targets[c] for c in LABELS.ids[1:]])
        counted.append([scan.truth[c] for c in LABELS.ids[1:]])
    designed, counted = np.array(designed), np.array(counted)
    for j, cid in enumerate(LABELS.ids[1:]):
        ratio = np.median(counted[:, j] / designed[:, j])
        assert 0.8 < ratio < 1.2, (LABELS.name_of(cid), ratio)
        assert np.corrcoef(designed[:, j], counted[:, j])[0, 1] > 0.8, LABELS.name_of(cid)


def test_muscle_volume_per_height_squared_correlates_with_sarcopenia_in_men_not_women(
    default_config, cfg
):
    """Fig 7 of the paper: r about -0.7..-0.8 in men for the muscles it names, |r| < 0.3 in women."""
    included, cutoffs = _paper_like_cohort(default_config["synthetic_cohort"], default_config)
    rows = []
    for r in included.itertuples():
        if pd.isna(r.smi):
            continue
        d = synthetic.subject_design(
            r.subject_id,
            r.sex,
            r.height_cm,
            r.smi,
            cutoffs[r.sex],
            cfg,
            default_config["seed"],
            weight_kg=r.weight_kg,
        )
        vols = synthetic.target_volumes(d, cfg, LABELS)
        rows.append(
            {
                "sex": r.sex,
                "sarcopenia": float(r.smi < cutoffs[r.sex]),
                **{LABELS.name_of(c): v / (r.height_cm / 100) ** 2 for c, v in vols.items()},
            }
        )
    df = pd.DataFrame(rows)
    assert (df["sex"] == "M").sum() == 26 and (df["sex"] == "F").sum() == 43
    named = cfg["volume"]["named_muscles"]
    men, women = df[df["sex"] == "M"], df[df["sex"] == "F"]
    r_men = {m: np.corrcoef(men["sarcopenia"], men[m])[0, 1] for m in named}
    assert -0.85 < np.mean(list(r_men.values())) < -0.65, r_men
    assert max(r_men.values()) < -0.45, r_men
    for m in LABELS.muscles["name"]:
        r = np.corrcoef(women["sarcopenia"], women[m])[0, 1]
        assert abs(r) < 0.3, (m, r)
    # Men's muscles are larger for their height than women's.
    assert men["vastus_lateralis"].mean() > 1.1 * women["vastus_lateralis"].mean()


def test_rasterised_volumes_keep_the_sarcopenia_effect_in_men(default_config, cfg):
    """The label maps themselves (what segmentation measures), not just the design: a shrunken
    muscle must not hand its room to its neighbours (the fascia shrinks with the subject's
    mean sarcopenia effect), so r stays strongly negative in men and weak in women."""
    included, cutoffs = _paper_like_cohort(default_config["synthetic_cohort"], default_config)
    coarse = {**cfg, "spacing_mm": [4.0, 4.0, 6.0]}  # the default run uses 3 x 3 x 5 mm
    rows = []
    for r in included.itertuples():
        if pd.isna(r.smi):
            continue
        design = synthetic.subject_design(
            r.subject_id, r.sex, r.height_cm, r.smi, cutoffs[r.sex], coarse,
            default_config["seed"], weight_kg=r.weight_kg,
        )  # fmt: skip
        _, label, grid = synthetic.render(design, coarse, LABELS, want_ct=False)
        vols = synthetic.label_volumes(label, grid.spacing, LABELS.ids[1:])
        h2 = (r.height_cm / 100) ** 2
        rows.append(
            {
                "sex": r.sex,
                "sarcopenia": float(r.smi < cutoffs[r.sex]),
                **{LABELS.name_of(c): v / h2 for c, v in vols.items()},
            }
        )
    df = pd.DataFrame(rows)
    named = cfg["volume"]["named_muscles"]
    men, women = df[df["sex"] == "M"], df[df["sex"] == "F"]
    r_men = {m: np.corrcoef(men["sarcopenia"], men[m])[0, 1] for m in named}
    assert np.mean(list(r_men.values())) < -0.6, r_men
    assert max(r_men.values()) < -0.4, r_men
    r_women = {m: np.corrcoef(women["sarcopenia"], women[m])[0, 1] for m in named}
    assert max(abs(v) for v in r_women.values()) < 0.35, r_women


def test_sarcopenia_comes_from_smi_or_a_latent_draw(cfg):
    # The rule itself is cohort.is_sarcopenic (tests/test_cohort.py); here its use.
    d = synthetic.subject_design("X", "M", 165, None, 7.0, cfg, SEED)
    assert not d.sarcopenia_from_smi
    # The latent draw does not shift any later draw: same size with and without an SMI.
    with_smi = synthetic.subject_design("X", "M", 165, 6.0 if d.sarcopenic else 8.0, 7.0, cfg, SEED)
    assert with_smi.sarcopenic == d.sarcopenic and with_smi.length_mm == d.length_mm


# ----------------------------------------------------------------------------- orientation
def test_written_orientation_maps_back_to_the_ras_phantom(cfg, tiny_cfg, tmp_path):
    """Scans are written in several orientations; reading them back to RAS gives the phantom."""
    seen = set()
    for i in range(40):
        d = synthetic.subject_design(f"O{i}", "F", 155, 5.0, 5.4, tiny_cfg, SEED)
        if d.orientation in seen:
            continue
        seen.add(d.orientation)
        ct_ras, label_ras, grid = synthetic.render(d, tiny_cfg, LABELS, seed=SEED)
        scan = synthetic.generate_subject(f"O{i}", "F", 155, 5.0, 5.4, tiny_cfg, SEED, LABELS)
        assert io.orientation_of(scan.affine) == d.orientation
        path = tmp_path / f"{d.orientation}.nii.gz"
        io.save_nifti(path, scan.label, scan.affine, np.uint8)
        back = io.load_nifti(path, canonical=True)
        np.testing.assert_array_equal(back.array, label_ras)
        np.testing.assert_allclose(back.affine, grid.affine, atol=1e-3)  # float32 header
        # Anatomy in RAS: glutei behind the quadriceps, the iliac bone above the knee.
        zz = np.broadcast_to(grid.z, label_ras.shape)
        yy = np.broadcast_to(grid.y[None, :, None], label_ras.shape)
        assert (
            zz[back.array == LABELS.id_of("iliac")].mean()
            > zz[back.array == LABELS.id_of("femur")].mean()
        )
        gm, rf = (
            back.array == LABELS.id_of("gluteus_maximus"),
            back.array == LABELS.id_of("rectus_femoris"),
        )
        assert yy[gm].mean() < yy[rf].mean()
    assert {"RAS", "LPS"} <= seen and len(seen) >= 3


def test_reorient_flips_axes_and_keeps_world_positions():
    arr = np.arange(24).reshape(2, 3, 4)
    aff = np.diag([2.0, 3.0, 5.0, 1.0])
    aff[:3, 3] = (10, 20, 30)
    out, out_aff = synthetic.reorient(arr, aff, "LPS")
    assert io.orientation_of(out_aff) == "LPS"
    # The voxel at RAS index (0, 0, 0) now sits at (1, 2, 0) and keeps its world position.
    assert out[1, 2, 0] == arr[0, 0, 0]
    np.testing.assert_allclose(out_aff @ [1, 2, 0, 1], aff @ [0, 0, 0, 1])
    with pytest.raises(Exception, match="not a flip"):
        synthetic.reorient(arr, aff, "ASR")


# -------------------------------------------------------------------------- anatomy file
def _raw_anatomy() -> dict:
    return yaml.safe_load(anatomy.ANATOMY_FILE.read_text())


def test_the_anatomy_file_round_trips_and_holds_every_muscle_class(tmp_path):
    raw = _raw_anatomy()
    copy = tmp_path / "anatomy.yaml"
    copy.write_text(yaml.safe_dump(raw, sort_keys=False))
    again = anatomy.load_anatomy(copy)
    assert again == anatomy.ANATOMY == anatomy.load_anatomy()
    assert again.tracks == synthetic.ATLAS
    assert set(again.muscle_names) == set(LABELS.muscles["name"])
    # The rules that make rows: the femoral head is an ellipsoid centred at u_hip, the femoral
    # vessels follow their path, the acetabulum's points lie on its arc.
    head = [t for t in again.tracks if t.layer == "femur" and t.frame == "side"][0]
    middle = head.keys[len(head.keys) // 2]
    assert middle[0] == pytest.approx(raw["landmarks"]["u_hip"]) and middle[3] == 23
    vessels = next(t for t in again.tracks if t.name == "femoral_vessels")
    assert [k[:3] for k in vessels.keys] == [tuple(r) for r in raw["paths"]["femoral"]]
    cup = next(t for t in again.tracks if t.kind == "band" and len(t.keys[0]) == 20)
    u, w, *points = cup.keys[0]
    radii = np.hypot(np.asarray(points[0::2]) - 85, np.asarray(points[1::2]))
    assert np.allclose(radii, 16) and (u, w) == (0.852, 5)
    assert anatomy.LENGTH_PER_HEIGHT == 520.0 / 165.0


def test_a_soft_tissue_needs_an_hu_value_in_the_config(tiny_cfg):
    hu = {k: v for k, v in tiny_cfg["hu"].items() if k != "nerve"}
    design = synthetic.subject_design("SYN0002", "F", 151.0, 5.0, 5.4, tiny_cfg, SEED)
    with pytest.raises(ThighctError, match="sciatic_nerve is 'nerve'") as err:
        synthetic.render(design, {**tiny_cfg, "hu": hu}, LABELS, seed=SEED)
    assert err.value.path == str(anatomy.ANATOMY_FILE) and "vessel" in err.value.fix


def _edit(raw: dict, path: tuple, value) -> dict:
    """``raw`` with the entry at ``path`` (keys and indices) set to ``value`` (None: deleted)."""
    node = raw
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("tracks", "muscle", 0, "ellipse", 1), [0.89, -12, 60, 12, 6], r"tracks\.muscle\[0\] \(sartorius\), ellipse row 2: expected 6 numbers \(u, x, y, a, b, theta_deg\)"),
        (("tracks", "muscle", 1, "ellipse", 0), [0.87, -30, 36, 8, "wide", 0], r"rectus_femoris\), ellipse row 1: expected a list of numbers"),
        (("tracks", "muscle", 2, "ellipse", 0), [0.8, 30, 4, -12, 8, 90], r"vastus_lateralis\), ellipse row 1: a must be > 0"),
        (("tracks", "muscles"), [], r"tracks\.muscles: unknown layer"),
        (("tracks", "fat", 0, "tube", "path"), "femoal", r"femoral_sheath\), tube: no path 'femoal'"),
        (("tracks", "iliac", 0, "band", 0), [1.005, 5, 75, -60, 100, -35], r"iliac\), band: every row of a band needs the same number of points"),
        (("tracks", "muscle", 3, "elipse"), [[0.7, 1, 1, 1, 1, 0]], r"vastus_intermedius\): unknown key\(s\) elipse"),
        (("tracks", "soft", 0, "tissue"), None, r"hip_joint\): missing tissue"),
        (("tracks", "muscle", 0, "frame"), "thigh", r"sartorius\): frame must be femur or side"),
        (("landmarks", "u_hip"), None, r"landmarks: missing u_hip"),
        (("tracks", "fascia", 0, "ellipse"), [[0.1, 0, 0, 40, 40, 0], [0.2, 0, 0, 40, 40, 0]], r"leg\): give exactly one shape"),
    ],
)  # fmt: skip
def test_a_malformed_anatomy_is_refused_naming_the_file_the_entry_and_the_fix(
    tmp_path, path, value, expected
):
    bad = tmp_path / "anatomy.yaml"
    bad.write_text(yaml.safe_dump(_edit(_raw_anatomy(), path, value), sort_keys=False))
    with pytest.raises(ThighctError, match=expected) as err:
        anatomy.load_anatomy(bad)
    assert err.value.path == str(bad)
    assert "anatomy.yaml" in err.value.fix


def test_every_problem_of_an_anatomy_file_is_listed_at_once_and_bad_yaml_named(tmp_path):
    raw = _raw_anatomy()
    raw["tracks"]["muscle"][0]["ellipse"][0] = [0.93, -8]
    raw["tracks"]["soft"][0]["gas"] = "yes please"
    bad = tmp_path / "two.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ThighctError, match=r"2 problem\(s\)") as err:
        anatomy.load_anatomy(bad)
    assert "sartorius" in str(err.value) and "gas must be true or false" in str(err.value)
    broken = tmp_path / "broken.yaml"
    broken.write_text("landmarks: [0.81\ntracks: {}\n")
    with pytest.raises(ThighctError, match="not valid YAML") as err:
        anatomy.load_anatomy(broken)
    assert err.value.path == str(broken) and "line 2, column 7" in str(err.value)


# ---------------------------------------------------------------------------- determinism
def test_same_seed_and_subject_give_the_same_bytes_whatever_else_is_generated(tiny_cfg, tmp_path):
    def write(subject, name):
        scan = synthetic.generate_subject(subject, "M", 168, 6.5, 7.0, tiny_cfg, SEED, LABELS)
        io.save_nifti(tmp_path / f"{name}.nii.gz", scan.ct, scan.affine, np.int16)
        return hashlib.sha256((tmp_path / f"{name}.nii.gz").read_bytes()).hexdigest()

    first = write("SYN0100", "a")
    write("SYN0200", "other")  # another subject in between changes nothing
    assert write("SYN0100", "b") == first
    assert write("SYN0101", "c") != first
    other_seed = synthetic.generate_subject(
        "SYN0100", "M", 168, 6.5, 7.0, tiny_cfg, SEED + 1, LABELS
    )
    assert (
        other_seed.design.length_mm
        != synthetic.subject_design("SYN0100", "M", 168, 6.5, 7.0, tiny_cfg, SEED).length_mm
    )


def test_the_grid_is_a_config_value(tiny_cfg):
    scan = synthetic.generate_subject("SYN0003", "M", 170, 7.5, 7.0, tiny_cfg, SEED, LABELS)
    assert io.spacing_from_affine(scan.affine) == pytest.approx(tuple(tiny_cfg["spacing_mm"]))


# --------------------------------------------------------------------------- second rater
def test_second_rater_disagrees_a_little_at_the_boundaries(tiny_cfg, cfg, man):
    _, _, label, grid = man
    muscles = [int(i) for i in LABELS.muscles["id"]]
    second = synthetic.second_rater_labels(
        label, grid.spacing, np.random.default_rng(0), cfg["rater2"], muscles
    )
    assert second.shape == label.shape and second.dtype == label.dtype
    changed = np.mean(second[label > 0] != label[label > 0])
    assert 0.01 < changed < 0.25
    for cid in LABELS.ids[1:]:
        a, b = label == cid, second == cid
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice > 0.6, (LABELS.name_of(cid), dice)
    big = [
        LABELS.id_of(n) for n in ("vastus_lateralis", "adductor_magnus", "gluteus_maximus", "femur")
    ]
    for cid in big:
        a, b = label == cid, second == cid
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.85


# ------------------------------------------------------------------------------ workflow
@pytest.mark.workflow
def test_synthetic_rules_make_scans_truth_rater2_and_the_example_figure(tmp_path):
    tiny = REPO / "tests" / "config" / "tiny.yaml"
    run_snakemake(
        tmp_path,
        "-j2",
        "results/synthetic/truth.tsv",
        "results/figures/phantom_example.png",
        "results/cohort/included.tsv",
        configfiles=[tiny],
    )
    included = pd.read_csv(
        tmp_path / "results/cohort/included.tsv", sep="\t", keep_default_na=False
    )
    truth = pd.read_csv(tmp_path / "results/synthetic/truth.tsv", sep="\t")
    assert set(truth["subject"]) == set(included["subject_id"])
    assert len(truth) == len(included) * (LABELS.n_classes - 1)
    subject = included["subject_id"].iloc[0]
    label = io.load_nifti(tmp_path / f"results/synthetic/{subject}/label.nii.gz")
    voxel = float(np.prod(label.spacing))
    mine = truth[truth["subject"] == subject].set_index("class_id")["volume_mm3"]
    for cid, v in mine.items():
        assert v == pytest.approx((label.array == cid).sum() * voxel)
    # included.tsv holds no paths: has_label_rater2 says who has a second rater's label.
    rater2 = included.loc[included["has_label_rater2"].astype(str) == "True", "subject_id"]
    assert len(rater2) > 0
    for subject in rater2:
        rel = f"results/synthetic/{subject}/label_rater2.nii.gz"
        run_snakemake(tmp_path, "-j1", rel, configfiles=[tiny])
        assert (tmp_path / rel).is_file()
    assert (tmp_path / "results/figures/phantom_example.png").stat().st_size > 20_000
