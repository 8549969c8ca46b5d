"""A phantom's design: everything random about one subject, drawn before any voxel is made.

Sizes, leg pose, muscle area factors (the cohort's volumes and sarcopenia effect), fat
thickness, field of view, noise and orientation, all from the subject's own random stream
(``subject_rng(seed, subject_id, 0)``), so a subject does not depend on the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ThighctError
from ..sarcopenia import subject_sarcopenic
from ..seeds import subject_rng
from .anatomy import LENGTH_PER_HEIGHT, MUSCLE_NAMES

# Random streams of a subject (subject_rng): design 0, second rater 2, image slice k 1000 + k.
DESIGN_STREAM = 0
RATER2_STREAM = 2
SLAB_STREAM = 1000


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
    rng = subject_rng(seed, subject_id, DESIGN_STREAM)
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
