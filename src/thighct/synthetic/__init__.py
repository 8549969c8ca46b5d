"""Synthetic whole-thigh CT phantoms with exactly known 30-class labels and volumes.

Each subject is a CT of both legs from the iliac crest to the knee joint, lying supine on a
table: femur (cortical shell, marrow, cancellous ends) and hip bone; the 27 muscles of
``config/labels.tsv`` in their anatomical places and over their real craniocaudal extent;
thin fat planes between muscles, intermuscular and subcutaneous fat, skin, air, pelvic
viscera, vessels, and bones and muscles that carry no label (sacrum, L5, tibia, fibula,
patella, gastrocnemius, erector spinae), so a model has to learn anatomy, not grey values.

How a phantom is built
----------------------
The anatomy is data: ``anatomy.yaml`` in this package (read and checked by ``anatomy``) holds
an atlas of *tracks*, cross-sections whose centre, radii and angle are keyframed along the leg.
Height along the leg is the fraction ``u`` of the distance from the knee joint (``u = 0``) to
the iliac crest (``u = 1``). In-plane positions are in mm in a reference "side frame" of the
right half of the body: ``X`` lateral from the midline, ``Y`` anterior from the hip-joint
centres. Thigh muscles are written relative to the femoral shaft (frame ``femur``), pelvic ones
in the side frame. Each track is one of

* ``ellipse``: centre, semi-axes ``a`` (along angle ``theta``) and ``b``;
* ``quad``: four radii (lateral, medial, anterior, posterior) -- fascia and body outlines;
* ``band``: a thick polyline -- the plates of the hip bone and sacrum.

``design`` draws a subject's sizes and pose, ``placement`` places the tracks in the subject's
world and grid, and ``render`` rasterises them. Every track gives a signed distance in mm
(``shapes``; negative inside). Muscles share one HU; a voxel belongs to the muscle it lies
deepest inside (a power-diagram partition of overlapping cross-sections, clipped by the deep
fascia), and a thin fat plane of ``fat_plane_mm`` runs along each boundary between two muscles.
CT values are mixed from tissue fractions of each voxel (partial volume, computed from the
signed distances), then textured and noised. A voxel's label is the tissue at its centre; a fat
plane is labelled background only where it fills most of the voxel (at fine grids).

Subjects differ by size (height; muscle cross-sections), position, rotation on the table,
leg spread and rotation, left/right asymmetry, field of view, fat thickness (sex, BMI), noise
and orientation of the written array (RAS, LPS, flipped axes; the affine stays correct).

Volumes follow the cohort
-------------------------
Muscle volume / height² is ``sex_factor * exp(effect[sex] * weight_k * sarcopenic + subject
noise + muscle noise)`` times the reference muscle's volume / height² (``subject_design``,
``target_volumes``); the cross-section radii of muscle ``k`` scale by the square root of its
area factor. ``sarcopenic`` comes from SMI < cutoff, or for subjects without an SMI from a
latent draw. The fascia and the muscles' spacing shrink with the subject's mean sarcopenia
effect, so a shrunken muscle does not hand its room to its neighbours: the rasterised label maps
keep the effect. The default config aims at the paper's Fig 7: r(sarcopenia, volume / h²)
strongly negative in men for the muscles its text names (-0.58 to -0.80 in the paper), weaker
for the other muscles, and weak in women; tests/test_synthetic.py checks this on label maps.

Arrays are indexed ``(x, y, z) = (i, j, k)`` (nibabel voxel order); the generator works in RAS+
world mm (x to the subject's right, y anterior, z superior), lengths in mm, volumes in mm³,
intensities in HU. Everything random derives from ``(seed, subject_id)`` via ``zlib.crc32``,
so a subject's phantom does not depend on which other subjects are generated, or in what order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ThighctError
from ..seeds import subject_rng
from .anatomy import ATLAS, MUSCLE_NAMES, Track, femur_axis
from .design import RATER2_STREAM, SideDesign, SubjectDesign, reference_design, subject_design
from .placement import TAPER_MAX_FRACTION, Grid, expected_z_ranges, place_tracks, subject_grid
from .rater2 import second_rater_labels
from .render import hu_max, hu_min, render
from .truth import label_volumes, reference_volumes, target_volumes, truth_table

__all__ = [
    "ATLAS",
    "MUSCLE_NAMES",
    "RATER2_STREAM",
    "TAPER_MAX_FRACTION",
    "Grid",
    "SideDesign",
    "SubjectDesign",
    "SyntheticScan",
    "Track",
    "expected_z_ranges",
    "femur_axis",
    "generate_subject",
    "hu_max",
    "hu_min",
    "label_volumes",
    "place_tracks",
    "reference_design",
    "reference_volumes",
    "render",
    "reorient",
    "second_rater_labels",
    "subject_design",
    "subject_grid",
    "subject_rng",
    "target_volumes",
    "truth_table",
]


def reorient(array: np.ndarray, affine: np.ndarray, axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """Flip the axes of a RAS array so its voxel axes run along ``axcodes`` (e.g. "LPS").

    Only flips (no axis permutations): each code must be R/L, A/P, S/I in that order. The
    world position of every voxel is unchanged; the affine is adjusted to match.
    """
    if len(axcodes) != 3 or any(
        c not in pair for c, pair in zip(axcodes, ("RL", "AP", "SI"), strict=True)
    ):
        raise ThighctError(
            f"orientation {axcodes!r} is not a flip of RAS",
            fix="use codes like RAS, LPS, LAS, RPI in synthetic.orientations",
        )
    out = np.asarray(array)
    aff = np.asarray(affine, dtype=float).copy()
    for axis, (code, ras) in enumerate(zip(axcodes, "RAS", strict=True)):
        if code != ras:
            out = np.flip(out, axis=axis)
            aff[:3, 3] += aff[:3, axis] * (out.shape[axis] - 1)
            aff[:3, axis] *= -1
    return np.ascontiguousarray(out), aff


@dataclass
class SyntheticScan:
    """One phantom: CT (int16 HU) and label (uint8) as written, their affine, and the truth.

    ``truth``: class id -> volume (mm³) counted in ``label``; ``targets``: the designed
    volumes (mm³; empty unless asked for).
    """

    ct: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    truth: dict
    targets: dict
    design: SubjectDesign


def generate_subject(
    subject_id: str,
    sex: str,
    height_cm: float,
    smi: float | None,
    sarcopenia_cutoff: float,
    cfg: dict,
    seed: int,
    labels,
    weight_kg: float | None = None,
    with_targets: bool = False,
) -> SyntheticScan:
    """Generate one subject's whole-thigh CT phantom and its labels (see the module docstring).

    ``cfg`` is config ``synthetic``; ``labels`` the LabelTable; the cohort values as in
    ``subject_design``. The arrays come back in the subject's drawn orientation
    (``design.orientation``) with the matching affine (voxel -> RAS+ mm). Deterministic in
    (seed, subject_id). ``with_targets`` also computes the designed volumes (costs one
    labels-only rendering of the reference adult per process and config).
    """
    design = subject_design(
        subject_id, sex, height_cm, smi, sarcopenia_cutoff, cfg, seed, weight_kg
    )
    ct, label, grid = render(design, cfg, labels, want_ct=True, seed=seed)
    truth = label_volumes(label, grid.spacing, labels.ids[1:])
    targets = target_volumes(design, cfg, labels) if with_targets else {}
    ct, affine = reorient(ct, grid.affine, design.orientation)
    label, _ = reorient(label, grid.affine, design.orientation)
    return SyntheticScan(
        ct=ct, label=label, affine=affine, truth=truth, targets=targets, design=design
    )
