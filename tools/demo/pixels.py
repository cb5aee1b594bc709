"""Pixel and waveform synthesis for the demo dataset: phantoms that look like what they are.

Everything here is a pure function of its arguments (numpy's seeded generators, no global state), so
the generator stays deterministic: the same arguments give the same bytes.

Cross-sectional and projection images come from one analytic *human* phantom, in DICOM patient
coordinates (LPS, millimetres: +x towards the patient's left, +y posterior, +z towards the head, the
soles of the feet at z = 0). It is a list of shapes (ellipsoids and elliptic cylinders along an axis),
each of one tissue class; a later shape overrides an earlier one where they overlap. A CT or MR slice
samples the tissue classes on a plane and maps them to Hounsfield units or to an MR weighting; a
radiograph or a nuclear medicine view integrates a tissue property along an axis through the shapes
(chord lengths are analytic). The photographic modalities (endoscopy, photographs, fundus,
dermoscopy, whole-slide histology, ultrasound) are procedural colour images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

U8 = NDArray[Any]  # uint8 arrays
F32 = NDArray[Any]  # float arrays (float32 or float64)

# --------------------------------------------------------------------------- tissues

TISSUES = (
    "air",
    "lung",
    "fat",
    "soft",
    "muscle",
    "blood",
    "liver",
    "spleen",
    "kidney",
    "cortex",
    "marrow",
    "csf",
    "grey",
    "white",
    "cartilage",
    "tendon",
    "fluid",
    "gas",
    "prostate",
    "tumour",
    "myocardium",
    "vitreous",
)
_T = {name: i for i, name in enumerate(TISSUES)}

# name: (HU without contrast, HU portal venous, T1w, T2w, PDw, bone-scan uptake, FDG uptake)
_PROPERTIES: dict[str, tuple[float, float, float, float, float, float, float]] = {
    "air": (-1000, -1000, 0.0, 0.0, 0.0, 0.0, 0.0),
    "lung": (-860, -850, 0.03, 0.03, 0.06, 0.01, 0.03),
    "fat": (-100, -100, 0.95, 0.7, 0.85, 0.02, 0.03),
    "soft": (35, 60, 0.45, 0.35, 0.5, 0.05, 0.1),
    "muscle": (50, 60, 0.35, 0.22, 0.4, 0.05, 0.12),
    "blood": (40, 170, 0.12, 0.1, 0.12, 0.08, 0.2),
    "liver": (60, 115, 0.55, 0.22, 0.45, 0.04, 0.3),
    "spleen": (50, 120, 0.42, 0.5, 0.55, 0.04, 0.25),
    "kidney": (35, 190, 0.4, 0.55, 0.55, 0.12, 0.6),
    "cortex": (1100, 1100, 0.03, 0.03, 0.06, 1.0, 0.05),
    "marrow": (260, 270, 0.75, 0.5, 0.7, 1.0, 0.2),
    "csf": (5, 8, 0.12, 1.0, 0.85, 0.02, 0.02),
    "grey": (40, 42, 0.45, 0.62, 0.72, 0.03, 1.0),
    "white": (27, 28, 0.62, 0.42, 0.6, 0.03, 0.45),
    "cartilage": (110, 110, 0.4, 0.45, 0.68, 0.1, 0.05),
    "tendon": (90, 90, 0.03, 0.02, 0.05, 0.05, 0.03),
    "fluid": (8, 10, 0.12, 0.95, 0.82, 0.35, 2.5),
    "gas": (-1000, -1000, 0.0, 0.0, 0.0, 0.0, 0.0),
    "prostate": (38, 70, 0.42, 0.7, 0.6, 0.05, 0.2),
    "tumour": (38, 90, 0.42, 0.75, 0.6, 0.2, 4.0),
    "myocardium": (45, 110, 0.4, 0.3, 0.45, 0.05, 0.9),
    "vitreous": (8, 8, 0.1, 0.98, 0.85, 0.0, 0.0),
}


def _column(index: int) -> F32:
    return np.array([_PROPERTIES[name][index] for name in TISSUES], dtype=np.float32)


HU_PLAIN, HU_CONTRAST = _column(0), _column(1)
MR_WEIGHTINGS: dict[str, F32] = {"T1": _column(2), "T2": _column(3), "PD": _column(4)}
BONE_UPTAKE, FDG_UPTAKE = _column(5), _column(6)
# Blood-pool activity in the first minute after injection (the flow phase of a bone scan).
VASCULAR = np.array(
    [
        {"blood": 1.0, "kidney": 0.9, "spleen": 0.5, "liver": 0.4, "myocardium": 0.6, "muscle": 0.15, "soft": 0.12}.get(
            t, 0.04
        )
        for t in TISSUES
    ],
    dtype=np.float32,
)
# Linear attenuation at ~60 keV, per mm, derived from HU (water 0.0206/mm).
MU = np.clip((HU_PLAIN + 1000.0) / 1000.0 * 0.0206, 0.0, None).astype(np.float32)


TABLES: dict[str, F32] = {"mu": MU, "bone": BONE_UPTAKE, "vascular": VASCULAR}


def mr_weighting(kind: str) -> F32:
    """Relative signal per tissue for an MR contrast: T1, T2, PD, PDFS, FLAIR, DWI or DCE."""
    if kind in MR_WEIGHTINGS:
        return MR_WEIGHTINGS[kind]
    table = MR_WEIGHTINGS["T2" if kind in ("FLAIR", "DWI") else "PD" if kind == "PDFS" else "T1"].copy()
    if kind == "PDFS":  # fat suppressed: fat and fatty marrow go dark, fluid stands out
        table[[_T["fat"], _T["marrow"]]] = [0.08, 0.18]
        table[_T["fluid"]] = 1.0
    elif kind == "FLAIR":  # free water nulled
        table[[_T["csf"], _T["vitreous"], _T["fluid"]]] = 0.04
        table[_T["white"]], table[_T["grey"]] = 0.45, 0.6
    elif kind == "DWI":  # restricted diffusion bright, free water dark
        table *= 0.5
        table[[_T["csf"], _T["vitreous"], _T["fluid"]]] = 0.05
        table[_T["tumour"]] = 0.95
        table[_T["prostate"]] = 0.35
    elif kind == "DCE":  # T1 after gadolinium
        table[[_T["blood"], _T["kidney"], _T["tumour"]]] = [0.9, 0.85, 0.9]
        table[_T["prostate"]] = 0.6
    return table


# --------------------------------------------------------------------------- phantom


@dataclass(frozen=True)
class Shape:
    """An ellipsoid (axis None) or an elliptic cylinder along axis 0, 1 or 2, of one tissue."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    tissue: int
    axis: int | None = None

    def contains(self, point: tuple[float, float, float]) -> bool:
        q = [((point[a] - self.center[a]) / self.radii[a]) ** 2 for a in range(3)]
        if self.axis is None:
            return sum(q) <= 1.0
        return q[self.axis] <= 1.0 and sum(q) - q[self.axis] <= 1.0


def _e(c: tuple[float, float, float], r: tuple[float, float, float], tissue: str) -> Shape:
    return Shape(c, r, _T[tissue])


def _cyl(c: tuple[float, float, float], r: tuple[float, float, float], tissue: str, axis: int = 2) -> Shape:
    return Shape(c, r, _T[tissue], axis)


def _bone(
    c: tuple[float, float, float], r: tuple[float, float, float], shell: float, axis: int | None = None
) -> list[Shape]:
    """Cortical bone with marrow inside."""
    inner = tuple(max(x - shell, 1.0) for x in r)
    make = _e if axis is None else (lambda c_, r_, t: _cyl(c_, r_, t, axis))
    outer_r = (r[0], r[1], r[2])
    inner_r = (inner[0], inner[1], inner[2])
    return [make(c, outer_r, "cortex"), make(c, inner_r, "marrow")]


def _head() -> list[Shape]:
    z = 1600.0
    shapes = [
        _cyl((0, 10, 1486), (55, 55, 50), "muscle"),  # neck
        _e((0, 0, z), (78, 98, 112), "soft"),
        _e((0, 0, z + 4), (74, 94, 106), "cortex"),
        _e((0, 0, z + 4), (70, 90, 102), "marrow"),
        _e((0, 0, z + 4), (67, 87, 99), "csf"),
        _e((0, 0, z + 6), (65, 85, 95), "grey"),
        _e((-28, 0, z + 12), (27, 66, 58), "white"),
        _e((28, 0, z + 12), (27, 66, 58), "white"),
        _e((-10, -4, z + 18), (6, 30, 13), "csf"),  # lateral ventricles
        _e((10, -4, z + 18), (6, 30, 13), "csf"),
        _e((0, 2, z - 2), (2.5, 14, 9), "csf"),  # third ventricle
        _e((0, 15, z - 76), (55, 70, 9), "marrow"),  # skull base
        _e((0, 58, z - 62), (52, 32, 26), "grey"),  # cerebellum
        _e((0, 60, z - 60), (25, 16, 14), "white"),
        _cyl((0, 28, z - 70), (12, 14, 40), "white"),  # brainstem
        _e((0, -75, z - 48), (10, 18, 14), "gas"),  # nasal cavity
        _e((-26, -62, z - 62), (14, 16, 14), "gas"),  # maxillary sinuses
        _e((26, -62, z - 62), (14, 16, 14), "gas"),
        _e((-32, -74, z - 28), (16, 16, 14), "fat"),  # orbits
        _e((32, -74, z - 28), (16, 16, 14), "fat"),
        _e((-32, -80, z - 28), (11, 11, 11), "vitreous"),
        _e((32, -80, z - 28), (11, 11, 11), "vitreous"),
        _cyl((0, -38, 1486), (8, 8, 50), "gas"),  # trachea
    ]
    shapes += [s for v in range(7) for s in _bone((0, 32, 1430 + 16 * v), (10, 9, 6), 2.0)]  # cervical spine
    return shapes


def _torso(sex: str, lesion: bool) -> list[Shape]:
    shapes = [
        _cyl((0, 0, 1135), (172, 118, 300), "fat"),
        _cyl((0, 0, 1135), (158, 104, 292), "muscle"),
        _cyl((0, 2, 1135), (146, 92, 290), "soft"),
        _cyl((0, 0, 1135), (138, 84, 280), "fat"),  # visceral fat, then the organs
    ]
    for side in (-1, 1):  # arms by the side
        shapes += [
            _cyl((side * 218, 0, 1235), (42, 46, 175), "fat"),
            _cyl((side * 218, 0, 1235), (36, 40, 170), "muscle"),
        ]
        shapes += _bone((side * 218, 2, 1260), (13, 13, 150), 4.0, axis=2)
    shapes += [
        _e((-76, 12, 1288), (64, 80, 126), "lung"),
        _e((76, 12, 1288), (60, 80, 126), "lung"),
        _e((0, -10, 1300), (26, 40, 110), "fat"),  # mediastinum
        _e((22, -18, 1215), (64, 54, 62), "myocardium"),  # heart
        _e((30, -20, 1215), (42, 36, 44), "blood"),
        _cyl((14, 32, 1150), (13, 13, 175), "blood"),  # descending aorta
        _e((0, 6, 1325), (30, 16, 14), "blood"),  # arch
        _cyl((0, -30, 1360), (9, 9, 70), "gas"),  # trachea
        _e((-30, 10, 1300), (6, 6, 20), "gas"),  # main bronchi
        _e((30, 10, 1300), (6, 6, 20), "gas"),
        _e((-62, 4, 1085), (88, 76, 82), "liver"),
        _e((-58, 10, 1070), (10, 10, 40), "blood"),  # portal vein
        _e((-40, -25, 1060), (16, 14, 20), "fluid"),  # gallbladder
        _e((98, 48, 1100), (34, 38, 48), "spleen"),
        _e((58, -40, 1110), (48, 34, 44), "soft"),  # stomach
        _e((58, -58, 1130), (28, 12, 14), "gas"),
        _e((0, 10, 1050), (48, 14, 12), "soft"),  # pancreas
    ]
    for side in (-1, 1):
        shapes += [
            _e((side * 72, 52, 1010), (30, 26, 52), "kidney"),
            _e((side * 64, 50, 1010), (10, 9, 18), "fat"),  # renal sinus
            _cyl((side * 45, 40, 930), (5, 5, 60), "muscle"),  # psoas (simplified)
        ]
    rng = np.random.default_rng(7)
    for _ in range(14):  # bowel loops, some with gas
        c = (float(rng.uniform(-100, 100)), float(rng.uniform(-60, 20)), float(rng.uniform(890, 1000)))
        shapes.append(_e(c, (22, 18, 20), "soft"))
        if rng.random() < 0.5:
            shapes.append(_e((c[0], c[1] - 8, c[2]), (10, 7, 9), "gas"))
    shapes += [
        _e((0, -40, 885), (46, 36, 34), "fluid"),  # bladder
        _e((0, 38, 870), (16, 16, 40), "soft"),  # rectum
        _e((0, 36, 880), (7, 7, 12), "gas"),
    ]
    if sex == "M":
        shapes += [_e((0, -14, 845), (20, 17, 18), "prostate"), _e((0, -16, 845), (9, 8, 10), "soft")]
    else:
        shapes.append(_e((0, -5, 900), (30, 22, 30), "muscle"))  # uterus
    # Skeleton: spine, ribs, pelvis, femora.
    for v in range(22):
        zv = 860.0 + 27 * v
        shapes += _bone((0, 62, zv), (22, 18, 10), 3.0)
        shapes += _bone((0, 96, zv), (6, 14, 7), 2.5)  # spinous process
    shapes.append(_cyl((0, 80, 1150), (8, 7, 300), "csf"))  # spinal canal
    for level in range(10):
        z0 = 1170 + 24 * level
        for side in (-1, 1):
            for step in range(11):
                a = math.radians(-70 + 15 * step)  # from beside the spine, round the side, to the front
                x = side * (150 if level > 2 else 115 + 12 * level) * math.cos(a * 0.9)
                y = 85 * math.sin(-a) + 10
                z = z0 - 40 * step / 10
                shapes += _bone((x, y, z), (9, 9, 6), 2.0)
    shapes += _bone((0, -88, 1280), (16, 8, 110), 2.5)  # sternum
    for side in (-1, 1):
        shapes += _bone((side * 90, -20, 1440), (70, 8, 8), 2.5, axis=0)  # clavicles
        shapes += _bone((side * 100, 45, 960), (22, 55, 55), 3.0)  # iliac wings
        shapes += _bone((side * 92, 5, 880), (24, 24, 24), 3.0)  # femoral heads
        shapes += _bone((side * 104, 5, 855), (12, 12, 35), 3.0)  # necks
    shapes += _bone((0, 82, 915), (36, 18, 50), 3.0)  # sacrum
    if lesion:  # a lung mass and a node: what the PET-CT and CT of the oncology patient show
        shapes += [_e((-70, 20, 1305), (14, 13, 14), "tumour"), _e((-40, 0, 1250), (8, 8, 8), "tumour")]
    return shapes


def _legs() -> list[Shape]:
    shapes: list[Shape] = []
    for side in (-1, 1):
        x = side * 100.0
        shapes += [
            _cyl((x, 0, 690), (78, 80, 170), "fat"),  # thigh
            _cyl((x, 0, 690), (68, 70, 165), "muscle"),
            _cyl((x, 5, 270), (58, 62, 200), "fat"),  # lower leg
            _cyl((x, 5, 270), (48, 52, 195), "muscle"),
            _e((x, 0, 480), (60, 62, 48), "fat"),  # knee
            _e((x, -8, 515), (26, 14, 40), "fluid"),  # suprapatellar recess
        ]
        shapes += _bone((x, 4, 660), (15, 15, 170), 5.0, axis=2)  # femur
        shapes += [_e((x, 6, 500), (41, 33, 33), "cartilage")]
        shapes += _bone((x, 6, 500), (38, 30, 30), 3.0)  # femoral condyles
        shapes += [_e((x, 6, 437), (39, 31, 31), "cartilage")]
        shapes += _bone((x, 6, 436), (36, 29, 30), 3.0)  # tibial plateau
        shapes += _bone((x, -4, 260), (14, 14, 175), 5.0, axis=2)  # tibia
        shapes += _bone((x + side * 28, 14, 270), (7, 7, 170), 2.5, axis=2)  # fibula
        shapes += _bone((x, -46, 505), (22, 9, 24), 2.5)  # patella
        shapes += [
            _e((x, -46, 455), (11, 4, 34), "tendon"),  # patellar tendon
            _e((x, 12, 468), (5, 5, 16), "tendon"),  # cruciate ligaments
            _cyl((x, 40, 470), (5, 5, 120), "blood"),  # popliteal vessels
        ]
        shapes += _bone((x, -20, 40), (30, 80, 22), 3.0)  # foot
    return shapes


@lru_cache(maxsize=8)
def human(sex: str = "M", habitus: float = 1.0, lesion: bool = False) -> tuple[Shape, ...]:
    """The whole phantom; `habitus` scales its width and depth (x, y) about the body's axis."""
    shapes = _legs() + _torso(sex, lesion) + _head()
    if habitus == 1.0:
        return tuple(shapes)
    return tuple(
        Shape(
            (s.center[0] * habitus, s.center[1] * habitus, s.center[2]),
            (s.radii[0] * habitus, s.radii[1] * habitus, s.radii[2]),
            s.tissue,
            s.axis,
        )
        for s in shapes
    )


@lru_cache(maxsize=8)
def _parents(shapes: tuple[Shape, ...]) -> tuple[int, ...]:
    """The tissue each shape replaces (what is at its centre before it is drawn)."""
    centers = np.array([s.center for s in shapes], dtype=np.float64)
    radii = np.array([s.radii for s in shapes], dtype=np.float64)
    axes = np.array([-1 if s.axis is None else s.axis for s in shapes])
    q = ((centers[:, None, :] - centers[None, :, :]) / radii[None, :, :]) ** 2  # [point i, shape j, axis]
    along = np.take_along_axis(q, np.clip(axes, 0, 2)[None, :, None].repeat(len(shapes), 0), axis=2)[..., 0]
    total = q.sum(axis=2)
    inside = np.where(axes[None, :] < 0, total <= 1.0, (along <= 1.0) & (total - along <= 1.0))
    inside &= np.tri(len(shapes), k=-1, dtype=bool)  # only shapes drawn before
    tissues = np.array([s.tissue for s in shapes])
    last = np.where(inside.any(axis=1), len(shapes) - 1 - np.argmax(inside[:, ::-1], axis=1), -1)
    return tuple(int(tissues[j]) if j >= 0 else _T["air"] for j in last)


# --------------------------------------------------------------------------- planes


@dataclass(frozen=True)
class Plane:
    """A rectangular grid in patient space along two patient axes: the image's rows run along
    `row_axis` (columns increase in that direction with `row_sign`), its columns along `col_axis`."""

    origin: tuple[float, float, float]  # centre of the first pixel (ImagePositionPatient)
    row_axis: int
    row_sign: int
    col_axis: int
    col_sign: int
    spacing: float
    rows: int
    cols: int

    @property
    def normal_axis(self) -> int:
        return 3 - self.row_axis - self.col_axis

    def orientation(self) -> list[float]:
        row = [0.0, 0.0, 0.0]
        col = [0.0, 0.0, 0.0]
        row[self.row_axis] = float(self.row_sign)
        col[self.col_axis] = float(self.col_sign)
        return row + col

    def axes(self) -> tuple[NDArray[Any], NDArray[Any]]:
        """Patient coordinate along the row axis per column, along the column axis per row."""
        u = self.origin[self.row_axis] + self.row_sign * self.spacing * np.arange(self.cols)
        v = self.origin[self.col_axis] + self.col_sign * self.spacing * np.arange(self.rows)
        return u, v


VIEWS = {  # (row axis, sign, column axis, sign): the usual radiological display
    "axial": (0, 1, 1, 1),
    "coronal": (0, 1, 2, -1),
    "sagittal": (1, 1, 2, -1),
}


def plane(view: str, center: tuple[float, float, float], fov: tuple[float, float], size: tuple[int, int]) -> Plane:
    """A `view` plane through `center` covering `fov` (width, height in mm) with `size` (rows, cols)."""
    row_axis, row_sign, col_axis, col_sign = VIEWS[view]
    rows, cols = size
    spacing = max(fov[0] / cols, fov[1] / rows)
    origin = list(center)
    origin[row_axis] = center[row_axis] - row_sign * spacing * (cols - 1) / 2
    origin[col_axis] = center[col_axis] - col_sign * spacing * (rows - 1) / 2
    return Plane((origin[0], origin[1], origin[2]), row_axis, row_sign, col_axis, col_sign, spacing, rows, cols)


def _span(start: float, step: float, count: int, center: float, radius: float) -> slice | None:
    """The indices i of start + i * step (step may be negative) within center +- radius."""
    a, b = (center - radius - start) / step, (center + radius - start) / step
    first, last = max(math.ceil(min(a, b)), 0), min(math.floor(max(a, b)), count - 1)
    return slice(first, last + 1) if first <= last else None


@lru_cache(maxsize=64)
def tissue_slice(shapes: tuple[Shape, ...], grid: Plane) -> U8:
    """The tissue class of every pixel of a plane (uint8 indices into TISSUES)."""
    labels = np.zeros((grid.rows, grid.cols), dtype=np.uint8)
    u, v = grid.axes()
    fixed, ra, ca = grid.normal_axis, grid.row_axis, grid.col_axis
    w = grid.origin[fixed]
    u0, du, v0, dv = grid.origin[ra], grid.row_sign * grid.spacing, grid.origin[ca], grid.col_sign * grid.spacing
    for shape in shapes:
        qf = ((w - shape.center[fixed]) / shape.radii[fixed]) ** 2
        if qf > 1.0:
            continue
        cs = _span(u0, du, grid.cols, shape.center[ra], shape.radii[ra])
        rs = _span(v0, dv, grid.rows, shape.center[ca], shape.radii[ca])
        if cs is None or rs is None:
            continue
        group = [a for a in range(3) if a != shape.axis]
        limit = 1.0 - (qf if fixed in group else 0.0)
        qc = ((u[cs] - shape.center[ra]) / shape.radii[ra]) ** 2 if ra in group else np.zeros(cs.stop - cs.start)
        qr = ((v[rs] - shape.center[ca]) / shape.radii[ca]) ** 2 if ca in group else np.zeros(rs.stop - rs.start)
        mask = (qr[:, None] + qc[None, :]) <= limit
        labels[rs, cs][mask] = shape.tissue
    labels.setflags(write=False)
    return labels


@lru_cache(maxsize=32)
def projection(
    shapes: tuple[Shape, ...], grid: Plane, table: str, slab: tuple[float, float] = (-1e4, 1e4)
) -> NDArray[Any]:
    """The line integral of a tissue property (a name in TABLES) along the plane's normal, through
    the slab only. Cached: the result is read-only."""
    values = TABLES[table]
    out = np.zeros((grid.rows, grid.cols), dtype=np.float64)
    u, v = grid.axes()
    p, ra, ca = grid.normal_axis, grid.row_axis, grid.col_axis
    lo, hi = slab
    parents = _parents(shapes)
    u0, du, v0, dv = grid.origin[ra], grid.row_sign * grid.spacing, grid.origin[ca], grid.col_sign * grid.spacing
    for shape, parent in zip(shapes, parents, strict=True):
        delta = float(values[shape.tissue] - values[parent])
        if delta == 0.0 or shape.center[p] + shape.radii[p] < lo or shape.center[p] - shape.radii[p] > hi:
            continue
        cs = _span(u0, du, grid.cols, shape.center[ra], shape.radii[ra])
        rs = _span(v0, dv, grid.rows, shape.center[ca], shape.radii[ca])
        if cs is None or rs is None:
            continue
        group = [a for a in range(3) if a != shape.axis]
        qc = ((u[cs] - shape.center[ra]) / shape.radii[ra]) ** 2 if ra in group else np.zeros(cs.stop - cs.start)
        qr = ((v[rs] - shape.center[ca]) / shape.radii[ca]) ** 2 if ca in group else np.zeros(rs.stop - rs.start)
        s = 1.0 - (qr[:, None] + qc[None, :])
        half = shape.radii[p] * np.sqrt(np.clip(s, 0.0, None)) if p in group else np.where(s >= 0, shape.radii[p], 0.0)
        length = np.clip(np.minimum(hi, shape.center[p] + half) - np.maximum(lo, shape.center[p] - half), 0.0, None)
        out[rs, cs] += delta * np.where(s >= 0, length, 0.0)
    out.setflags(write=False)
    return out


# --------------------------------------------------------------------------- helpers


def smooth(image: NDArray[Any], passes: int = 1) -> NDArray[Any]:
    """A binomial (1 2 1) blur, `passes` times: partial volume, a focal spot, optics."""
    out: F32 = image.astype(np.float32)
    for _ in range(passes):
        padded = np.pad(out, 1, mode="edge")
        out = (padded[:-2, 1:-1] + 2 * padded[1:-1, 1:-1] + padded[2:, 1:-1]) / 4
        padded = np.pad(out, 1, mode="edge")
        out = (padded[1:-1, :-2] + 2 * padded[1:-1, 1:-1] + padded[1:-1, 2:]) / 4
    return out


def _noise_field(rng: np.random.Generator, rows: int, cols: int, scale: int) -> F32:
    """Smooth random variation (about -1..1) with features about `scale` pixels across: a coarse
    random grid, interpolated bilinearly (two small matrix products) and blurred."""
    coarse = rng.standard_normal((rows // scale + 2, cols // scale + 2)).astype(np.float32)

    def weights(n: int, m: int) -> F32:
        position = np.arange(n, dtype=np.float32)[:, None] / scale
        return np.clip(1.0 - np.abs(position - np.arange(m, dtype=np.float32)[None, :]), 0.0, None)

    return smooth(weights(rows, coarse.shape[0]) @ coarse @ weights(cols, coarse.shape[1]).T, 1)


def _grid(rows: int, cols: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """Normalised coordinates: y in -1..1 down the rows, x in -aspect..aspect across."""
    y = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
    x = (np.linspace(-1.0, 1.0, cols, dtype=np.float32) * (cols / rows))[None, :]
    return np.broadcast_to(y, (rows, cols)), np.broadcast_to(x, (rows, cols))


def _u8(image: NDArray[Any]) -> U8:
    out: NDArray[Any] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return out


def _rgb(r: NDArray[Any], g: NDArray[Any], b: NDArray[Any]) -> U8:
    return np.stack([_u8(r), _u8(g), _u8(b)], axis=-1)


# --------------------------------------------------------------------------- grey-scale modalities


def ct_image(shapes: tuple[Shape, ...], grid: Plane, *, contrast: bool, sharp: bool, seed: int) -> NDArray[Any]:
    """Stored values (HU + 1024, 12 bits) of a CT slice: tissue HU, partial volume, quantum noise."""
    labels = tissue_slice(shapes, grid)
    hu = (HU_CONTRAST if contrast else HU_PLAIN)[labels]
    hu = smooth(hu, 1)
    rng = np.random.default_rng(seed)
    hu += smooth(rng.normal(0.0, 24.0 if sharp else 12.0, hu.shape).astype(np.float32), 1)
    return np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16)


def ct_localizer(shapes: tuple[Shape, ...], grid: Plane, *, seed: int) -> NDArray[Any]:
    """A CT scout: an AP projection shown like a radiograph, 12 bits."""
    return radiograph(shapes, grid, seed=seed)


def mr_image(shapes: tuple[Shape, ...], grid: Plane, weighting: str, *, seed: int) -> NDArray[Any]:
    """A magnitude MR image, 12 bits: tissue signal, coil shading, Rician-looking noise."""
    labels = tissue_slice(shapes, grid)
    signal = mr_weighting(weighting)[labels] * 2600.0
    signal = smooth(signal, 1)
    rng = np.random.default_rng(seed)
    y, x = _grid(grid.rows, grid.cols)
    signal *= 1.0 - 0.18 * (x * x + y * y)  # receive-coil falloff
    signal *= 1.0 + 0.06 * _noise_field(rng, grid.rows, grid.cols, 24)
    noisy = np.hypot(signal + rng.normal(0.0, 28.0, signal.shape), rng.normal(0.0, 28.0, signal.shape))
    return np.clip(np.rint(noisy), 0, 4095).astype(np.uint16)


def pet_image(shapes: tuple[Shape, ...], grid: Plane, *, seed: int) -> NDArray[Any]:
    """An FDG PET slice (stored counts, 16 bits; RescaleSlope turns them into Bq/ml)."""
    labels = tissue_slice(shapes, grid)
    activity = smooth(FDG_UPTAKE[labels] * 9000.0, 3)
    rng = np.random.default_rng(seed)
    noisy = rng.poisson(np.clip(activity, 0, None) / 20.0).astype(np.float32) * 20.0
    out: NDArray[Any] = np.clip(np.rint(smooth(noisy, 2)), 0, 65535).astype(np.uint16)
    return out


def radiograph(
    shapes: tuple[Shape, ...], grid: Plane, *, seed: int, slab: tuple[float, float] = (-1e4, 1e4)
) -> NDArray[Any]:
    """A projection radiograph for presentation (MONOCHROME2: bone white), 12 bits."""
    path = np.clip(projection(shapes, grid, "mu", slab), 0.0, None)
    image = 250.0 + 3300.0 * (path / 9.0) ** 0.85
    rng = np.random.default_rng(seed)
    image = smooth(image, 1) + rng.normal(0.0, 18.0, image.shape)
    out: NDArray[Any] = np.clip(np.rint(image), 0, 4095).astype(np.uint16)
    return out


def nm_view(shapes: tuple[Shape, ...], grid: Plane, uptake: str, *, counts: float, seed: int) -> NDArray[Any]:
    """A planar scintigram: tracer uptake (a name in TABLES) along the view, blurred, Poisson counts."""
    activity = projection(shapes, grid, uptake)
    activity = smooth(activity, 2)
    peak = float(np.percentile(activity, 99.7)) or 1.0
    rng = np.random.default_rng(seed)
    out: NDArray[Any] = np.clip(rng.poisson(np.clip(activity, 0, None) / peak * counts), 0, 65535).astype(np.uint16)
    return out


def mammogram(rows: int, cols: int, *, chest_wall_left: bool, seed: int) -> NDArray[Any]:
    """A breast: fatty background, fibroglandular texture towards the chest wall, skin line, 12 bits."""
    rng = np.random.default_rng(seed)
    y, x = _grid(rows, cols)
    aspect = cols / rows
    d = (x + aspect) if chest_wall_left else (aspect - x)  # distance from the chest wall
    reach = 0.75 * aspect * 2
    inside = (d / reach) ** 2 + (y / 0.85) ** 2 <= 1.0
    depth = np.clip(1.0 - ((d / reach) ** 2 + (y / 0.85) ** 2), 0.0, 1.0)
    glandular = np.clip(_noise_field(rng, rows, cols, 24) * 0.6 + 0.6 * (1 - d / reach), 0.0, None)
    fine = _noise_field(rng, rows, cols, 4) * 0.08
    image = np.where(inside, 900 + 1400 * np.sqrt(depth) + 900 * glandular * depth + 300 * fine, 60.0)
    image = smooth(image, 1) + rng.normal(0.0, 12.0, image.shape)
    return np.clip(np.rint(image), 0, 4095).astype(np.uint16)


def angiogram(rows: int, cols: int, frames: int, *, right: bool, seed: int) -> U8:
    """Coronary angiography cine: contrast filling the artery tree frame by frame, 8 bits."""
    rng = np.random.default_rng(seed)
    y, x = _grid(rows, cols)
    background = 150 + 25 * _noise_field(rng, rows, cols, 32) - 30 * np.exp(-((x + 0.2) ** 2 + (y - 0.1) ** 2) / 0.3)
    # Each vessel pixel gets its opacity and the fraction of the tree filled when contrast reaches it.
    opacity = np.zeros((rows, cols), dtype=np.float32)
    arrival = np.ones((rows, cols), dtype=np.float32)
    for points, width in _vessel_paths(rng, right):
        reach = max(3, int(4 * width * rows / 2))
        for n, (px, py) in enumerate(points):
            c, r = int((px * rows / cols + 1) / 2 * (cols - 1)), int((py + 1) / 2 * (rows - 1))
            rs, cs = (
                slice(max(r - reach, 0), min(r + reach + 1, rows)),
                slice(max(c - reach, 0), min(c + reach + 1, cols)),
            )
            g = np.exp(-((x[rs, cs] - px) ** 2 + (y[rs, cs] - py) ** 2) / (2 * width * width))
            better = g > opacity[rs, cs]
            opacity[rs, cs] = np.where(better, g, opacity[rs, cs])
            arrival[rs, cs] = np.where(better, n / len(points), arrival[rs, cs])
    out = np.empty((frames, rows, cols), dtype=np.uint8)
    for f in range(frames):
        fill = 0.15 + 1.1 * f / max(frames - 1, 1)
        shown = opacity * np.clip((fill - arrival) * 8, 0.0, 1.0)
        frame = background - 95 * shown + rng.normal(0.0, 4.0, (rows, cols))
        out[f] = _u8(smooth(frame, 1))
    return out


def _vessel_paths(rng: np.random.Generator, right: bool) -> list[tuple[list[tuple[float, float]], float]]:
    t = np.linspace(0.0, 1.0, 120)
    if right:
        trunk = [(float(-0.1 - 0.5 * s + 0.2 * s * s), float(-0.6 + 1.2 * s**1.2)) for s in t]
        branch = [(float(-0.45 + 0.4 * s), float(0.55 + 0.1 * s)) for s in t]
        return [(trunk, 0.025), (branch, 0.015)]
    lad = [(float(0.05 + 0.35 * s), float(-0.55 + 1.2 * s)) for s in t]
    lcx = [(float(0.05 - 0.45 * s), float(-0.55 + 0.7 * s + 0.2 * s * s)) for s in t]
    diag = [(float(0.15 + 0.35 * s), float(-0.25 + 0.45 * s)) for s in t]
    jitter = float(rng.uniform(-0.03, 0.03))
    return [(lad, 0.022 + jitter / 10), (lcx, 0.02), (diag, 0.012)]


def fluoroscopy(rows: int, cols: int, frames: int, *, seed: int) -> U8:
    """A barium swallow: spine and soft tissue of the neck and chest, a bolus going down, 8 bits."""
    rng = np.random.default_rng(seed)
    y, x = _grid(rows, cols)
    base = (
        70
        + 40 * np.exp(-(x**2) / 0.5)
        + 50 * np.exp(-((x - 0.15) ** 2) / 0.01)
        + 10 * _noise_field(rng, rows, cols, 24)
    )
    out = np.empty((frames, rows, cols), dtype=np.uint8)
    for f in range(frames):
        head = -1.0 + 2.2 * (f + 1) / frames
        lumen = np.exp(-((x + 0.05 + 0.04 * np.sin(3 * y)) ** 2) / 0.004)
        bolus = lumen * np.clip((head - y) * 4, 0, 1) * np.clip((y - head + 0.9) * 4, 0, 1)
        frame = base + 130 * bolus + rng.normal(0.0, 3.0, (rows, cols))
        out[f] = _u8(smooth(frame, 1))
    return out


def oct_volume(rows: int, cols: int, frames: int, *, seed: int) -> U8:
    """OCT B-scans through the macula: retinal layers with the foveal pit, speckle, 8 bits."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-1.0, 1.0, cols, dtype=np.float32)[None, :]
    depth = np.arange(rows, dtype=np.float32)[:, None] / rows
    out = np.empty((frames, rows, cols), dtype=np.uint8)
    for f in range(frames):
        offset = (f - (frames - 1) / 2) / max(frames / 2, 1)
        pit = 0.07 * np.exp(-(x * x + offset * offset) / 0.04)
        top = 0.35 + pit + 0.03 * x * x
        layers = np.zeros((rows, cols), dtype=np.float32)
        for start, thick, level in (
            (0.0, 0.02, 200),
            (0.02, 0.05, 120),
            (0.07, 0.04, 70),
            (0.11, 0.05, 150),
            (0.2, 0.03, 230),
            (0.23, 0.06, 160),
        ):
            band = (depth >= top + start * (1 - pit * 5)) & (depth < top + (start + thick) * (1 - pit * 3))
            layers = np.where(band, level, layers)
        choroid = (depth >= top + 0.29) & (depth < top + 0.45)
        layers = np.where(choroid, 90 * np.exp(-(depth - top - 0.29) * 8), layers)
        speckle = rng.rayleigh(0.6, (rows, cols)).astype(np.float32)
        out[f] = _u8(smooth(layers * speckle, 1) + 8)
    return out


# --------------------------------------------------------------------------- colour modalities


def endoscopy(rows: int, cols: int, *, colon: bool, seed: int) -> U8:
    """A video endoscope frame: mucosa round a dark lumen, folds, highlights, the octagonal mask."""
    rng = np.random.default_rng(seed)
    y, x = _grid(rows, cols)
    cx, cy = float(rng.uniform(-0.25, 0.25)), float(rng.uniform(-0.2, 0.2))
    dx, dy = x - cx, y - cy
    r = np.sqrt(dx * dx + dy * dy) + 1e-3
    theta = np.arctan2(dy, dx)
    light = np.clip(r / 1.1, 0.0, 1.0) ** 0.7
    if colon:  # haustral folds: rings round the lumen
        folds = 0.5 + 0.5 * np.sin(14 * np.log(r) + 0.6 * np.sin(3 * theta))
    else:  # gastric rugae: ridges running towards the lumen
        folds = 0.5 + 0.5 * np.sin(9 * theta + 5 * r)
    texture = _noise_field(rng, rows, cols, 12)
    shade = light * (0.75 + 0.25 * folds) * (1 + 0.08 * texture)
    red = 235 * shade + 10
    green = (120 if colon else 95) * shade + 12 * folds * light
    blue = (105 if colon else 85) * shade
    vessels = np.clip(np.abs(_noise_field(rng, rows, cols, 6)) < 0.05, 0, 1) * light
    red, green, blue = red - 25 * vessels, green - 35 * vessels, blue - 30 * vessels
    highlights = np.zeros((rows, cols), dtype=np.float32)
    for _ in range(5):
        hx, hy = float(rng.uniform(-1.0, 1.0)), float(rng.uniform(-0.8, 0.8))
        highlights = np.maximum(highlights, np.exp(-((x - hx) ** 2 + (y - hy) ** 2) / 0.0015))
    red, green, blue = (c + 255 * highlights for c in (red, green, blue))
    aspect = cols / rows
    octagon = (np.abs(x) <= aspect * 0.95) & (np.abs(y) <= 0.98) & (np.abs(x) + np.abs(y) <= aspect * 0.95 + 0.55)
    return _rgb(red * octagon, green * octagon, blue * octagon)


def wound_photograph(rows: int, cols: int, *, seed: int) -> U8:
    """A clinical photograph of a foot ulcer on a blue drape, with a measuring scale."""
    rng = np.random.default_rng(seed)
    y, x = _grid(rows, cols)
    texture = _noise_field(rng, rows, cols, 8)
    foot = ((x + 0.1) / 1.05) ** 2 + (y / 0.62) ** 2 <= 1.0
    toes = np.zeros((rows, cols), dtype=bool)
    for k in range(5):
        toes |= ((x - 0.85 - 0.02 * k) / 0.16) ** 2 + ((y + 0.42 - 0.2 * k) / 0.09) ** 2 <= 1.0
    skin = foot | toes
    shade = 0.85 + 0.15 * (1 - (y / 0.7) ** 2) + 0.03 * texture
    ux, uy = float(rng.uniform(-0.3, 0.2)), float(rng.uniform(-0.15, 0.15))
    ulcer_r = np.sqrt(((x - ux) / 0.22) ** 2 + ((y - uy) / 0.16) ** 2) * (1 + 0.12 * _noise_field(rng, rows, cols, 16))
    ulcer = ulcer_r <= 1.0
    slough = ulcer & (_noise_field(rng, rows, cols, 10) > 0.35)
    rim = (ulcer_r > 1.0) & (ulcer_r <= 1.25)
    red = np.where(skin, 222 * shade, 55 + 10 * texture)
    green = np.where(skin, 170 * shade, 95 + 10 * texture)
    blue = np.where(skin, 140 * shade, 150 + 10 * texture)
    red = np.where(rim & skin, 200, np.where(ulcer, 175 + 30 * texture, red))
    green = np.where(rim & skin, 120, np.where(ulcer, 45 + 15 * texture, green))
    blue = np.where(rim & skin, 110, np.where(ulcer, 50, blue))
    red, green, blue = (np.where(slough, c, old) for c, old in ((215, red), (190, green), (110, blue)))
    scale = (y > 0.8) & (y < 0.92) & (x > -1.2) & (x < 0.2)
    ticks = scale & (y < 0.86) & ((np.floor((x + 1.2) * 40) % 4) == 0)
    for channel in (red, green, blue):
        channel[scale] = 240
        channel[ticks] = 20
    return _rgb(smooth(red, 1), smooth(green, 1), smooth(blue, 1))


def dermoscopy(rows: int, cols: int, *, seed: int) -> U8:
    """A pigmented skin lesion under a dermatoscope: irregular border, pigment network, round field."""
    rng = np.random.default_rng(seed)
    y, x = _grid(rows, cols)
    theta = np.arctan2(y, x)
    r = np.sqrt(x * x + y * y)
    border = 0.45 * (1 + 0.12 * np.sin(5 * theta + 1.3) + 0.07 * np.sin(11 * theta))
    lesion = np.clip((border - r) / 0.05, 0.0, 1.0)
    network = 0.5 + 0.5 * np.sin(60 * x) * np.sin(60 * y + 3 * _noise_field(rng, rows, cols, 16))
    pigment = lesion * (0.6 + 0.3 * network + 0.2 * _noise_field(rng, rows, cols, 10))
    red = 230 - 150 * pigment
    green = 180 - 135 * pigment
    blue = 160 - 120 * pigment
    field = r <= 0.98
    return _rgb(smooth(red, 1) * field, smooth(green, 1) * field, smooth(blue, 1) * field)


def fundus(rows: int, cols: int, *, right_eye: bool, seed: int) -> U8:
    """A colour fundus photograph: orange retina, optic disc, vessel arcades, macula, round field."""
    rng = np.random.default_rng(seed)
    y, x = _grid(rows, cols)
    side = 1.0 if right_eye else -1.0
    disc_x, disc_y = 0.42 * side, -0.03
    r = np.sqrt(x * x + y * y)
    field = r <= 0.95
    base = 1.0 - 0.35 * r**2 + 0.05 * _noise_field(rng, rows, cols, 20)
    red, green, blue = 215 * base, 95 * base, 40 * base
    macula = np.exp(-((x + 0.05 * side) ** 2 + y**2) / 0.02)
    red, green, blue = red - 60 * macula, green - 40 * macula, blue - 15 * macula
    vessels = np.zeros((rows, cols), dtype=np.float32)
    for sign in (-1.0, 1.0):
        for k, (spread, width) in enumerate(((0.55, 0.012), (0.35, 0.009), (0.8, 0.007))):
            t = np.clip((disc_x - x) * side, 0.0, None)  # towards the macula side
            curve = disc_y + sign * spread * np.sin(np.clip(t * (2.2 + 0.4 * k), 0, math.pi / 1.4))
            vessels = np.maximum(vessels, np.exp(-((y - curve) ** 2) / (2 * width * width)) * (t > 0) * (t < 1.3))
    red, green, blue = red - 70 * vessels, green - 45 * vessels, blue - 15 * vessels
    disc = np.exp(-(((x - disc_x) / 0.09) ** 2 + ((y - disc_y) / 0.11) ** 2))
    red, green, blue = red + 40 * disc, green + 140 * disc, blue + 90 * disc
    return _rgb(red * field, green * field, blue * field)


def histology(rows: int, cols: int, *, stain: str, seed: int) -> U8:
    """A stained tissue section: glands, stroma and nuclei; H&E (pink/purple) or IHC (brown/blue)."""
    rng = np.random.default_rng(seed)
    y, x = _grid(rows, cols)
    stroma = 0.6 + 0.4 * _noise_field(rng, rows, cols, 16)
    tissue = (_noise_field(rng, rows, cols, 64) > -0.9) & (x * x / 4 + y * y / 1.2 < 1.0)
    lumen = np.zeros((rows, cols), dtype=bool)
    epithelium = np.zeros((rows, cols), dtype=bool)
    nuclei = np.zeros((rows, cols), dtype=np.float32)
    aspect = cols / rows
    for _ in range(12):
        gx, gy = float(rng.uniform(-aspect, aspect)), float(rng.uniform(-0.9, 0.9))
        a, b = float(rng.uniform(0.06, 0.14)), float(rng.uniform(0.05, 0.11))
        q = ((x - gx) / a) ** 2 + ((y - gy) / b) ** 2
        lumen |= q <= 1.0
        epithelium |= (q > 1.0) & (q <= 1.6)
    count = rows * cols // 220
    px = rng.integers(0, cols, count)
    py = rng.integers(0, rows, count)
    nuclei[py, px] = 1.0
    nuclei = np.clip(smooth(nuclei, 2) * 6.0, 0.0, 1.0)
    nuclei = np.maximum(nuclei, epithelium * 0.55 * (0.5 + 0.5 * np.sin(90 * x) * np.sin(90 * y)))
    if stain == "HE":
        red = 235 - 25 * stroma - 120 * nuclei
        green = 170 - 40 * stroma - 120 * nuclei
        blue = 205 - 10 * stroma - 40 * nuclei
    else:  # DAB-positive epithelium (brown) on a haematoxylin counterstain
        positive = epithelium * (0.6 + 0.4 * stroma)
        red = 225 - 20 * stroma - 90 * nuclei - 60 * positive
        green = 215 - 25 * stroma - 80 * nuclei - 110 * positive
        blue = 215 - 10 * stroma - 30 * nuclei - 150 * positive
    glass = ~tissue | lumen
    red, green, blue = (np.where(glass, 244, c) for c in (red, green, blue))
    return _rgb(red, green, blue)


def ultrasound(rows: int, cols: int, *, cardiac: bool, seed: int) -> U8:
    """A B-mode sector: speckle over organ echogenicity, depth gain, black outside the fan (RGB, grey)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    apex_x, apex_y = cols / 2, -rows * 0.05
    depth = np.hypot(xx - apex_x, yy - apex_y) / rows  # 0 at the probe, ~1 at the bottom
    angle = np.arctan2(xx - apex_x, yy - apex_y)
    fan = (np.abs(angle) <= math.radians(38 if cardiac else 35)) & (depth >= 0.06) & (depth <= 1.02)
    u = angle / math.radians(40)
    echo: F32 = np.full((rows, cols), 0.45, dtype=np.float32)
    if cardiac:  # apical four-chamber: dark chambers, bright walls and valves
        for cx, cy, a, b in (
            (-0.25, 0.4, 0.2, 0.17),
            (0.25, 0.42, 0.2, 0.17),
            (-0.22, 0.78, 0.18, 0.13),
            (0.22, 0.8, 0.18, 0.13),
        ):
            q = ((u - cx) / a) ** 2 + ((depth - cy) / b) ** 2
            echo = np.where(q <= 1.0, 0.04, np.where(q <= 1.35, 0.8, echo))
    else:  # liver with a gallbladder and a vessel
        echo = 0.5 + 0.1 * _noise_field(rng, rows, cols, 24)
        for cx, cy, a, b, level in ((0.2, 0.42, 0.3, 0.08, 0.03), (-0.45, 0.9, 0.5, 0.035, 0.9)):
            q = ((u - cx) / a) ** 2 + ((depth - cy) / b) ** 2
            echo = np.where(q <= 1.0, level, echo)
        echo = np.where(depth < 0.12, 0.25, echo)  # subcutaneous layer
    speckle = smooth(rng.rayleigh(0.7, (rows, cols)), 1)
    gain = 1.15 - 0.45 * depth
    grey = np.clip(echo * speckle * gain * 300, 0, 255) * fan
    return _rgb(grey, grey, grey)


# --------------------------------------------------------------------------- waveforms

# Per-lead amplitudes (mV) of P, Q, R, S and T for leads I, II and V1-V6; III and the augmented
# leads are derived from I and II (Einthoven, Goldberger), so the limb leads agree with each other.
_WAVES = {
    "I": (0.1, -0.05, 0.75, -0.12, 0.25),
    "II": (0.15, -0.06, 1.15, -0.18, 0.35),
    "V1": (0.08, 0.0, 0.22, -0.95, -0.08),
    "V2": (0.1, 0.0, 0.45, -1.35, 0.45),
    "V3": (0.1, -0.02, 0.8, -0.85, 0.5),
    "V4": (0.1, -0.05, 1.35, -0.45, 0.45),
    "V5": (0.1, -0.07, 1.45, -0.25, 0.35),
    "V6": (0.1, -0.07, 1.1, -0.12, 0.28),
}
# Wave centres relative to the R peak (s) and widths (s); T moves with the RR interval.
_TIMING = ((-0.17, 0.022), (-0.028, 0.009), (0.0, 0.011), (0.03, 0.011), (0.26, 0.045))


def ecg_12_lead(seconds: float, rate_hz: int, *, seed: int) -> NDArray[Any]:
    """Twelve leads (I, II, III, aVR, aVL, aVF, V1-V6) in microvolts: sinus rhythm with a little
    heart-rate variability, baseline wander and noise. Shape (12, samples)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate_hz)
    t = np.arange(n) / rate_hz
    bpm = float(rng.uniform(58, 92))
    beats = []
    at = float(rng.uniform(0.2, 0.6))
    while at < seconds + 0.5:
        beats.append(at)
        at += 60.0 / bpm * float(rng.normal(1.0, 0.03))
    rr = 60.0 / bpm
    leads = {}
    for name, amplitudes in _WAVES.items():
        signal = np.zeros(n)
        for beat in beats:
            window = slice(max(int((beat - 0.4) * rate_hz), 0), min(int((beat + 0.7) * rate_hz), n))
            for (offset, width), amplitude in zip(_TIMING, amplitudes, strict=True):
                if offset > 0.1:
                    offset *= math.sqrt(rr)  # Bazett-like QT scaling
                signal[window] += amplitude * np.exp(-((t[window] - beat - offset) ** 2) / (2 * width * width))
        leads[name] = signal
    wander = 0.05 * np.sin(2 * math.pi * 0.25 * t + float(rng.uniform(0, 6.3)))
    for name in leads:  # measured leads: noise and baseline wander; the others are computed from I and II
        leads[name] = leads[name] + wander + rng.normal(0.0, 0.012, n)
    one, two = leads["I"], leads["II"]
    derived = {"III": two - one, "aVR": -(one + two) / 2, "aVL": one - two / 2, "aVF": two - one / 2}
    order = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    return np.stack([{**leads, **derived}[name] for name in order]) * 1000.0


def arterial_pressure(seconds: float, rate_hz: int, *, seed: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """(ECG lead II in microvolts, aortic pressure in mmHg) for a haemodynamic recording."""
    ecg = ecg_12_lead(seconds, rate_hz, seed=seed)[1]
    n = int(seconds * rate_hz)
    t = np.arange(n) / rate_hz
    # R peaks from the lead II trace; each beat's pressure pulse starts ~0.1 s after R.
    peaks = [i for i in range(1, n - 1) if ecg[i] > 700 and ecg[i] >= ecg[i - 1] and ecg[i] > ecg[i + 1]]
    pressure = np.full(n, 80.0)
    for i in peaks:
        dt = t - t[i] - 0.1
        rise = np.where(dt >= 0, 45 * (dt / 0.12) * np.exp(1 - dt / 0.12), 0.0)
        notch = np.where(dt >= 0.32, 6 * np.exp(-((dt - 0.36) ** 2) / 0.002), 0.0)
        pressure = np.maximum(pressure, 80 + rise + notch - np.where(dt > 0.3, 8 * (dt - 0.3), 0.0))
    return ecg, pressure
