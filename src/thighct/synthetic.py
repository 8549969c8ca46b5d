"""Synthetic whole-thigh CT phantoms with exactly known 30-class labels and volumes.

Each subject is a CT of both legs from the iliac crest to the knee joint, lying supine on a
table: femur (cortical shell, marrow, cancellous ends) and hip bone; the 27 muscles of
``config/labels.tsv`` in their anatomical places and over their real craniocaudal extent;
thin fat planes between muscles, intermuscular and subcutaneous fat, skin, air, pelvic
viscera, vessels, and bones and muscles that carry no label (sacrum, L5, tibia, fibula,
patella, gastrocnemius, erector spinae), so a model has to learn anatomy, not grey values.

How a phantom is built
----------------------
The anatomy is an atlas (``ATLAS`` below) of *tracks*: cross-sections whose centre, radii and
angle are keyframed along the leg. Height along the leg is the fraction ``u`` of the distance
from the knee joint (``u = 0``) to the iliac crest (``u = 1``). In-plane positions are in mm in
a reference "side frame" of the right half of the body: ``X`` lateral from the midline, ``Y``
anterior from the hip-joint centres. Thigh muscles are written relative to the femoral shaft
(``frame="femur"``), pelvic ones in the side frame. Each track is one of

* ``ellipse``: centre, semi-axes ``a`` (along angle ``theta``) and ``b``;
* ``quad``: four radii (lateral, medial, anterior, posterior) -- fascia and body outlines;
* ``band``: a thick polyline -- the plates of the hip bone and sacrum.

Every track gives a signed distance in mm (negative inside). Muscles share one HU; a voxel
belongs to the muscle it lies deepest inside (a power-diagram partition of overlapping
cross-sections, clipped by the deep fascia), and a thin fat plane of ``fat_plane_mm`` runs
along each boundary between two muscles. CT values are mixed from tissue fractions of each
voxel (partial volume, computed from the signed distances), then textured and noised. A voxel's
label is the tissue at its centre; a fat plane is labelled background only where it fills
most of the voxel (at fine grids).

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
keep the effect. With the default config and cohort, r(sarcopenia, volume / h²) measured on
the label maps is about -0.73 in men for the muscles the paper names in its Fig 7 text (-0.58
to -0.80), -0.2 to -0.8 for the other muscles, and |r| <= 0.25 in women.

Arrays are indexed ``(x, y, z) = (i, j, k)`` (nibabel voxel order); the generator works in RAS+
world mm (x to the subject's right, y anterior, z superior), lengths in mm, volumes in mm³,
intensities in HU. Everything random derives from ``(seed, subject_id)`` via ``zlib.crc32``,
so a subject's phantom does not depend on which other subjects are generated, or in what order.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage

from .errors import ThighctError
from .labels import LabelTable
from .sarcopenia import subject_sarcopenic
from .seeds import subject_rng

# ------------------------------------------------------------------------------- the atlas
# Landmarks as fractions u of the knee-joint -> iliac-crest distance (reference adult).
U_HIP = 0.81  # centre of the femoral head
U_TOP = 0.78  # top of the femoral shaft (base of the neck)
U_POSE_FULL = 0.60  # below this the whole leg pose (spread, rotation) applies; none above U_HIP
# Femoral shaft axis in the side frame (mm): from the knee to the base of the neck.
FEMUR_KNEE_X, FEMUR_TOP_X, FEMUR_Y = 95.0, 130.0, -8.0
# Reference knee-joint -> iliac-crest distance per cm of height (mm/cm): 520 mm at 165 cm.
LENGTH_PER_HEIGHT = 520.0 / 165.0
# Subcutaneous fat relative to the subject's thickness, by direction (lateral, medial,
# anterior, posterior) for the legs and the trunk (women and men share the pattern).
FAT_PATTERN_LEG = (1.0, 0.75, 0.8, 1.15)
FAT_PATTERN_TRUNK = (1.0, 1.0, 1.5, 0.9)
# Fat thickness along the leg relative to the subject's (u, factor): thin at the knee.
FAT_ALONG_LEG = ((-0.3, 0.6), (0.0, 0.7), (0.3, 0.9), (0.7, 1.1), (1.1, 1.0))
# Muscle cross-sections are drawn a little larger than they look on their own: neighbours
# overlap, the deepest wins and the fascia trims the outside, so muscles pack like in a thigh.
MUSCLE_INFLATE = 1.35
TAPER_MAX_FRACTION = 0.25
# Smoothness (mm) of the joins between the legs and the trunk outline and between fasciae.
SKIN_JOIN_MM, FASCIA_JOIN_MM = 25.0, 8.0
BIG = np.float32(1e4)  # "far outside" signed distance (mm)
# Random streams of a subject (subject_rng): design 0, second rater 2, image slice k 1000 + k.
RATER2_STREAM = 2
_SLAB_STREAM = 1000


@dataclass(frozen=True)
class Track:
    """One keyframed cross-section of the atlas (see the module docstring).

    ``layer``: muscle (``name`` a class of labels.tsv, or ``unlabelled``), fascia (deep fascia;
    the skin follows it outside by the fat thickness), fat (fat that pushes muscle aside),
    soft (viscera, vessels, nerves: label 0 with their own HU), femur, iliac, bone (unlabelled
    bone). ``keys`` rows start with u; then ``x, y, a, b, theta_deg`` (ellipse), ``x, y,
    lateral, medial, anterior, posterior`` (quad) or ``half_width, x1, y1, ... xn, yn`` (band).
    """

    name: str
    layer: str
    kind: str
    keys: tuple
    side: bool = True
    frame: str = "side"
    tissue: str = ""
    gas: bool = False


def _E(name, keys, layer="muscle", frame="femur", tissue="", side=True, gas=False):
    return Track(name, layer, "ellipse", tuple(map(tuple, keys)), side, frame, tissue, gas)


def _ellipsoid(u0, x, y, a, b, half_u, n=7, theta=0.0):
    """Keyframes of an ellipsoid (semi-axes a, b in mm; half_u along the leg) centred at u0."""
    rows = []
    for t in np.linspace(-1.0, 1.0, n):
        f = math.sqrt(max(1.0 - t * t, 0.0))
        rows.append((u0 + t * half_u, x, y, max(a * f, 1.0), max(b * f, 1.0), theta))
    return rows


def _arc(cx, cy, r, angles_deg):
    return [
        c
        for a in angles_deg
        for c in (cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a)))
    ]


# Muscles, keyframes (u, x, y, a, b, theta_deg): height fraction, centre (mm; lateral, anterior),
# semi-axes (mm) and angle of a from the lateral axis towards anterior (degrees). Thigh muscles
# (frame femur) give the centre as an offset from the femoral shaft axis. Reference adult.
_MUSCLES = [
    _E(
        "sartorius",
        [
            (0.93, -8, 52, 7, 5, 30),
            (0.89, -12, 60, 12, 6, 25),
            (0.82, -18, 66, 15, 7, 10),
            (0.73, -24, 58, 15, 7, 0),
            (0.62, -32, 48, 15, 8, -25),
            (0.48, -40, 33, 14, 8, -45),
            (0.33, -46, 15, 13, 8, -60),
            (0.18, -48, -6, 12, 8, -80),
            (0.03, -40, -24, 9, 6, -80),
        ],
    ),
    _E(
        "rectus_femoris",
        [
            (0.87, -30, 36, 8, 6, 0),
            (0.82, -24, 46, 12, 9, 0),
            (0.74, -12, 50, 16, 12, 0),
            (0.60, -4, 44, 18, 12, 0),
            (0.45, 2, 38, 18, 11, 0),
            (0.30, 4, 32, 16, 9, 0),
            (0.18, 2, 30, 12, 7, 0),
            (0.11, 0, 30, 8, 5, 0),
        ],
    ),
    _E(
        "vastus_lateralis",
        [
            (0.80, 30, 4, 12, 8, 90),
            (0.74, 32, 2, 30, 15, 90),
            (0.60, 31, -2, 34, 15, 95),
            (0.45, 29, -2, 32, 15, 100),
            (0.30, 26, 0, 26, 13, 105),
            (0.18, 24, 5, 18, 10, 110),
            (0.09, 18, 14, 9, 6, 120),
        ],
    ),
    _E(
        "vastus_intermedius",
        [
            (0.74, 6, 10, 20, 16, 0),
            (0.60, 6, 11, 23, 19, 0),
            (0.45, 5, 11, 23, 19, 0),
            (0.30, 4, 11, 22, 18, 0),
            (0.18, 1, 12, 18, 14, 0),
            (0.10, 0, 16, 10, 7, 0),
        ],
    ),
    _E(
        "vastus_medialis",
        [
            (0.72, -14, 13, 8, 6, 60),
            (0.60, -20, 17, 13, 9, 60),
            (0.45, -22, 16, 19, 12, 60),
            (0.30, -24, 10, 23, 16, 60),
            (0.18, -24, 6, 22, 16, 50),
            (0.07, -16, 14, 12, 9, 30),
        ],
    ),
    _E(
        "adductor_longus",
        [
            (0.775, -92, 44, 8, 6, 45),
            (0.72, -78, 38, 18, 11, 50),
            (0.65, -62, 30, 23, 13, 55),
            (0.55, -47, 20, 21, 12, 60),
            (0.45, -36, 6, 17, 10, 70),
            (0.38, -26, -4, 9, 6, 80),
        ],
    ),
    _E(
        "adductor_brevis",
        [
            (0.765, -88, 24, 8, 6, 45),
            (0.72, -74, 16, 17, 12, 40),
            (0.65, -56, 8, 20, 13, 35),
            (0.58, -38, -2, 16, 11, 30),
            (0.53, -24, -10, 8, 6, 30),
        ],
    ),
    _E(
        "adductor_magnus",
        [
            (0.745, -72, -28, 13, 9, 20),
            (0.68, -60, -24, 30, 19, 25),
            (0.58, -44, -22, 32, 19, 30),
            (0.45, -32, -22, 29, 18, 35),
            (0.30, -28, -18, 22, 15, 45),
            (0.18, -26, -12, 14, 9, 60),
            (0.12, -22, -8, 7, 5, 70),
        ],
    ),
    _E(
        "gracilis",
        [
            (0.765, -104, 24, 8, 5, 80),
            (0.70, -90, 8, 16, 8, 80),
            (0.60, -73, -4, 15, 7, 80),
            (0.45, -60, -12, 13, 7, 80),
            (0.30, -55, -18, 11, 7, 80),
            (0.15, -50, -24, 9, 6, 70),
            (0.03, -40, -28, 6, 5, 60),
        ],
    ),
    _E(
        "pectineus",
        [
            (0.80, -80, 47, 8, 5, 30),
            (0.77, -71, 39, 16, 8, 30),
            (0.73, -55, 27, 19, 11, 40),
            (0.69, -34, 12, 12, 7, 50),
            (0.66, -22, 2, 6, 5, 50),
        ],
    ),
    _E(
        "gluteus_maximus",
        [
            (0.99, 55, -95, 14, 8, 45),
            (0.94, 72, -99, 36, 18, 35),
            (0.88, 87, -95, 52, 24, 30),
            (0.82, 100, -78, 58, 23, 28),
            (0.76, 112, -66, 54, 23, 32),
            (0.71, 128, -54, 42, 22, 42),
            (0.665, 140, -42, 16, 10, 55),
        ],
        frame="side",
    ),
    _E(
        "gluteus_medius",
        [
            (0.995, 128, -30, 20, 8, 80),
            (0.95, 144, -22, 42, 20, 78),
            (0.90, 147, -16, 46, 22, 78),
            (0.86, 149, -14, 38, 19, 82),
            (0.82, 150, -10, 22, 12, 85),
            (0.79, 152, -8, 10, 7, 90),
        ],
        frame="side",
    ),
    _E(
        "gluteus_minimus",
        [
            (0.93, 122, -4, 20, 7, 72),
            (0.88, 127, 0, 30, 12, 76),
            (0.84, 131, 6, 22, 9, 80),
            (0.80, 140, 6, 10, 7, 80),
        ],
        frame="side",
    ),
    _E(
        "tensor_fasciae_latae",
        [
            (0.93, 130, 40, 7, 5, 60),
            (0.88, 140, 36, 14, 8, 60),
            (0.80, 158, 28, 16, 9, 70),
            (0.73, 163, 25, 14, 8, 70),
            (0.68, 165, 19, 7, 5, 75),
        ],
        frame="side",
    ),
    _E(
        "piriformis",
        [
            (0.91, 35, -62, 12, 8, 20),
            (0.87, 60, -56, 24, 10, 20),
            (0.84, 94, -46, 30, 10, 20),
            (0.81, 124, -30, 15, 7, 25),
        ],
        frame="side",
    ),
    _E(
        "obturator_internus",
        [
            (0.86, 46, -16, 12, 6, 90),
            (0.82, 46, -6, 24, 9, 90),
            (0.78, 44, 4, 24, 10, 82),
            (0.75, 40, 10, 12, 7, 72),
        ],
        frame="side",
    ),
    _E(
        "obturator_externus",
        [
            (0.80, 62, 20, 10, 6, 0),
            (0.77, 76, 10, 22, 9, -10),
            (0.745, 90, -4, 24, 9, -15),
            (0.73, 100, -12, 12, 6, -15),
        ],
        frame="side",
    ),
    _E(
        "quadratus_femoris",
        [
            (0.775, 88, -36, 10, 6, 0),
            (0.75, 98, -33, 22, 9, 5),
            (0.725, 104, -31, 20, 8, 5),
            (0.705, 108, -30, 8, 5, 5),
        ],
        frame="side",
    ),
    _E(
        "semitendinosus",
        [
            (0.74, -62, -40, 8, 6, 0),
            (0.68, -50, -48, 16, 12, 10),
            (0.58, -30, -54, 17, 12, 10),
            (0.45, -10, -55, 16, 12, 0),
            (0.30, -14, -52, 14, 11, -10),
            (0.18, -24, -44, 10, 8, -20),
            (0.05, -36, -32, 6, 5, -30),
        ],
    ),
    _E(
        "semimembranosus",
        [
            (0.72, -52, -40, 9, 7, 20),
            (0.66, -46, -42, 12, 8, 25),
            (0.62, -42, -42, 14, 9, 30),
            (0.45, -28, -44, 17, 11, 20),
            (0.30, -32, -38, 20, 15, 10),
            (0.18, -34, -30, 18, 14, 0),
            (0.06, -34, -24, 10, 8, 0),
        ],
    ),
    _E(
        "biceps_femoris",
        [
            (0.73, -50, -44, 8, 6, 0),
            (0.66, -30, -48, 16, 12, 0),
            (0.55, -5, -45, 18, 12, -10),
            (0.45, 14, -38, 20, 13, -30),
            (0.30, 20, -32, 20, 14, -40),
            (0.15, 26, -24, 16, 12, -50),
            (0.02, 30, -18, 9, 7, -60),
        ],
    ),
    _E(
        "iliacus",
        [
            (1.0, 95, -2, 20, 6, 60),
            (0.96, 88, 1, 36, 14, 55),
            (0.91, 82, 6, 38, 16, 55),
            (0.87, 84, 17, 27, 14, 40),
            (0.84, 84, 27, 18, 11, 20),
        ],
        frame="side",
    ),
    _E(
        "iliopsoas",
        [
            (0.86, 78, 30, 14, 10, 20),
            (0.83, 80, 38, 23, 14, 10),
            (0.80, 82, 38, 21, 13, 0),
            (0.76, 100, 22, 18, 12, 30),
            (0.73, 110, 5, 12, 9, 50),
            (0.71, 116, -8, 6, 5, 50),
        ],
        frame="side",
    ),
    _E(
        "abdominal_oblique",
        [
            (1.05, 150, 12, 36, 10, 95),
            (1.0, 150, 10, 35, 10, 95),
            (0.95, 146, 16, 28, 9, 95),
            (0.91, 140, 25, 12, 6, 90),
        ],
        frame="side",
    ),
    _E(
        "abdominal_oblique",
        [
            (1.05, 112, 88, 36, 9, 40),
            (1.0, 114, 85, 35, 9, 40),
            (0.95, 110, 88, 30, 8, 35),
            (0.91, 104, 84, 15, 6, 35),
        ],
        frame="side",
    ),
    _E(
        "multifidus",
        [
            (1.05, 22, -84, 16, 14, 90),
            (1.0, 22, -86, 16, 14, 90),
            (0.95, 20, -90, 17, 13, 90),
            (0.90, 18, -92, 14, 10, 90),
            (0.86, 15, -92, 7, 6, 90),
        ],
        frame="side",
    ),
    _E(
        "rectus_abdominis",
        [
            (1.05, 36, 110, 28, 9, 0),
            (1.0, 35, 108, 28, 9, 0),
            (0.93, 32, 104, 25, 9, 5),
            (0.86, 25, 84, 18, 9, 10),
            (0.81, 18, 64, 12, 7, 10),
            (0.79, 14, 57, 6, 5, 10),
        ],
        frame="side",
    ),
    _E(
        "psoas",
        [
            (1.05, 42, -24, 22, 18, 60),
            (1.0, 45, -20, 22, 18, 60),
            (0.95, 55, -5, 22, 17, 55),
            (0.90, 65, 12, 20, 15, 45),
            (0.86, 72, 22, 14, 11, 40),
        ],
        frame="side",
    ),
    # Muscles that are not among the 27 classes: they look like muscle and are labelled 0.
    _E(
        "gastrocnemius_medial",
        [(-0.20, -22, -30, 16, 12, 0), (0.0, -24, -34, 15, 11, 0), (0.07, -24, -30, 8, 6, 0)],
        layer="unlabelled",
    ),
    _E(
        "gastrocnemius_lateral",
        [(-0.20, 20, -28, 13, 10, 0), (0.0, 20, -30, 12, 9, 0), (0.06, 20, -26, 7, 5, 0)],
        layer="unlabelled",
    ),
    _E(
        "erector_spinae",
        [(1.05, 48, -82, 20, 14, 20), (0.98, 46, -84, 16, 11, 20), (0.93, 40, -86, 8, 6, 20)],
        layer="unlabelled",
        frame="side",
    ),
]

_FEMUR = [
    _E(
        "femur",
        [
            (0.80, 0, 0, 16, 16, 0),
            (0.72, 0, 0, 15, 15, 0),
            (0.55, 0, 0, 13, 13, 0),
            (0.30, 0, 0, 13, 13, 0),
            (0.17, 0, -1, 15, 14, 0),
            (0.11, 0, -3, 24, 19, 0),
            (0.06, 0, -6, 35, 25, 0),
            (0.02, 0, -8, 39, 27, 0),
            (0.0, 0, -8, 36, 24, 0),
        ],
        layer="femur",
    ),
    _E("femur", _ellipsoid(U_HIP, 85, 0, 23, 23, 0.044, n=9), layer="femur", frame="side"),
    _E(
        "femur",
        [
            (0.815, 96, 1, 15, 12, -15),
            (0.80, 105, -2, 25, 14, -12),
            (0.785, 115, -5, 22, 14, -10),
            (0.77, 124, -7, 15, 14, 0),
        ],
        layer="femur",
        frame="side",
    ),
    _E("femur", _ellipsoid(0.80, 141, -12, 17, 20, 0.035), layer="femur", frame="side"),
    _E("femur", _ellipsoid(0.725, -14, -14, 8, 8, 0.015, n=5), layer="femur"),
]


def _B(name, keys, layer="iliac", side=True):
    return Track(name, layer, "band", tuple(map(tuple, keys)), side, "side")


_ILIAC = [
    _B(
        "iliac",
        [  # the wing: sacroiliac joint -> anterior superior spine
            (1.005, 5, 75, -60, 100, -35, 125, -5, 135, 25),
            (0.99, 6, 55, -64, 90, -44, 124, -10, 130, 30),
            (0.95, 5, 50, -60, 85, -42, 118, -12, 125, 35),
            (0.91, 5, 50, -56, 80, -38, 110, -12, 120, 40),
            (0.88, 6, 55, -50, 78, -35, 102, -12, 108, 25),
            (0.85, 8, 65, -42, 80, -32, 98, -15, 104, 10),
        ],
    ),
    _B(
        "iliac",
        [  # acetabulum: a cup medial to the femoral head, open laterally
            (0.852, 5, *_arc(85, 0, 16, np.linspace(60, 300, 9))),
            (0.83, 6, *_arc(85, 0, 30, np.linspace(65, 295, 9))),
            (0.81, 6, *_arc(85, 0, 33, np.linspace(70, 290, 9))),
            (0.79, 6, *_arc(85, 0, 30, np.linspace(75, 285, 9))),
            (0.772, 5, *_arc(85, 0, 22, np.linspace(90, 270, 9))),
        ],
    ),
    _B(
        "iliac",
        [  # posterior column down to the ischial tuberosity
            (0.80, 8, 80, -30, 68, -42),
            (0.76, 9, 72, -35, 60, -48),
            (0.725, 10, 62, -42, 55, -50),
            (0.712, 5, 60, -44, 55, -50),
        ],
    ),
    _B(
        "iliac",
        [  # superior pubic ramus
            (0.805, 4, 80, 25, 45, 40, 12, 52),
            (0.79, 7, 80, 25, 45, 40, 12, 52),
            (0.775, 7, 78, 22, 45, 38, 12, 50),
            (0.765, 4, 75, 20, 45, 36, 12, 48),
        ],
    ),
    _B(
        "iliac",
        [  # inferior pubic and ischial ramus
            (0.772, 4, 12, 45, 35, 0, 58, -38),
            (0.755, 5, 12, 45, 35, 0, 58, -38),
            (0.74, 5, 14, 42, 36, -2, 58, -40),
            (0.725, 4, 16, 38, 38, -4, 58, -42),
        ],
    ),
]

_BONE = [
    _B(
        "sacrum",
        [
            (0.97, 15, -48, -45, -25, -62, 0, -68, 25, -62, 48, -45),
            (0.93, 14, -48, -48, -25, -64, 0, -70, 25, -64, 48, -48),
            (0.89, 11, -40, -55, -20, -68, 0, -73, 20, -68, 40, -55),
            (0.86, 8, -30, -65, -15, -75, 0, -78, 15, -75, 30, -65),
            (0.82, 6, -10, -84, -5, -86, 0, -88, 5, -86, 10, -84),
            (0.80, 3, -6, -88, -3, -89, 0, -90, 3, -89, 6, -88),
        ],
        layer="bone",
        side=False,
    ),
    _E(
        "l5_body",
        [(0.97, 0, -32, 24, 18, 0), (1.06, 0, -32, 26, 19, 0)],
        layer="bone",
        frame="side",
        side=False,
    ),
    _B(
        "l5_arch",
        [(0.97, 5, -16, -55, 0, -72, 16, -55), (1.06, 5, -16, -55, 0, -74, 16, -55)],
        layer="bone",
        side=False,
    ),
    _E(
        "tibia",
        [
            (-0.30, 0, -5, 22, 20, 0),
            (-0.10, 0, -5, 26, 22, 0),
            (-0.03, 0, -6, 35, 25, 0),
            (-0.008, 0, -6, 37, 26, 0),
        ],
        layer="bone",
    ),
    _E("fibula", [(-0.30, 30, -20, 8, 8, 0), (-0.03, 32, -20, 10, 9, 0)], layer="bone"),
    _E("patella", _ellipsoid(0.06, 0, 32, 20, 9, 0.04, n=7), layer="bone"),
]

_FASCIA = [
    Track(
        "leg",
        "fascia",
        "quad",
        (
            (-0.30, 0, -12, 40, 40, 36, 46),
            (-0.02, 0, -8, 50, 54, 44, 56),
            (0.06, -2, -8, 50, 56, 48, 56),
            (0.15, -6, -10, 50, 60, 46, 56),
            (0.30, -8, -10, 50, 62, 46, 58),
            (0.45, -8, -11, 50, 63, 52, 60),
            (0.60, -12, -11, 60, 72, 58, 64),
            (0.70, -18, -8, 72, 92, 74, 70),
            (0.78, -22, -10, 76, 96, 80, 76),
        ),
        True,
        "femur",
    ),
    Track(
        "hip",
        "fascia",
        "quad",
        (
            (0.68, 100, -20, 50, 50, 50, 60),
            (0.76, 108, -15, 62, 75, 72, 88),
            (0.82, 108, -17, 58, 62, 86, 96),
            (0.90, 106, -22, 60, 62, 76, 92),
            (0.97, 102, -26, 64, 60, 72, 82),
            (1.06, 98, -30, 66, 58, 66, 72),
        ),
        True,
        "side",
    ),
    Track(
        "trunk",
        "fascia",
        "quad",
        (
            (0.71, 0, -20, 20, 20, 25, 40),
            (0.74, 0, -15, 45, 45, 45, 75),
            (0.78, 0, -10, 90, 90, 62, 95),
            (0.82, 0, -5, 140, 140, 75, 105),
            (0.88, 0, 0, 160, 160, 96, 112),
            (0.95, 0, 5, 165, 165, 112, 114),
            (1.06, 0, 5, 160, 160, 116, 112),
        ),
        False,
        "side",
    ),
]

# Fat that pushes muscle aside (label 0): neurovascular sleeves, popliteal and ischioanal fossae.
_FEMORAL_PATH = [
    (0.95, 52, 20),
    (0.86, 58, 36),
    (0.80, 60, 44),
    (0.72, 68, 32),
    (0.62, 78, 27),
    (0.48, 82, 18),
    (0.33, 80, -4),
    (0.20, 92, -34),
    (0.10, 96, -38),
    (-0.1, 98, -38),
]
_SCIATIC_PATH = [
    (0.87, 84, -58),
    (0.80, 100, -46),
    (0.72, 104, -44),
    (0.55, 112, -44),
    (0.35, 106, -44),
    (0.20, 100, -42),
    (0.10, 98, -44),
]


def _tube(name, path, r, layer, tissue="", frame="side"):
    return _E(
        name, [(u, x, y, r, r, 0) for u, x, y in path], layer=layer, frame=frame, tissue=tissue
    )


_FAT = [
    _tube("femoral_sheath", _FEMORAL_PATH, 9.0, "fat"),
    _tube("sciatic_sheath", _SCIATIC_PATH, 7.0, "fat"),
    _E(
        "popliteal_fossa",
        [
            (-0.05, -4, -30, 14, 10, 0),
            (0.04, -4, -34, 20, 13, 0),
            (0.12, -6, -32, 16, 10, 0),
            (0.18, -6, -30, 6, 5, 0),
        ],
        layer="fat",
    ),
    _E(
        "ischioanal_fossa",
        [
            (0.70, 40, -50, 12, 10, 60),
            (0.74, 38, -54, 20, 15, 60),
            (0.78, 36, -58, 18, 16, 60),
            (0.81, 32, -62, 8, 8, 60),
        ],
        layer="fat",
        frame="side",
    ),
]
_SOFT = [
    # Cartilage and capsule around the femoral head keep muscle out of the hip joint.
    _E(
        "hip_joint",
        _ellipsoid(U_HIP, 85, 0, 27, 27, 0.052, n=9),
        layer="soft",
        frame="side",
        tissue="cartilage",
    ),
    _tube("femoral_vessels", _FEMORAL_PATH, 5.0, "soft", tissue="vessel"),
    _tube("sciatic_nerve", _SCIATIC_PATH, 4.0, "soft", tissue="nerve"),
    _E(
        "bowel",
        [(0.86, 0, 45, 45, 30, 0), (0.90, 0, 42, 70, 48, 0), (1.06, 0, 38, 80, 55, 0)],
        layer="soft",
        frame="side",
        tissue="viscera",
        side=False,
        gas=True,
    ),
    _E(
        "bladder",
        [
            (0.79, 0, 34, 16, 12, 0),
            (0.82, 0, 36, 34, 26, 0),
            (0.86, 0, 38, 30, 22, 0),
            (0.88, 0, 40, 12, 10, 0),
        ],
        layer="soft",
        frame="side",
        tissue="bladder",
        side=False,
    ),
    _E(
        "rectum",
        [
            (0.78, 0, -50, 10, 9, 0),
            (0.84, 0, -50, 16, 14, 0),
            (0.92, 0, -48, 16, 14, 0),
            (0.95, 0, -44, 10, 9, 0),
        ],
        layer="soft",
        frame="side",
        tissue="viscera",
        side=False,
        gas=True,
    ),
]

ATLAS: tuple[Track, ...] = tuple(_MUSCLES + _FEMUR + _ILIAC + _BONE + _FASCIA + _FAT + _SOFT)
MUSCLE_NAMES: tuple[str, ...] = tuple(
    dict.fromkeys(t.name for t in _MUSCLES if t.layer == "muscle")
)


def femur_axis(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference femoral shaft axis (X lateral, Y anterior; mm) at height fraction ``u``."""
    u = np.asarray(u, dtype=float)
    x = FEMUR_KNEE_X + (FEMUR_TOP_X - FEMUR_KNEE_X) * np.clip(u, 0.0, U_TOP) / U_TOP
    return x, np.full_like(x, FEMUR_Y)


# --------------------------------------------------------------------------- subject design
@dataclass(frozen=True)
class SideDesign:
    """One leg's pose (mm, degrees) and muscle area factors (class name -> factor)."""

    side: int  # +1: the subject's right (RAS +x), -1: left
    spread_mm: float  # lateral shift of the knee from the reference pose
    rotation_deg: float  # external rotation of the leg about the femoral axis
    area: dict  # muscle name -> cross-section area factor relative to the reference


@dataclass(frozen=True)
class SubjectDesign:
    """Everything random about one phantom, drawn before any voxel is made.

    ``length_mm``: knee joint to iliac crest; ``bone_scale``: in-plane size of the skeleton;
    ``muscle_scale``: in-plane spacing of the muscles around the bones (both relative to the
    reference adult); ``volume_factor``: muscle volume / height² relative to the reference.
    """

    subject_id: str
    sex: str
    height_cm: float
    sarcopenic: bool
    sarcopenia_from_smi: bool
    volume_factor: float
    length_mm: float
    bone_scale: float
    muscle_scale: float
    sides: tuple
    fat_mm: float
    body_rotation_deg: float
    position_mm: tuple
    margins_mm: dict
    noise_hu: float
    muscle_hu: float
    orientation: str
    muscle_weights: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "sides"}
        out["sides"] = [s.__dict__ for s in self.sides]
        return out


def _by_sex(value, sex: str):
    return value[sex] if isinstance(value, dict) else value


def subject_design(
    subject_id: str,
    sex: str,
    height_cm: float,
    smi: float | None,
    sarcopenia_cutoff: float,
    cfg: dict,
    seed: int,
    weight_kg: float | None = None,
) -> SubjectDesign:
    """Draw one subject's phantom parameters (no voxels): sizes, pose, volumes, intensities.

    ``cfg`` is config ``synthetic``. ``sex`` is "F" or "M"; ``height_cm`` in cm; ``smi`` in
    kg/m² (None/NaN: sarcopenia status is drawn from ``volume.latent_sarcopenia``);
    ``sarcopenia_cutoff`` the SMI cutoff of the subject's sex (kg/m²); ``weight_kg`` sets the
    fat thickness through the BMI (None: the sex's mean thickness).
    """
    if sex not in ("F", "M"):
        raise ThighctError(
            f"sex must be F or M, not {sex!r}",
            subject=subject_id,
            fix="use F or M in the cohort table's sex column",
        )
    rng = subject_rng(seed, subject_id, 0)
    vol = cfg["volume"]
    var = cfg["variation"]
    status = subject_sarcopenic(smi, sarcopenia_cutoff)
    latent = rng.random()  # drawn always, so every later draw is the same with or without SMI
    from_smi = status is not None
    if status is None:
        status = bool(latent < _by_sex(vol["latent_sarcopenia"], sex))

    h_rel = float(height_cm) / float(cfg["reference_height_cm"])
    length_rel = h_rel * math.exp(rng.normal(0.0, var["length_sd"]))
    bone_scale = (
        h_rel * _by_sex(cfg["bone_scale"], sex) * math.exp(rng.normal(0.0, var["bone_scale_sd"]))
    )
    volume_factor = _by_sex(vol["sex_factor"], sex) * math.exp(
        rng.normal(0.0, _by_sex(vol["subject_sd"], sex))
    )
    effect = _by_sex(vol["sarcopenia_effect"], sex)
    named = set(vol["named_muscles"])
    weights = {m: (1.0 if m in named else float(vol["other_weight"])) for m in MUSCLE_NAMES}
    # Muscle volume / h² = reference * volume_factor * exp(effect * weight * status + noise);
    # the length along the leg scales with length_rel, so the cross-section takes the rest.
    area_common = h_rel**2 * volume_factor / length_rel
    muscle_noise = {m: rng.normal(0.0, var["muscle_sd"]) for m in MUSCLE_NAMES}
    asym = rng.normal(0.0, var["asymmetry_sd"])
    sides = []
    for side in (+1, -1):
        area = {
            m: area_common
            * math.exp(
                effect * weights[m] * status
                + muscle_noise[m]
                + side * asym / 2
                + rng.normal(0.0, var["side_sd"])
            )
            for m in MUSCLE_NAMES
        }
        sides.append(
            SideDesign(
                side=side,
                spread_mm=float(rng.normal(*var["leg_spread_mm"])),
                rotation_deg=float(rng.normal(*var["leg_rotation_deg"])),
                area=area,
            )
        )
    fat_mean, fat_sd = _by_sex(cfg["fat_mm"], sex)
    fat = rng.normal(fat_mean, fat_sd)
    if weight_kg is not None and not (isinstance(weight_kg, float) and math.isnan(weight_kg)):
        bmi = float(weight_kg) / (float(height_cm) / 100.0) ** 2
        fat += cfg["fat_per_bmi_mm"] * (bmi - cfg["reference_bmi"])
    fat = float(np.clip(fat, *cfg["fat_range_mm"]))
    codes = list(cfg["orientations"])
    p = np.asarray([cfg["orientations"][c] for c in codes], dtype=float)
    orientation = str(codes[int(rng.choice(len(codes), p=p / p.sum()))])
    margins = {
        k: float(rng.uniform(*cfg["fov_margin_mm"][k]))
        for k in ("above", "below", "side", "anterior", "table")
    }
    hu = cfg["hu"]
    muscle_hu = (
        hu["muscle"] + hu["muscle_sarcopenia_shift"] * status + rng.normal(0.0, hu["muscle_sd"])
    )
    return SubjectDesign(
        subject_id=str(subject_id),
        sex=sex,
        height_cm=float(height_cm),
        sarcopenic=bool(status),
        sarcopenia_from_smi=from_smi,
        volume_factor=float(volume_factor * math.exp(effect * status)),
        length_mm=float(LENGTH_PER_HEIGHT * cfg["reference_height_cm"] * length_rel),
        bone_scale=float(bone_scale),
        # The fascia and the muscles' spacing shrink with the mean sarcopenia effect, so a
        # smaller muscle leaves fat or a smaller compartment, not room its neighbours fill.
        muscle_scale=float(
            math.sqrt(
                area_common * math.exp(effect * status * float(np.mean(list(weights.values()))))
            )
        ),
        sides=tuple(sides),
        fat_mm=fat,
        body_rotation_deg=float(rng.normal(0.0, var["rotation_deg"])),
        position_mm=(
            float(rng.normal(0.0, var["position_mm"])),
            float(rng.normal(0.0, var["position_mm"])),
        ),
        margins_mm=margins,
        noise_hu=float(rng.uniform(*cfg["noise_hu"])),
        muscle_hu=float(muscle_hu),
        orientation=orientation,
        muscle_weights=weights,
    )


def reference_design(cfg: dict) -> SubjectDesign:
    """The reference adult: the atlas as drawn (no variation), RAS, male sex factor 1."""
    h = float(cfg["reference_height_cm"])
    sides = tuple(SideDesign(s, 0.0, 0.0, {m: 1.0 for m in MUSCLE_NAMES}) for s in (+1, -1))
    return SubjectDesign(
        subject_id="reference",
        sex="M",
        height_cm=h,
        sarcopenic=False,
        sarcopenia_from_smi=False,
        volume_factor=1.0,
        length_mm=LENGTH_PER_HEIGHT * h,
        bone_scale=1.0,
        muscle_scale=1.0,
        sides=sides,
        fat_mm=float(cfg["fat_mm"]["M"][0]),
        body_rotation_deg=0.0,
        position_mm=(0.0, 0.0),
        margins_mm={"above": 10.0, "below": 10.0, "side": 20.0, "anterior": 20.0, "table": 20.0},
        noise_hu=float(np.mean(cfg["noise_hu"])),
        muscle_hu=float(cfg["hu"]["muscle"]),
        orientation="RAS",
    )


# ------------------------------------------------------------------------------- geometry
@dataclass
class Placed:
    """A track placed in one subject's world (RAS mm), on the slices ``k0:k1``."""

    track: Track
    side: int
    k0: int
    k1: int
    params: dict  # name -> array over the slices k0:k1 (or (n_slices, n_points, 2) for bands)
    class_id: int = 0
    posed: bool = False  # moves with the leg (pose, resting on the table)


def _interp(keys: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.stack([np.interp(u, keys[:, 0], keys[:, c]) for c in range(1, keys.shape[1])], axis=1)


def _taper(u, u0, u1, taper_u):
    """Ellipsoidal end caps: 1 in the middle, falling to 0 at both ends over taper_u (at most
    a quarter of the muscle's length, so short muscles keep a full-size middle)."""
    length = min(taper_u, TAPER_MAX_FRACTION * (u1 - u0))
    t = np.clip(np.minimum(u - u0, u1 - u) / max(length, 1e-6), 0.0, 1.0)
    return np.sqrt(1.0 - (1.0 - t) ** 2)


class _Pose:
    """Reference side frame -> world (RAS mm) for one subject and one side (or the midline)."""

    def __init__(self, design: SubjectDesign, side: int):
        self.d = design
        self.side = side
        sd = design.sides[0 if side >= 0 else 1]
        self.spread = sd.spread_mm if side else 0.0
        self.rot = math.radians(sd.rotation_deg) if side else 0.0
        self.alpha = math.radians(design.body_rotation_deg)
        self.t = design.position_mm

    def pos_scale(self, u):
        """In-plane scale of offsets from the femur: muscles in the thigh, skeleton in the pelvis."""
        w = np.clip((u - (U_POSE_FULL + 0.1)) / (U_HIP - U_POSE_FULL - 0.1), 0.0, 1.0)
        return self.d.muscle_scale * (1 - w) + self.d.bone_scale * w

    def leg_weight(self, u):
        return np.clip((U_HIP - u) / (U_HIP - U_POSE_FULL), 0.0, 1.0)

    def place(self, x, y, u, how: str):
        """Map reference points (x, y; arrays over slices, or (slices, n)) to world x, y.

        ``how``: "soft" (offsets from the femur scale like muscle spacing), "bone" (skeleton
        scale), "pelvis" (skeleton scale, no leg pose). Returns x, y and the in-plane rotation
        angle (radians) the point's neighbourhood turned by.
        """
        b = self.d.bone_scale
        ushape = u if np.ndim(x) == 1 else u[:, None]
        fx, fy = femur_axis(ushape)
        if how == "soft":
            s = self.pos_scale(ushape)
            x, y = fx * b + (x - fx) * s, fy * b + (y - fy) * s
        else:
            x, y = x * b, y * b
        psi = np.zeros_like(ushape, dtype=float)
        if self.side and how != "pelvis":
            w = self.leg_weight(ushape)
            psi = -self.rot * w  # external rotation turns the front of the leg laterally
            cx, cy = fx * b, fy * b
            c, s_ = np.cos(psi), np.sin(psi)
            x, y = cx + c * (x - cx) - s_ * (y - cy), cy + s_ * (x - cx) + c * (y - cy)
            x = x + self.spread * np.clip((U_HIP - ushape) / U_HIP, 0.0, 1.0)
        if self.side < 0:
            x = -x
            psi = -psi
        ca, sa = math.cos(self.alpha), math.sin(self.alpha)
        xw = ca * x - sa * y + self.t[0]
        yw = sa * x + ca * y + self.t[1]
        return xw, yw, psi + self.alpha


def _mirror_angle(theta, side):
    return theta if side >= 0 else np.pi - theta


def place_tracks(design: SubjectDesign, cfg: dict, z: np.ndarray, labels) -> list[Placed]:
    """Place every atlas track of one subject on the slices at world heights ``z`` (mm).

    The knee joint is at z = 0 and the iliac crest at ``design.length_mm``.
    """
    u = np.asarray(z, dtype=float) / design.length_mm
    taper_u = float(cfg["taper_mm"]) / design.length_mm
    name_to_id = labels.name_to_id
    placed: list[Placed] = []
    unlabelled_id = 200
    for track in ATLAS:
        keys = np.asarray(track.keys, dtype=float)
        keys = keys[np.argsort(keys[:, 0], kind="stable")]
        inside = np.flatnonzero((u >= keys[0, 0]) & (u <= keys[-1, 0]))
        if inside.size == 0:
            continue
        k0, k1 = int(inside[0]), int(inside[-1]) + 1
        uu = u[k0:k1]
        vals = _interp(keys, uu)
        class_id = 0
        if track.layer == "muscle":
            if track.name not in name_to_id:
                raise ThighctError(
                    f"the label table has no class {track.name!r} for the phantom",
                    fix="use config/labels.tsv or keep its class names",
                )
            class_id = name_to_id[track.name]
        elif track.layer == "unlabelled":
            unlabelled_id += 1
            class_id = unlabelled_id
        elif track.layer in ("femur", "iliac"):
            class_id = name_to_id[track.layer]
        for side in (+1, -1) if track.side else (0,):
            pose = _Pose(design, side)
            sd = design.sides[0 if side >= 0 else 1]
            p = {}
            if track.kind == "band":
                w = vals[:, 0]
                pts = vals[:, 1:].reshape(len(uu), -1, 2)
                xw, yw, _ = pose.place(pts[..., 0], pts[..., 1], uu, "pelvis")
                p["points"] = np.stack([xw, yw], axis=-1)
                p["w"] = w * design.bone_scale
            else:
                x, y = vals[:, 0], vals[:, 1]
                if track.frame == "femur":
                    fx, fy = femur_axis(uu)
                    x, y = x + fx, y + fy
                if track.layer in ("femur", "bone"):
                    how, r_scale = ("pelvis" if not track.side else "bone"), design.bone_scale
                elif track.layer in ("fat", "soft"):
                    how, r_scale = ("soft" if track.side else "pelvis"), design.bone_scale
                elif track.layer == "fascia":
                    how = "soft" if track.side else "pelvis"
                    r_scale = design.muscle_scale if track.side else design.bone_scale
                else:  # muscles
                    how = "soft"
                    # Labelled muscles take their own area factor; the others the subject's.
                    area = (
                        sd.area[track.name] if track.layer == "muscle" else design.muscle_scale**2
                    )
                    r_scale = (
                        MUSCLE_INFLATE
                        * math.sqrt(area)
                        * _taper(uu, keys[0, 0], keys[-1, 0], taper_u)
                    )
                xw, yw, rot = pose.place(x, y, uu, how)
                p["x"], p["y"] = xw, yw
                if track.kind == "ellipse":
                    p["a"] = np.maximum(vals[:, 2] * r_scale, 0.3)
                    p["b"] = np.maximum(vals[:, 3] * r_scale, 0.3)
                    p["theta"] = _mirror_angle(np.radians(vals[:, 4]), side) + rot
                else:  # quad: lateral, medial, anterior, posterior; the skin lies outside
                    pattern = FAT_PATTERN_LEG if track.side else FAT_PATTERN_TRUNK
                    along = np.asarray(FAT_ALONG_LEG)
                    fat = design.fat_mm * np.interp(uu, along[:, 0], along[:, 1])
                    for i, name in enumerate(("lat", "med", "ant", "post")):
                        p[name] = vals[:, 2 + i] * r_scale
                        p["skin_" + name] = p[name] + fat * pattern[i]
                    p["rot"] = np.broadcast_to(rot, uu.shape).astype(float)
            posed = bool(side) and track.kind != "band"
            placed.append(Placed(track, side, k0, k1, p, class_id, posed))
    return placed


# ------------------------------------------------------------------------ signed distances
def _ellipse_sd(X, Y, x, y, a, b, theta):
    """First-order signed distance (mm) to an ellipse; X (ni,1,1), Y (1,nj,1), params (1,1,nk)."""
    dx, dy = X - x, Y - y
    c, s = np.cos(theta), np.sin(theta)
    p = dx * c + dy * s + np.float32(1e-3)
    q = dy * c - dx * s
    ia, ib = 1.0 / (a * a), 1.0 / (b * b)
    r = np.sqrt(p * p * ia + q * q * ib)
    g = np.sqrt(p * p * ia * ia + q * q * ib * ib)
    return ((r - 1.0) * r / g).astype(np.float32)


def _quad_sd(X, Y, x, y, lat, med, ant, post, rot, side):
    dx, dy = X - x, Y - y
    c, s = np.cos(rot), np.sin(rot)
    p = dx * c + dy * s + np.float32(1e-3)
    q = dy * c - dx * s
    a = np.where(p * (side if side else 1) > 0, lat, med)
    b = np.where(q > 0, ant, post)
    ia, ib = 1.0 / (a * a), 1.0 / (b * b)
    r = np.sqrt(p * p * ia + q * q * ib)
    g = np.sqrt(p * p * ia * ia + q * q * ib * ib)
    return ((r - 1.0) * r / g).astype(np.float32)


def _smin(a, b, k):
    """Smooth minimum (polynomial, width k mm): rounds the join of two outlines."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1.0 - h) + a * h - k * h * (1.0 - h)


def _fraction_inside(e, h):
    """Fraction of a voxel of width h (mm) inside a surface at signed distance e (mm)."""
    return np.clip(0.5 - e / h, 0.0, 1.0)


def _fraction_band(lo, hi, e, h):
    """Fraction of a voxel (centre e, width h) that lies in the band lo <= s <= hi."""
    return np.clip(np.minimum(hi, e + h / 2) - np.maximum(lo, e - h / 2), 0.0, h) / h


def _bbox(pl: Placed, xs, ys, margin):
    p = pl.params
    if pl.track.kind == "band":
        px, py = p["points"][..., 0], p["points"][..., 1]
        w = p["w"][:, None]
        lo_x, hi_x = (px - w).min(), (px + w).max()
        lo_y, hi_y = (py - w).min(), (py + w).max()
    elif pl.track.kind == "ellipse":
        r = np.maximum(p["a"], p["b"])
        lo_x, hi_x = (p["x"] - r).min(), (p["x"] + r).max()
        lo_y, hi_y = (p["y"] - r).min(), (p["y"] + r).max()
    else:
        r = np.maximum.reduce([p["lat"], p["med"], p["ant"], p["post"]])
        lo_x, hi_x = (p["x"] - r).min(), (p["x"] + r).max()
        lo_y, hi_y = (p["y"] - r).min(), (p["y"] + r).max()
    i0 = int(np.searchsorted(xs, lo_x - margin))
    i1 = int(np.searchsorted(xs, hi_x + margin))
    j0 = int(np.searchsorted(ys, lo_y - margin))
    j1 = int(np.searchsorted(ys, hi_y + margin))
    return slice(i0, i1), slice(j0, j1)


def _track_sd(pl: Placed, X, Y, ks: slice, skin: bool = False):
    """Signed distance (mm) of a placed track on its slices ``ks`` (indices from ``pl.k0``).

    ``skin``: for a fascia, the distance to the skin outside it instead.
    """
    p = pl.params
    if pl.track.kind == "band":
        return _band_sd(X, Y, p["points"][ks], p["w"][ks])

    def g(name):
        return np.asarray(p[name][ks], dtype=np.float32)[None, None, :]

    if pl.track.kind == "ellipse":
        return _ellipse_sd(X, Y, g("x"), g("y"), g("a"), g("b"), g("theta"))
    pre = "skin_" if skin else ""
    return _quad_sd(
        X,
        Y,
        g("x"),
        g("y"),
        g(pre + "lat"),
        g(pre + "med"),
        g(pre + "ant"),
        g(pre + "post"),
        g("rot"),
        pl.side,
    )


def _band_sd(X, Y, pts, w):
    """Distance (mm) to a thick polyline minus its half width; pts (nk, n, 2), w (nk,)."""
    pts = np.asarray(pts, dtype=np.float32)
    out = None
    for i in range(pts.shape[1] - 1):
        x0 = pts[:, i, 0][None, None, :]
        y0 = pts[:, i, 1][None, None, :]
        ddx = (pts[:, i + 1, 0] - pts[:, i, 0])[None, None, :]
        ddy = (pts[:, i + 1, 1] - pts[:, i, 1])[None, None, :]
        L2 = np.maximum(ddx * ddx + ddy * ddy, 1e-6)
        t = np.clip(((X - x0) * ddx + (Y - y0) * ddy) / L2, 0.0, 1.0)
        d2 = (X - x0 - t * ddx) ** 2 + (Y - y0 - t * ddy) ** 2
        out = d2 if out is None else np.minimum(out, d2)
    return (np.sqrt(out) - np.asarray(w, dtype=np.float32)[None, None, :]).astype(np.float32)


def expected_z_ranges(design: SubjectDesign, labels) -> dict[int, tuple[float, float]]:
    """World z range (mm, knee joint at 0) each foreground class spans in a subject's phantom.

    Muscles shrink to nothing at both ends of their range, over ``taper_mm`` or a quarter of
    their length if that is shorter.
    """
    out: dict[int, tuple[float, float]] = {}
    for track in ATLAS:
        if track.layer not in ("muscle", "femur", "iliac"):
            continue
        cid = labels.id_of(track.name if track.layer == "muscle" else track.layer)
        u = np.asarray(track.keys, dtype=float)[:, 0]
        lo, hi = u.min() * design.length_mm, u.max() * design.length_mm
        if cid in out:
            lo, hi = min(lo, out[cid][0]), max(hi, out[cid][1])
        out[cid] = (float(lo), float(hi))
    return out


# ----------------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class Grid:
    """Voxel centres in RAS+ world mm along x, y, z (increasing), and the voxel size (mm)."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    spacing: tuple

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.x), len(self.y), len(self.z))

    @property
    def affine(self) -> np.ndarray:
        """Voxel (i, j, k) -> RAS+ mm."""
        aff = np.diag([*self.spacing, 1.0])
        aff[:3, 3] = (self.x[0], self.y[0], self.z[0])
        return aff


def _axis(lo, hi, step):
    n = max(int(math.ceil((hi - lo) / step)), 1)
    return (lo + step * np.arange(n)).astype(np.float64)


def _skin_extent(placed: list[Placed]):
    """World x-min, x-max, y-min, y-max (mm) of the body outline (from the skin quads)."""
    lo_x = lo_y = np.inf
    hi_x = hi_y = -np.inf
    for pl in placed:
        if pl.track.layer != "fascia":
            continue
        p = pl.params
        r = np.maximum.reduce([p["skin_lat"], p["skin_med"], p["skin_ant"], p["skin_post"]])
        lo_x, hi_x = min(lo_x, (p["x"] - r).min()), max(hi_x, (p["x"] + r).max())
        # Anterior and posterior reach, with the outline's small rotation.
        ant = p["y"] + p["skin_ant"] / np.maximum(np.cos(p["rot"]), 0.5)
        post = p["y"] - p["skin_post"] / np.maximum(np.cos(p["rot"]), 0.5)
        lo_y, hi_y = min(lo_y, post.min()), max(hi_y, ant.max())
    return lo_x, hi_x, lo_y, hi_y


def _rest_legs_on_table(placed: list[Placed], u: np.ndarray) -> None:
    """Lower the thighs (in place) until their back rests at the level of the buttocks.

    A supine patient's thighs lie on the table as the pelvis does; the shift grows from 0 at
    the hip joint to full at mid-thigh, so the femur stays one smooth bone.
    """
    post = np.full(len(u), np.inf)
    lowest = np.inf
    for pl in placed:
        if pl.track.layer != "fascia":
            continue
        p = pl.params
        back = p["y"] - p["skin_post"] / np.maximum(np.cos(p["rot"]), 0.5)
        lowest = min(lowest, back.min())
        if pl.posed and pl.track.name == "leg":
            post[pl.k0 : pl.k1] = np.minimum(post[pl.k0 : pl.k1], back)
    if not np.isfinite(lowest):
        return
    below = (u <= U_POSE_FULL) & np.isfinite(post)
    if not below.any():
        return
    # A straight thigh: the drop that brings its lowest point (not every slice) to the table.
    drop = min(lowest - post[below].min(), 0.0)
    shift = drop * np.clip((U_HIP - u) / (U_HIP - U_POSE_FULL), 0.0, 1.0)
    for pl in placed:
        if pl.posed:
            pl.params["y"] = pl.params["y"] + shift[pl.k0 : pl.k1]


def subject_grid(design: SubjectDesign, cfg: dict, labels) -> tuple[Grid, list[Placed], float]:
    """The subject's scan grid (field of view around the body and table) and placed tracks.

    Returns ``(grid, placed, table_top_y)``; z = 0 is the knee joint.
    """
    sx, sy, sz = (float(v) for v in cfg["spacing_mm"])
    m = design.margins_mm
    z = _axis(-m["below"], design.length_mm + m["above"] + sz, sz)
    z = z[z <= design.length_mm + m["above"]]
    placed = place_tracks(design, cfg, z, labels)
    _rest_legs_on_table(placed, z / design.length_mm)
    lo_x, hi_x, lo_y, hi_y = _skin_extent(placed)
    # The body rests on the table and is flattened against it by press_mm.
    table_top = lo_y + float(cfg["table"]["press_mm"])
    x = _axis(lo_x - m["side"], hi_x + m["side"], sx)
    y = _axis(table_top - m["table"], hi_y + m["anterior"], sy)
    return Grid(x=x, y=y, z=z, spacing=(sx, sy, sz)), placed, table_top


# -------------------------------------------------------------------------------- render
class _SliceNoise:
    """Unit white noise drawn slice by slice from the subject's own random streams.

    Slice ``k`` always gets the same values (texture and image noise), whatever the slab it
    is rendered in, so the phantom does not depend on ``slab_voxels``.
    """

    def __init__(self, seed: int, subject_id: str, shape2d: tuple[int, int]):
        self.seed, self.subject_id, self.shape2d = seed, subject_id, shape2d

    def _draws(self, k: int, n: int) -> list[np.ndarray]:
        rng = subject_rng(self.seed, self.subject_id, _SLAB_STREAM + k)
        return [rng.standard_normal(self.shape2d, dtype=np.float32) for _ in range(n)]

    def texture(self, ks: slice, nz: int, sigma_vox) -> np.ndarray:
        """Smooth unit-SD noise on slices ks (Gaussian sigma in voxels per axis)."""
        halo = int(math.ceil(4 * sigma_vox[2]))
        lo, hi = max(0, ks.start - halo), min(nz, ks.stop + halo)
        white = np.stack([self._draws(k, 1)[0] for k in range(lo, hi)], axis=-1)
        smooth = ndimage.gaussian_filter(white, sigma_vox, mode=("wrap", "wrap", "nearest"))
        norm = 1.0
        for sig in sigma_vox:  # SD of filtered unit white noise: the kernel's L2 norm
            if sig > 0:
                r = int(4 * sig + 0.5)
                w = np.exp(-0.5 * (np.arange(-r, r + 1) / sig) ** 2)
                norm *= float(np.sqrt(((w / w.sum()) ** 2).sum()))
        return smooth[:, :, ks.start - lo : ks.stop - lo] / np.float32(norm)

    def image(self, ks: slice) -> np.ndarray:
        """Unit white noise on slices ks (the image noise)."""
        return np.stack([self._draws(k, 2)[1] for k in range(ks.start, ks.stop)], axis=-1)


def _update_muscles(state, e, cid, sl):
    """Keep, per voxel, the deepest muscle (e1, id1) and the deepest *other* muscle (e2)."""
    e1, e2, id1 = state["e1"][sl], state["e2"][sl], state["id1"][sl]
    same = id1 == cid
    better = e < e1
    state["e2"][sl] = np.where(
        better, np.where(same, e2, e1), np.where(same, e2, np.minimum(e2, e))
    )
    state["e1"][sl] = np.minimum(e1, e)
    state["id1"][sl] = np.where(better, np.uint8(cid), id1)


def _render_slab(placed, grid, ks: slice, design, cfg, table_top, ids, noise, want_ct: bool):
    """CT (float32 HU) and label (uint8) of the slices ``ks`` of ``grid``."""
    xs = grid.x.astype(np.float32)
    ys = grid.y.astype(np.float32)
    shape = (len(xs), len(ys), ks.stop - ks.start)
    h = float(np.mean(grid.spacing[:2]))
    plane = float(cfg["fat_plane_mm"])
    st = {
        "e1": np.full(shape, BIG, np.float32),
        "e2": np.full(shape, BIG, np.float32),
        "id1": np.full(shape, 255, np.uint8),
        "fascia": np.full(shape, BIG, np.float32),
        "skin": np.full(shape, BIG, np.float32),
        "fat": np.full(shape, BIG, np.float32),
        "low": np.full(shape, BIG, np.float32),
        "high": np.full(shape, BIG, np.float32),
        "femur": np.full(shape, BIG, np.float32),
        "iliac": np.full(shape, BIG, np.float32),
        "bone": np.full(shape, BIG, np.float32),
    }
    hu = cfg["hu"]
    low_hu = np.zeros(shape, np.float32)
    high_hu = np.zeros(shape, np.float32)
    gas = np.zeros(shape, bool)
    margin = h + plane
    for pl in placed:
        k0, k1 = max(pl.k0, ks.start), min(pl.k1, ks.stop)
        if k0 >= k1:
            continue
        si, sj = _bbox(pl, xs, ys, margin + (60.0 if pl.track.layer == "fascia" else 0.0))
        if si.start >= si.stop or sj.start >= sj.stop:
            continue
        local = slice(k0 - pl.k0, k1 - pl.k0)
        sl = (si, sj, slice(k0 - ks.start, k1 - ks.start))
        X = xs[si][:, None, None]
        Y = ys[sj][None, :, None]
        e = _track_sd(pl, X, Y, local)
        layer = pl.track.layer
        if layer in ("muscle", "unlabelled"):
            _update_muscles(st, e, pl.class_id, sl)
        elif layer == "fascia":
            st["fascia"][sl] = _smin(st["fascia"][sl], e, FASCIA_JOIN_MM)
            st["skin"][sl] = _smin(
                st["skin"][sl], _track_sd(pl, X, Y, local, skin=True), SKIN_JOIN_MM
            )
        elif layer == "fat":
            st["fat"][sl] = np.minimum(st["fat"][sl], e)
        elif layer == "soft":
            key, hu_arr = (
                ("low", low_hu) if pl.track.tissue in ("viscera", "bladder") else ("high", high_hu)
            )
            nearer = e < st[key][sl]
            st[key][sl] = np.where(nearer, e, st[key][sl])
            hu_arr[sl] = np.where(nearer, np.float32(hu[pl.track.tissue]), hu_arr[sl])
            if pl.track.gas:
                gas[sl] |= nearer & (e < 0)
            elif key == "low":
                gas[sl] &= ~nearer
        else:
            st[layer][sl] = np.minimum(st[layer][sl], e)

    y_col = ys[None, :, None]
    st["skin"] = np.maximum(st["skin"], np.float32(table_top) - y_col)
    e_m = np.maximum(st["e1"], st["fascia"])
    gap = 0.5 * (st["e2"] - st["e1"])
    fp = _fraction_band(-plane / 2, plane / 2, gap, h).astype(np.float32)
    label = np.where((e_m < 0) & (fp <= 0.5) & (st["id1"] < 200), st["id1"], 0).astype(np.uint8)
    label[(st["fat"] < 0) | (st["high"] < 0) | (st["bone"] < 0)] = 0
    label[st["iliac"] < 0] = ids["iliac"]
    label[st["femur"] < 0] = ids["femur"]
    if not want_ct:
        return None, label

    tex_cfg = cfg["texture"]
    sig = [tex_cfg["sigma_mm"] / s for s in grid.spacing]
    tex = noise.texture(ks, len(grid.z), sig)
    fat_hu = hu["fat"] + tex_cfg["fat_hu"] * tex
    body = _fraction_inside(st["skin"], h)
    ct = hu["air"] + body * (fat_hu - hu["air"])
    ct += _fraction_band(-cfg["skin_mm"], 0.0, st["skin"], h) * (hu["skin"] - fat_hu)
    f_low = _fraction_inside(st["low"], h)
    low_val = np.where(
        gas & (tex > tex_cfg["gas_threshold"]),
        np.float32(hu["gas"]),
        low_hu + tex_cfg["muscle_hu"] * tex,
    )
    ct += f_low * (low_val - ct)
    f_m = _fraction_inside(e_m, h) * (1.0 - fp)
    ct += f_m * (design.muscle_hu + tex_cfg["muscle_hu"] * tex - ct)
    ct += _fraction_inside(st["fat"], h) * (fat_hu - ct)
    ct += _fraction_inside(st["high"], h) * (high_hu + tex_cfg["muscle_hu"] * tex - ct)

    u = (grid.z[ks] / design.length_mm).astype(np.float32)[None, None, :]
    bone = cfg["bone"]
    shaft = np.interp(u, [0.10, 0.22, 0.66, 0.76], [0.0, 1.0, 1.0, 0.0]).astype(np.float32)
    cortex_femur = bone["cortex_end_mm"] + shaft * (bone["cortex_shaft_mm"] - bone["cortex_end_mm"])
    inner_femur = hu["cancellous"] + shaft * (hu["marrow"] - hu["cancellous"])
    inner_tex = tex_cfg["bone_hu"] * tex
    for key, cortex, inner in (
        ("bone", bone["cortex_end_mm"], hu["cancellous"]),
        ("iliac", bone["cortex_end_mm"], hu["cancellous"]),
        ("femur", cortex_femur, inner_femur),
    ):
        f_b = _fraction_inside(st[key], h)
        shell = np.minimum(_fraction_band(-cortex, 0.0, st[key], h), f_b)
        ct = ct * (1.0 - f_b) + shell * hu["cortical"] + (f_b - shell) * (inner + inner_tex)

    tab = cfg["table"]
    y = y_col
    plate, core = tab["plate_mm"], tab["core_mm"]
    f_top = _fraction_band(table_top - plate, table_top, y, grid.spacing[1])
    f_core = _fraction_band(table_top - plate - core, table_top - plate, y, grid.spacing[1])
    f_bot = _fraction_band(
        table_top - 2 * plate - core, table_top - plate - core, y, grid.spacing[1]
    )
    free = 1.0 - body
    ct += free * ((f_top + f_bot) * (hu["table"] - ct) + f_core * (hu["table_core"] - ct))

    ct += design.noise_hu * noise.image(ks)
    return ct, label


def render(design: SubjectDesign, cfg: dict, labels, want_ct: bool = True, seed: int = 0):
    """Rasterise one subject on its RAS grid.

    Returns ``(ct, label, grid)``: ct int16 HU (None if ``want_ct`` is False), label uint8
    class ids, both indexed (x, y, z) with x to the right, y anterior, z superior.
    """
    grid, placed, table_top = subject_grid(design, cfg, labels)
    ids = {"femur": labels.id_of("femur"), "iliac": labels.id_of("iliac")}
    nx, ny, nz = grid.shape
    per_slab = max(1, int(cfg["slab_voxels"]) // (nx * ny))
    ct = np.empty(grid.shape, np.int16) if want_ct else None
    label = np.empty(grid.shape, np.uint8)
    noise = _SliceNoise(seed, design.subject_id, (nx, ny))
    for k0 in range(0, nz, per_slab):
        ks = slice(k0, min(nz, k0 + per_slab))
        c, lab = _render_slab(placed, grid, ks, design, cfg, table_top, ids, noise, want_ct)
        label[:, :, ks] = lab
        if want_ct:
            ct[:, :, ks] = np.clip(np.rint(c), hu_min(cfg), hu_max(cfg)).astype(np.int16)
    return ct, label, grid


def hu_min(cfg) -> int:
    return int(cfg["hu"]["clip"][0])


def hu_max(cfg) -> int:
    return int(cfg["hu"]["clip"][1])


# ---------------------------------------------------------------------------- orientation
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


# ------------------------------------------------------------------------------- volumes
def label_volumes(label: np.ndarray, spacing, class_ids) -> dict[int, float]:
    """Volume (mm³) of each class id: voxel count x voxel volume (spacing in mm)."""
    counts = np.bincount(np.asarray(label).ravel(), minlength=max(class_ids) + 1)
    voxel = float(np.prod(spacing))
    return {int(c): float(counts[c]) * voxel for c in class_ids}


@functools.lru_cache(maxsize=8)
def _reference_volumes_cached(cfg_json: str, names: tuple) -> dict:
    cfg = json.loads(cfg_json)
    table = LabelTable(
        pd.DataFrame(
            {
                "id": range(len(names)),
                "name": names,
                "display": names,
                "group": "x",
                "colour": "#000000",
            }
        )
    )
    design = reference_design(cfg)
    _, label, grid = render(design, cfg, table, want_ct=False)
    right = grid.x > 0
    out = {}
    for side, mask in ((+1, right), (-1, ~right)):
        vols = label_volumes(label[mask], grid.spacing, list(range(1, len(names))))
        out[side] = vols
    return out


def reference_volumes(cfg: dict, labels) -> dict[int, dict[int, float]]:
    """Per side (+1 right, -1 left), class id -> volume (mm³) of the reference adult."""
    return _reference_volumes_cached(json.dumps(cfg, sort_keys=True), tuple(labels.names))


def target_volumes(design: SubjectDesign, cfg: dict, labels) -> dict[int, float]:
    """Designed volume (mm³) of each foreground class of a subject, without rasterising it.

    Reference volumes (the reference adult, rasterised once per config) scaled by the
    subject's length along the leg and each side's cross-section area factor; bones by the
    skeleton's scale. The rasterised volumes track these up to voxel and overlap effects.
    """
    ref = reference_volumes(cfg, labels)
    length = design.length_mm / (LENGTH_PER_HEIGHT * float(cfg["reference_height_cm"]))
    out = {}
    for cid in labels.ids[1:]:
        name = labels.name_of(cid)
        total = 0.0
        for sd in design.sides:
            v = ref[sd.side][cid]
            if name in sd.area:
                total += v * sd.area[name] * length
            else:
                total += v * design.bone_scale**2 * length
        out[cid] = total
    return out


# --------------------------------------------------------------------------- second rater
def second_rater_labels(
    label: np.ndarray, spacing, rng: np.random.Generator, cfg: dict, muscle_ids
) -> np.ndarray:
    """A second rater's label map: boundaries moved by a voxel or two, small swaps.

    ``cfg`` is config ``synthetic.rater2``: ``shift_mm`` (SD of a smooth in-plane
    displacement field, mm; raters draw slice by slice), ``field_mm`` (its correlation
    length, mm), ``swaps`` (count of small regions given to a neighbouring muscle) and
    ``swap_radius_mm``. Works on any array orientation; ``spacing`` is the voxel size (mm)
    along the array axes.
    """
    label = np.asarray(label)
    shape = label.shape
    coarse = [
        max(2, int(math.ceil(n * s / cfg["field_mm"])) + 1)
        for n, s in zip(shape, spacing, strict=True)
    ]
    idx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    coords = []
    for axis in range(3):
        if axis == 2:
            coords.append(idx[2])
            continue
        field = rng.normal(0.0, cfg["shift_mm"] / spacing[axis], size=coarse).astype(np.float32)
        fine = ndimage.zoom(
            field,
            [n / c for n, c in zip(shape, coarse, strict=True)],
            order=1,
            grid_mode=True,
            mode="nearest",
        )
        fine = fine[: shape[0], : shape[1], : shape[2]]
        coords.append(idx[axis] + fine)
    out = ndimage.map_coordinates(label, coords, order=0, mode="nearest").astype(label.dtype)

    muscle = np.isin(out, np.asarray(list(muscle_ids)))
    boundary = np.zeros(shape, bool)
    for axis in (0, 1):
        a = np.take(out, range(0, shape[axis] - 1), axis=axis)
        b = np.take(out, range(1, shape[axis]), axis=axis)
        both = np.take(muscle, range(0, shape[axis] - 1), axis=axis) & np.take(
            muscle, range(1, shape[axis]), axis=axis
        )
        edge = both & (a != b)
        pad = [(0, 0)] * 3
        pad[axis] = (0, 1)
        boundary |= np.pad(edge, pad)
    candidates = np.argwhere(boundary)
    if len(candidates):
        radius = np.asarray([cfg["swap_radius_mm"] / s for s in spacing])
        for c in candidates[
            rng.choice(len(candidates), size=min(cfg["swaps"], len(candidates)), replace=False)
        ]:
            own = out[tuple(c)]
            lo = np.maximum(c - np.ceil(radius).astype(int), 0)
            hi = np.minimum(c + np.ceil(radius).astype(int) + 1, shape)
            box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
            sub = out[box]
            neigh = sub[(sub != own) & np.isin(sub, list(muscle_ids))]
            if neigh.size == 0:
                continue
            other = np.bincount(neigh).argmax()
            grids = np.meshgrid(
                *[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij"
            )
            inside = (
                sum(((g - ci) / r) ** 2 for g, ci, r in zip(grids, c, radius, strict=True)) <= 1.0
            )
            sub[inside & (sub == own)] = other
    return out


# --------------------------------------------------------------------------------- public
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


def truth_table(subject_id: str, truth: dict, labels):
    """truth.tsv rows of one subject (DataFrame): subject, class_id, name, volume_mm3."""
    return pd.DataFrame(
        [
            {
                "subject": subject_id,
                "class_id": int(c),
                "name": labels.name_of(c),
                "volume_mm3": float(truth[c]),
            }
            for c in sorted(truth)
        ],
        columns=["subject", "class_id", "name", "volume_mm3"],
    )
