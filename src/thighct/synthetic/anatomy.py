"""The phantoms' anatomy: the atlas of keyframed cross-sections, read from ``anatomy.yaml``.

The file (next to this module; its header explains every entry) holds the reference adult's
landmarks, the spread of subcutaneous fat, named neurovascular paths and the *tracks*: per
structure, a layer, a frame and a shape given by keyframe rows along the leg. YAML, not a
table: a track's rows have a different number of columns per shape (a band's per number of
points), several tracks share a path, and a few are made by a rule (an ellipsoid, a tube along a
path, a band along an arc) that a table could only hold as long computed decimals.

``load_anatomy`` checks the file's structure and turns it into an :class:`Anatomy`; any problem
is a ThighctError that names the file, the entry (e.g. ``tracks.muscle[3] (vastus_medialis),
ellipse row 2``) and the fix. The module constants below are the shipped file's values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..errors import ThighctError

#: Package data this module reads, relative to this folder. thighct.fingerprint adds their
#: content to the code fingerprint of every rule whose script imports this module.
DATA_FILES = ("anatomy.yaml",)
ANATOMY_FILE = Path(__file__).resolve().parent / DATA_FILES[0]

#: Layers in drawing order (see anatomy.yaml); bands (polylines) draw bones only.
LAYERS = ("muscle", "unlabelled", "femur", "iliac", "bone", "fascia", "fat", "soft")
_BAND_LAYERS = ("femur", "iliac", "bone")
#: Numbers per keyframe row of each shape, after u; a band has 1 + 2 n (n >= 2 points).
ROW_COLUMNS = {
    "ellipse": ("x", "y", "a", "b", "theta_deg"),
    "quad": ("x", "y", "lateral", "medial", "anterior", "posterior"),
}
_SHAPES = ("ellipse", "quad", "band", "ellipsoid", "tube", "arc")
_LANDMARKS = (
    "u_hip",
    "u_top",
    "u_pose_full",
    "femur_knee_x",
    "femur_top_x",
    "femur_y",
    "leg_length_mm",
    "leg_length_at_height_cm",
    "femur_shaft",
)
# libyaml's safe loader when PyYAML has it (the same data, parsed several times faster).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_FIX = f"correct it (the header of {ANATOMY_FILE.name} in the thighct package describes each entry)"


@dataclass(frozen=True)
class Track:
    """One keyframed cross-section of the atlas (see anatomy.yaml).

    ``layer``: muscle (``name`` a class of labels.tsv), unlabelled, fascia, fat, soft, femur,
    iliac or bone. ``keys`` rows start with u; then ``x, y, a, b, theta_deg`` (ellipse), ``x,
    y, lateral, medial, anterior, posterior`` (quad) or ``half_width, x1, y1, ... xn, yn``
    (band). ``side``: drawn on both sides (False: once, on the midline).
    """

    name: str
    layer: str
    kind: str
    keys: tuple
    side: bool = True
    frame: str = "side"
    tissue: str = ""
    gas: bool = False


@dataclass(frozen=True)
class Anatomy:
    """The reference adult: landmarks (u: height fraction; mm), fat spread and the tracks."""

    tracks: tuple[Track, ...]
    u_hip: float
    u_top: float
    u_pose_full: float
    femur_knee_x: float
    femur_top_x: float
    femur_y: float
    length_per_height: float  # knee-joint -> iliac-crest distance per cm of height (mm/cm)
    femur_shaft: tuple  # (u, weight of the shaft) rows
    fat_leg: tuple  # lateral, medial, anterior, posterior
    fat_trunk: tuple
    fat_along_leg: tuple  # (u, factor) rows
    path: str = field(default="", compare=False)

    @property
    def muscle_names(self) -> tuple[str, ...]:
        """The labelled muscles, in the order of their first track."""
        return tuple(dict.fromkeys(t.name for t in self.tracks if t.layer == "muscle"))


def ellipsoid_rows(u0, x, y, a, b, half_u, n=7, theta=0.0) -> list[tuple]:
    """Ellipse keyframes of an ellipsoid centred at u0 (semi-axes a, b in mm; half_u along u)."""
    rows = []
    for t in np.linspace(-1.0, 1.0, n):
        f = math.sqrt(max(1.0 - t * t, 0.0))
        rows.append((u0 + t * half_u, x, y, max(a * f, 1.0), max(b * f, 1.0), theta))
    return rows


def arc_points(cx, cy, r, angles_deg) -> list:
    """x1, y1, ..., xn, yn of points on a circle (mm) at the given angles (degrees)."""
    return [
        c
        for a in angles_deg
        for c in (cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a)))
    ]


class _Problems:
    """Collects what is wrong with an anatomy file, each with where it is."""

    def __init__(self, path: Path):
        self.path = path
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")

    def raise_if_any(self) -> None:
        if self.items:
            body = "\n".join(f"  - {p}" for p in self.items)
            raise ThighctError(
                f"{len(self.items)} problem(s) in the phantom anatomy:\n{body}",
                path=self.path,
                fix=_FIX,
            )


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(value, where, problems, n=None, what="numbers") -> list | None:
    """A list of finite numbers (n of them, if given), else a problem and None."""
    if not isinstance(value, list) or not all(_is_number(v) for v in value):
        problems.add(where, f"expected a list of {what}, got {value!r}")
        return None
    if n is not None and len(value) != n:
        problems.add(where, f"expected {n} {what}, got {len(value)}: {value!r}")
        return None
    return list(value)


def _mapping(value, where, problems, required, optional=()) -> dict | None:
    """A mapping with exactly the required keys (and any optional ones), else a problem."""
    if not isinstance(value, dict):
        problems.add(where, f"expected a mapping with {', '.join(required)}, got {value!r}")
        return None
    missing = [k for k in required if k not in value]
    unknown = [k for k in value if k not in required and k not in optional]
    if missing:
        problems.add(where, f"missing {', '.join(missing)}")
    if unknown:
        allowed = ", ".join([*required, *optional])
        problems.add(where, f"unknown key(s) {', '.join(map(str, unknown))} (allowed: {allowed})")
    return None if missing or unknown else value


def _positive(values, names, where, problems) -> bool:
    bad = [n for v, n in zip(values, names, strict=True) if v <= 0]
    if bad:
        problems.add(where, f"{', '.join(bad)} must be > 0")
    return not bad


def _rows(value, where, problems, shape) -> list | None:
    """Explicit keyframe rows of an ellipse, quad or band."""
    if not isinstance(value, list):
        problems.add(where, f"expected a list of [u, ...] rows, got {value!r}")
        return None
    rows = [_row(raw, f"{where} row {i}", problems, shape) for i, raw in enumerate(value, 1)]
    return None if any(r is None for r in rows) else rows


def _row(raw, where, problems, shape) -> list | None:
    """One keyframe row, its radii (mm) checked to be > 0."""
    if shape == "band":
        row = _numbers(raw, where, problems, what="numbers [u, half_width, x1, y1, ..., xn, yn]")
        if row is None:
            return None
        if len(row) < 6 or len(row) % 2:
            problems.add(
                where, f"a band row is [u, half_width, x1, y1, ..., xn, yn], n >= 2: {raw!r}"
            )
            return None
        radii = {"half_width": row[1]}
    else:
        columns = ROW_COLUMNS[shape]
        what = f"numbers ({', '.join(('u',) + columns)})"
        row = _numbers(raw, where, problems, n=1 + len(columns), what=what)
        if row is None:
            return None
        radii = {
            c: v for c, v in zip(columns, row[1:], strict=True) if c not in ("x", "y", "theta_deg")
        }
    return row if _positive(list(radii.values()), list(radii), where, problems) else None


def _ellipsoid(value, where, problems) -> list | None:
    spec = _mapping(
        value, where, problems, ("u", "x", "y", "a", "b", "half_u", "n"), ("theta_deg",)
    )
    if spec is None:
        return None
    numbers = {k: v for k, v in spec.items() if k != "n"}
    if not all(_is_number(v) for v in numbers.values()):
        problems.add(where, f"u, x, y, a, b, half_u and theta_deg must be numbers: {value!r}")
        return None
    if not isinstance(spec["n"], int) or isinstance(spec["n"], bool) or spec["n"] < 2:
        problems.add(where, f"n (keyframes) must be a whole number >= 2, got {spec['n']!r}")
        return None
    if not _positive([spec["a"], spec["b"], spec["half_u"]], ["a", "b", "half_u"], where, problems):
        return None
    return ellipsoid_rows(
        spec["u"],
        spec["x"],
        spec["y"],
        spec["a"],
        spec["b"],
        spec["half_u"],
        n=spec["n"],
        theta=spec.get("theta_deg", 0.0),
    )


def _tube(value, where, problems, paths) -> list | None:
    spec = _mapping(value, where, problems, ("path", "r"))
    if spec is None:
        return None
    if spec["path"] not in paths:
        problems.add(where, f"no path {spec['path']!r} (paths: {', '.join(paths)})")
        return None
    if not _is_number(spec["r"]) or spec["r"] <= 0:
        problems.add(where, f"r must be a number > 0 (mm), got {spec['r']!r}")
        return None
    return [(u, x, y, spec["r"], spec["r"], 0) for u, x, y in paths[spec["path"]]]


def _arc(value, where, problems) -> list | None:
    if not isinstance(value, list):
        problems.add(where, f"expected a list of arc rows, got {value!r}")
        return None
    rows, ok = [], True
    keys = ("u", "half_width", "centre", "r", "from_deg", "to_deg", "n")
    for i, raw in enumerate(value, start=1):
        at = f"{where} row {i}"
        spec = _mapping(raw, at, problems, keys)
        row = None
        if spec is not None:
            centre = _numbers(spec["centre"], f"{at} centre", problems, n=2)
            scalars = [spec[k] for k in ("u", "half_width", "r", "from_deg", "to_deg")]
            n = spec["n"]
            if not all(_is_number(v) for v in scalars):
                problems.add(at, f"u, half_width, r, from_deg and to_deg must be numbers: {raw!r}")
            elif not isinstance(n, int) or isinstance(n, bool) or n < 2:
                problems.add(at, f"n (points) must be a whole number >= 2, got {n!r}")
            elif centre is not None and _positive(
                [spec["half_width"], spec["r"]], ["half_width", "r"], at, problems
            ):
                angles = np.linspace(spec["from_deg"], spec["to_deg"], n)
                row = (spec["u"], spec["half_width"], *arc_points(*centre, spec["r"], angles))
        ok &= row is not None
        rows.append(row)
    return rows if ok else None


def _track(raw, layer, where, problems, paths) -> Track | None:
    """One track entry of a layer, checked and turned into a Track (rows as given)."""
    if not isinstance(raw, dict):
        problems.add(where, f"expected a mapping with name, frame and a shape, got {raw!r}")
        return None
    name = raw.get("name")
    if isinstance(name, str) and name:
        where = f"{where} ({name})"
    else:
        problems.add(where, f"name must be a non-empty text, got {name!r}")
        return None
    shapes = [k for k in _SHAPES if k in raw]
    if len(shapes) != 1:
        problems.add(
            where, f"give exactly one shape ({', '.join(_SHAPES)}); found {shapes or 'none'}"
        )
        return None
    shape = shapes[0]
    # Bands lie in the side frame; every other shape names its frame.
    required = ["name", shape] + ([] if shape in ("band", "arc") else ["frame"])
    optional = ["midline"]
    if layer == "soft":
        required.append("tissue")
        optional.append("gas")
    if _mapping(raw, where, problems, required, optional) is None:
        return None
    kind = {"ellipsoid": "ellipse", "tube": "ellipse", "arc": "band"}.get(shape, shape)
    if (kind == "quad") != (layer == "fascia"):
        problems.add(where, "fascia outlines are quads, and only they are")
        return None
    if kind == "band" and layer not in _BAND_LAYERS:
        problems.add(where, f"bands are for bones (layers {', '.join(_BAND_LAYERS)})")
        return None
    frame = raw.get("frame", "side")
    if frame not in ("femur", "side"):
        problems.add(where, f"frame must be femur or side, got {frame!r}")
        return None
    flags = {k: raw.get(k, False) for k in ("midline", "gas")}
    for k, v in flags.items():
        if not isinstance(v, bool):
            problems.add(where, f"{k} must be true or false, got {v!r}")
            return None
    tissue = raw.get("tissue", "")
    if layer == "soft" and not (isinstance(tissue, str) and tissue):
        problems.add(where, f"tissue must name a key of config synthetic.hu, got {tissue!r}")
        return None
    at = f"{where}, {shape}"
    if shape == "ellipsoid":
        rows = _ellipsoid(raw[shape], at, problems)
    elif shape == "tube":
        rows = _tube(raw[shape], at, problems, paths)
    elif shape == "arc":
        rows = _arc(raw[shape], at, problems)
    else:
        rows = _rows(raw[shape], at, problems, shape)
    if rows is None:
        return None
    u = [r[0] for r in rows]
    if len(rows) < 2 or len(set(u)) != len(u):
        problems.add(at, f"needs keyframes at two or more different heights u, got u = {u}")
        return None
    if kind == "band" and len({len(r) for r in rows}) != 1:
        problems.add(at, "every row of a band needs the same number of points")
        return None
    keys = tuple(tuple(float(v) if isinstance(v, np.floating) else v for v in r) for r in rows)
    return Track(
        name,
        layer,
        kind,
        keys,
        not flags["midline"],
        frame,
        tissue if layer == "soft" else "",
        flags["gas"],
    )


def _pairs(value, where, problems, ascending=True) -> tuple | None:
    """Rows [u, value] with u increasing."""
    if not isinstance(value, list) or not value:
        problems.add(where, f"expected a list of [u, value] rows, got {value!r}")
        return None
    rows = [_numbers(r, f"{where} row {i}", problems, n=2) for i, r in enumerate(value, 1)]
    if any(r is None for r in rows):
        return None
    if ascending and any(b[0] <= a[0] for a, b in zip(rows, rows[1:], strict=False)):
        problems.add(where, "u must increase from row to row")
        return None
    return tuple(tuple(r) for r in rows)


def _landmarks(raw, problems) -> dict | None:
    spec = _mapping(raw, "landmarks", problems, _LANDMARKS)
    if spec is None:
        return None
    out = {}
    for k in _LANDMARKS[:-1]:
        if not _is_number(spec[k]):
            problems.add(f"landmarks.{k}", f"expected a number, got {spec[k]!r}")
        else:
            out[k] = spec[k]
    out["femur_shaft"] = _pairs(spec["femur_shaft"], "landmarks.femur_shaft", problems)
    if len(out) != len(_LANDMARKS) or out["femur_shaft"] is None:
        return None
    if not 0 < out["u_top"] < out["u_hip"]:
        problems.add("landmarks", "need 0 < u_top (neck) < u_hip (femoral head)")
    if not 0 < out["u_pose_full"] < out["u_hip"] - 0.1:
        problems.add("landmarks", "need 0 < u_pose_full < u_hip - 0.1 (the pose fades in between)")
    if not (out["leg_length_mm"] > 0 and out["leg_length_at_height_cm"] > 0):
        problems.add("landmarks", "leg_length_mm and leg_length_at_height_cm must be > 0")
    return out


def _fat(raw, problems) -> dict | None:
    spec = _mapping(raw, "subcutaneous_fat", problems, ("leg", "trunk", "along_leg"))
    if spec is None:
        return None
    what = "factors (lateral, medial, anterior, posterior)"
    leg = _numbers(spec["leg"], "subcutaneous_fat.leg", problems, n=4, what=what)
    trunk = _numbers(spec["trunk"], "subcutaneous_fat.trunk", problems, n=4, what=what)
    along = _pairs(spec["along_leg"], "subcutaneous_fat.along_leg", problems)
    if leg is None or trunk is None or along is None:
        return None
    return {"fat_leg": tuple(leg), "fat_trunk": tuple(trunk), "fat_along_leg": along}


def _paths(raw, problems) -> dict:
    if not isinstance(raw, dict):
        problems.add("paths", f"expected a mapping of name -> [u, x, y] rows, got {raw!r}")
        return {}
    out = {}
    for name, rows in raw.items():
        where = f"paths.{name}"
        if not isinstance(rows, list) or len(rows) < 2:
            problems.add(where, "expected two or more [u, x, y] rows")
            continue
        checked = [_numbers(r, f"{where} row {i}", problems, n=3) for i, r in enumerate(rows, 1)]
        if all(r is not None for r in checked):
            out[name] = [tuple(r) for r in checked]
    return out


def parse_anatomy(data, path: str | Path = "<anatomy>") -> Anatomy:
    """Check parsed anatomy data (a dict, as in anatomy.yaml) and build the Anatomy.

    Raises a ThighctError listing every problem, each with its entry, naming ``path``.
    """
    problems = _Problems(Path(path))
    top = _mapping(data, "the file", problems, ("landmarks", "subcutaneous_fat", "paths", "tracks"))
    problems.raise_if_any()
    landmarks = _landmarks(top["landmarks"], problems)
    fat = _fat(top["subcutaneous_fat"], problems)
    paths = _paths(top["paths"], problems)
    tracks: list[Track] = []
    layers = top["tracks"]
    if not isinstance(layers, dict):
        problems.add("tracks", f"expected a mapping of layer -> tracks, got {layers!r}")
        layers = {}
    for layer in layers:
        if layer not in LAYERS:
            problems.add(f"tracks.{layer}", f"unknown layer (layers: {', '.join(LAYERS)})")
    for layer in LAYERS:
        entries = layers.get(layer) or []
        if not isinstance(entries, list):
            problems.add(f"tracks.{layer}", "expected a list of tracks")
            continue
        for i, raw in enumerate(entries):
            track = _track(raw, layer, f"tracks.{layer}[{i}]", problems, paths)
            if track is not None:
                tracks.append(track)
    if not any(t.layer == "muscle" for t in tracks):
        problems.add("tracks.muscle", "the phantom needs at least one muscle")
    problems.raise_if_any()
    length_per_height = landmarks.pop("leg_length_mm") / landmarks.pop("leg_length_at_height_cm")
    return Anatomy(
        tracks=tuple(tracks),
        length_per_height=length_per_height,
        path=str(path),
        **landmarks,
        **fat,
    )


def load_anatomy(path: str | Path = ANATOMY_FILE) -> Anatomy:
    """Read and check an anatomy file (YAML; default: the one shipped with thighct)."""
    path = Path(path)
    try:
        with path.open() as fh:  # a stream, so YAML's errors name the file
            data = yaml.load(fh, Loader=_LOADER)
    except OSError as err:
        raise ThighctError(
            f"cannot read the phantom anatomy: {err}",
            path=path,
            fix="restore the file (it ships with the thighct package)",
        ) from err
    except yaml.YAMLError as err:
        raise ThighctError(
            f"the phantom anatomy is not valid YAML: {err}",
            path=path,
            fix="correct the YAML at the line and column named above",
        ) from err
    return parse_anatomy(data, path)


# The shipped anatomy, and its values under the names the generator uses.
ANATOMY = load_anatomy()
ATLAS: tuple[Track, ...] = ANATOMY.tracks
MUSCLE_NAMES: tuple[str, ...] = ANATOMY.muscle_names
U_HIP = ANATOMY.u_hip  # centre of the femoral head
U_TOP = ANATOMY.u_top  # top of the femoral shaft (base of the neck)
U_POSE_FULL = ANATOMY.u_pose_full  # below: the whole leg pose applies; none above U_HIP
FEMUR_KNEE_X, FEMUR_TOP_X, FEMUR_Y = ANATOMY.femur_knee_x, ANATOMY.femur_top_x, ANATOMY.femur_y
LENGTH_PER_HEIGHT = ANATOMY.length_per_height  # mm of knee -> iliac crest per cm of height
FAT_PATTERN_LEG, FAT_PATTERN_TRUNK = ANATOMY.fat_leg, ANATOMY.fat_trunk
FAT_ALONG_LEG = ANATOMY.fat_along_leg
FEMUR_SHAFT = ANATOMY.femur_shaft


def femur_axis(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference femoral shaft axis (X lateral, Y anterior; mm) at height fraction ``u``."""
    u = np.asarray(u, dtype=float)
    x = FEMUR_KNEE_X + (FEMUR_TOP_X - FEMUR_KNEE_X) * np.clip(u, 0.0, U_TOP) / U_TOP
    return x, np.full_like(x, FEMUR_Y)
