"""A linear morphable landmark model: mean shape, identity basis, expression basis.

Two ways to get one, behind one interface (:class:`FaceModel`):

* **corpus** (no download): built from mediapipe FaceMesh's 3D landmarks of
  every identity. Each frame's points (pixels x, y and mediapipe's relative
  depth z, which is in the same pixel units) are back-projected through a
  pinhole of the identity's focal length, aligned by generalised Procrustes
  (rotation, translation, scale) on the points expressions move least, turned
  into the head frame of :mod:`talkhead_models.preprocess.cameras` and scaled
  to decimetres by a 9 cm outer-eye-corner distance. The identity basis is the
  PCA of the per-identity mean shapes, the expression basis the PCA of the
  within-identity residuals.

  The focal length matters here: shapes back-projected with a wrong focal
  carry the recordings' perspective, and a model with perspective baked in
  explains it a second time, which anchors every later focal estimate to the
  model's. So each identity's focal is self-calibrated first
  (:func:`calibrate_focal`): with the right focal, the back-projected frames
  are one rigid shape plus a low-dimensional expression space, so the energy
  the first ``exp_components`` principal components leave over is smallest.
  With exact landmarks the minimum is sharp (100x); landmarks whose errors
  dwarf the perspective signal (a fraction of a pixel per 10% of focal) give
  a flat or monotone curve, and the identity falls back to
  ``default_focal`` with a warning.
* **BFM 2009** (``01_MorphableModel.mat`` in the weights folder): mean and
  identity basis of the Basel Face Model at its standard 68 keypoint vertices
  (the iBUG-68 points), in decimetres as the peers scale it (micrometres /
  1e5). BFM 2009 has no expressions, so the expression basis is the corpus
  model's, moved onto BFM's 68 points by the similarity that maps the corpus
  mean onto the BFM mean.

Bases are stored pre-multiplied by their standard deviations, so
coefficients are in units of one standard deviation (the peers multiply by
``sig_id`` / ``sig_exp`` at run time; the product is the same).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from talkhead_models import face_topology as topo
from talkhead_models.config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from talkhead_models.geometry import fit_similarity
from talkhead_models.preprocess.cameras import rotation_angle_deg
from talkhead_models.weights import weights_dir

log = logging.getLogger(__name__)

BFM_FILE = "01_MorphableModel.mat"
"""Basel Face Model 2009, as distributed (the peers' ``data_utils/face_tracking/3DMM/``)."""

BFM_MICROMETRES_PER_DECIMETRE = 1e5

# BFM 2009 vertex of each iBUG-68 keypoint (0-based, 53490-vertex full model), in iBUG
# order. The list published with the model's landmark annotation (Landmarks68_BFM.anl)
# and used by the 3DMM fitting code around AD-NeRF.
BFM_68 = np.array([
    21873, 22149, 21653, 21036, 43236, 44918, 46166, 47135, 47914, 48695, 49667, 50924, 52613, 33678, 33005,
    32469, 32709, 38695, 39392, 39782, 39987, 40154, 40893, 41059, 41267, 41661, 42367, 8161, 8177, 8187, 8192,
    6515, 7243, 8204, 9163, 9883, 2215, 3886, 4920, 5828, 4801, 3640, 10455, 11353, 12383, 14066, 12653, 11492,
    5522, 6025, 7495, 8215, 8935, 10395, 10795, 9555, 8836, 8236, 7636, 6915, 5909, 7384, 8223, 9064, 10537,
    8829, 8229, 7629,
], dtype=np.int64)

FACE_VERTICES = 468
"""FaceMesh points without the iris rings (468-477): the irises move with the gaze, not the head."""

EYE_OUTER_DISTANCE_DM = 0.9
"""Distance between the outer eye corners of an adult face (9 cm); fixes the corpus model's metric scale."""


@dataclass(frozen=True)
class FaceModelConfig:
    """Building the corpus morphable model (and reading BFM 2009 when the user has it)."""

    exp_components: PositiveInt = 24
    """Expression components kept (also the rank the focal self-calibration allows for expressions)."""
    id_components: PositiveInt = 100
    """Identity components kept (at most identities - 1 for the corpus model; the peers use 100 of BFM's)."""
    frames_per_identity: PositiveInt = 2000
    """Frames per identity (evenly spread over its detected frames) that enter the PCA."""
    calibration_frames: PositiveInt = 400
    """Frames per identity that the focal self-calibration uses."""
    focal_min: PositiveFloat = 1.0
    """Smallest focal length tried, as a multiple of the image side."""
    focal_max: PositiveFloat = 4.0
    """Largest focal length tried, as a multiple of the image side."""
    focal_grid: PositiveInt = 13
    """Focal lengths on the coarse grid (evenly spaced in 1 / focal)."""
    focal_refine_steps: NonNegativeInt = 8
    """Golden-section steps around the best grid point."""
    default_focal: PositiveFloat = 1100.0 / 450.0
    """Focal (multiple of the image side) when self-calibration finds no minimum: AD-NeRF's tracked
    1100 px for its 450 px video, a typical talking-head camera."""
    min_contrast: NonNegativeFloat = 0.05
    """Self-calibration needs its worst grid score this fraction above its best, or it is flat."""
    min_turn_deg: NonNegativeFloat = 2.0
    """Self-calibration needs the head to turn at least this much (median angle to the mean pose)."""


class FaceModelError(ValueError):
    """Input that cannot make or feed a face model; the message says what to do."""


@dataclass(frozen=True)
class FaceModel:
    """A linear landmark model in the head frame of :mod:`talkhead_models.preprocess.cameras` (decimetres)."""

    mean: np.ndarray
    """[P, 3] mean shape."""
    id_basis: np.ndarray
    """[Ki, P, 3] identity directions, one standard deviation per unit coefficient (Ki may be 0)."""
    exp_basis: np.ndarray
    """[Ke, P, 3] expression directions, one standard deviation per unit coefficient."""
    landmarks: np.ndarray
    """[P] the FaceMesh vertex (0-477) each model point corresponds to."""
    source: str
    """"corpus" or "bfm2009"."""

    def __post_init__(self) -> None:
        points = self.mean.shape[0]
        if self.mean.shape != (points, 3) or self.id_basis.shape[1:] != (points, 3) \
                or self.exp_basis.shape[1:] != (points, 3) or self.landmarks.shape != (points,):
            raise FaceModelError(
                f"inconsistent face model shapes: mean {self.mean.shape}, id {self.id_basis.shape}, "
                f"exp {self.exp_basis.shape}, landmarks {self.landmarks.shape}")

    @property
    def n_points(self) -> int:
        return self.mean.shape[0]

    @property
    def n_id(self) -> int:
        return self.id_basis.shape[0]

    @property
    def n_exp(self) -> int:
        return self.exp_basis.shape[0]

    def shape(self, id_coeffs: np.ndarray, exp_coeffs: np.ndarray) -> np.ndarray:
        """Head-frame points [..., P, 3] for identity [Ki] and expression [..., Ke] coefficients."""
        identity = self.mean + np.tensordot(id_coeffs, self.id_basis, axes=1)
        return identity + np.tensordot(exp_coeffs, self.exp_basis, axes=1)

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean.astype(np.float32), id_basis=self.id_basis.astype(np.float32),
                 exp_basis=self.exp_basis.astype(np.float32), landmarks=self.landmarks.astype(np.int64),
                 source=np.array(self.source))

    @classmethod
    def load(cls, path: Path) -> "FaceModel":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: face model not found; run `dvc repro face_model` "
                                    "(python -m stages.face_model) first")
        with np.load(path) as data:
            return cls(mean=data["mean"].astype(np.float64), id_basis=data["id_basis"].astype(np.float64),
                       exp_basis=data["exp_basis"].astype(np.float64), landmarks=data["landmarks"],
                       source=str(data["source"]))


@dataclass(frozen=True)
class IdentityLandmarks:
    """One identity's FaceMesh output, as the landmarks stage writes it."""

    name: str
    points: np.ndarray
    """[N, 478, 3] x, y in processed-frame pixels, z mediapipe's relative depth in pixels."""
    detected: np.ndarray
    """[N] bool; False where the landmarks stage interpolated the frame."""
    image_size: int
    """Side of the processed frames in pixels."""


def facemesh_to_camera(points: np.ndarray, image_size: int, focal: float | None) -> np.ndarray:
    """FaceMesh pixels [..., 478, 3] -> OpenGL-camera-oriented 3D points (x right, y up, z towards the camera).

    With a focal length, x and y are back-projected to the depth mediapipe's z
    gives them (z is ``focal * (depth - mean depth) / mean depth`` in pixels),
    in units of pixels at the mean depth; without one, the weak-perspective
    shape (x, y, z as they are) is returned.
    """
    centre = image_size / 2.0
    x = points[..., 0] - centre
    y = centre - points[..., 1]
    depth = points[..., 2] - points[..., :FACE_VERTICES, 2].mean(axis=-1, keepdims=True)
    if focal is not None:
        stretch = 1.0 + depth / focal
        x, y = x * stretch, y * stretch
    return np.stack([x, y, -depth], axis=-1)


def generalised_procrustes(shapes: np.ndarray, iterations: int = 4, stable_fraction: float = 0.5) -> np.ndarray:
    """Align all shapes [N, P, 3] to their evolving mean; later passes weight the most stable points only.

    Expressions move the lips, jaw and eyelids; aligning on every point would
    let them tilt the head frame. After a first pass on all points, the
    ``stable_fraction`` of points with the smallest residual spread carry the alignment.
    """
    weights = np.ones(shapes.shape[1])
    reference = shapes[0]
    aligned = shapes
    for iteration in range(iterations):
        aligned = fit_similarity(shapes, reference, weights).apply(shapes)
        reference = aligned.mean(axis=0)
        if iteration == 0:
            spread = np.sqrt(((aligned - reference) ** 2).sum(-1).mean(0))
            weights = (spread <= np.quantile(spread, stable_fraction)).astype(np.float64)
    return aligned


def canonical_frame(mean: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Rotation (row-vector form), origin and scale that put a FaceMesh-indexed mean shape into the head frame.

    x runs from the subject's right outer eye corner to the left one, y from
    the chin to the forehead (made orthogonal to x), z = x cross y out of the
    face; the origin is the centroid of the face oval (the silhouette, near the
    depth of the ears' front); the scale makes the outer eye corners 9 cm apart.
    """
    index = {int(v): i for i, v in enumerate(landmarks)}
    missing = [v for v in (33, 263, topo.CHIN, topo.FOREHEAD) if v not in index]
    if missing:
        raise FaceModelError(f"the model's landmarks lack FaceMesh vertices {missing} needed for the head frame")
    right_eye, left_eye = mean[index[33]], mean[index[263]]
    x_axis = left_eye - right_eye
    eye_distance = np.linalg.norm(x_axis)
    x_axis = x_axis / eye_distance
    y_axis = mean[index[topo.FOREHEAD]] - mean[index[topo.CHIN]]
    y_axis = y_axis - x_axis * (y_axis @ x_axis)
    y_axis /= np.linalg.norm(y_axis)
    rotation = np.column_stack([x_axis, y_axis, np.cross(x_axis, y_axis)])
    oval = [index[v] for v in topo.FACE_OVAL if v in index]
    origin = mean[oval].mean(axis=0)
    return rotation, origin, EYE_OUTER_DISTANCE_DM / eye_distance


def rigid_directions(mean: np.ndarray) -> np.ndarray:
    """[7, P * 3] orthonormal directions in which a shape [P, 3] moves rigidly: 3 rotations, 3 shifts, scale."""
    centred = mean - mean.mean(axis=0)
    rotations = [np.cross(axis, centred) for axis in np.eye(3)]
    shifts = [np.broadcast_to(axis, centred.shape) for axis in np.eye(3)]
    directions = np.stack([d.reshape(-1) for d in (*rotations, *shifts, centred)], axis=1)
    basis, _ = np.linalg.qr(directions)
    return basis.T


def _principal_components(samples: np.ndarray, n_components: int, mean: np.ndarray) -> np.ndarray:
    """[M, P, 3] zero-mean samples -> [K, P, 3] directions scaled by their standard deviations.

    The samples' components along rigid motions of ``mean`` are removed
    first: a mode that also turns the head (jaw opening that tilts the face
    slightly, from an imperfect alignment) would let the tracker trade head
    pitch for expression.
    """
    flat = samples.reshape(len(samples), -1)
    rigid = rigid_directions(mean)
    flat = flat - (flat @ rigid.T) @ rigid
    if len(flat) < 2 or n_components <= 0:
        return np.zeros((0,) + samples.shape[1:])
    _, singular, vt = np.linalg.svd(flat, full_matrices=False)
    std = singular / np.sqrt(len(flat) - 1)
    keep = min(n_components, int((std > std[0] * 1e-6).sum()))
    return (vt[:keep] * std[:keep, None]).reshape((keep,) + samples.shape[1:])


def build_corpus_model(identities: Sequence[IdentityLandmarks], focals: Mapping[str, float] | None,
                       n_exp: int, n_id: int, frames_per_identity: int) -> FaceModel:
    """The corpus model from every identity's FaceMesh points (see the module docstring).

    ``focals`` (pixels, per identity name) back-project the points before
    alignment; ``None`` builds the weak-perspective bootstrap model.
    """
    if not identities:
        raise FaceModelError("no identities to build a face model from; run the landmarks stage first")
    landmarks = np.arange(FACE_VERTICES)
    shapes, owners = [], []
    for number, identity in enumerate(identities):
        usable = np.flatnonzero(identity.detected & np.isfinite(identity.points).all(axis=(1, 2)))
        if len(usable) < 2:
            raise FaceModelError(
                f"identity {identity.name}: {len(usable)} frame(s) with a detected face; a face model needs at "
                "least 2 (check the landmarks stage's detected.npy, or leave the identity out of data.identities)")
        chosen = usable[np.unique(np.linspace(0, len(usable) - 1, min(frames_per_identity, len(usable))).astype(int))]
        focal = None if focals is None else focals[identity.name]
        points = facemesh_to_camera(identity.points[chosen].astype(np.float64), identity.image_size, focal)
        shapes.append(points[:, landmarks])
        owners.append(np.full(len(chosen), number))
    stacked = generalised_procrustes(np.concatenate(shapes))
    owner = np.concatenate(owners)
    rotation, origin, scale = canonical_frame(stacked.mean(axis=0), landmarks)
    stacked = (stacked - origin) @ rotation * scale

    identity_means = np.stack([stacked[owner == i].mean(axis=0) for i in range(len(identities))])
    mean = identity_means.mean(axis=0)
    id_basis = _principal_components(identity_means - mean, n_id, mean)
    residuals = stacked - identity_means[owner]
    exp_basis = _principal_components(residuals, n_exp, mean)
    log.info("corpus face model: %d identities, %d frames, %d points, %d identity and %d expression components",
             len(identities), len(stacked), len(landmarks), len(id_basis), len(exp_basis))
    return FaceModel(mean=mean, id_basis=id_basis, exp_basis=exp_basis, landmarks=landmarks, source="corpus")


@dataclass(frozen=True)
class FocalCalibration:
    """One identity's self-calibrated focal length."""

    focal: float
    """Focal length in pixels (the default when ``status`` is not "ok")."""
    status: str
    """"ok"; "still" (the head hardly turns), "flat" (no contrast) or "edge" (minimum at the range's edge) fall
    back to the default."""
    curve: list[tuple[float, float]]
    """(focal, residual energy fraction) of every candidate."""


def rank_residual(shapes: np.ndarray, rank: int) -> float:
    """Fraction of the aligned shapes' variance [N, P, 3] that the first ``rank`` principal components leave over."""
    aligned = generalised_procrustes(shapes)
    flat = (aligned - aligned.mean(axis=0)).reshape(len(aligned), -1)
    energy = np.linalg.svd(flat, compute_uv=False) ** 2
    return float(energy[rank:].sum() / energy.sum())


def rotation_spread_deg(shapes: np.ndarray) -> float:
    """Median angle (degrees) by which shapes [N, P, 3] are turned away from their Procrustes mean."""
    turns = fit_similarity(shapes, generalised_procrustes(shapes).mean(axis=0)).rotation
    return float(np.median(rotation_angle_deg(turns, np.eye(3))))


def curve_status(scores: np.ndarray, min_contrast: float) -> str:
    """"ok" when the grid's scores [G] hold a minimum bracketed on both sides: each side rises to at least
    ``1 + min_contrast`` times it. "flat" when no score does; "edge" otherwise.

    A minimum one grid step from the range's end of a curve that only climbs away from it is the noise of a
    monotone curve, not perspective: on the Grace Hopper identity such a dip put the focal at 263 px against
    the true 563.
    """
    best, floor = int(np.argmin(scores)), (1.0 + min_contrast) * float(np.min(scores))
    if float(np.max(scores)) < floor:
        return "flat"
    if scores[:best].size == 0 or scores[best + 1:].size == 0 or scores[:best].max() < floor \
            or scores[best + 1:].max() < floor:
        return "edge"
    return "ok"


def calibrate_focal(identity: IdentityLandmarks, cfg: FaceModelConfig) -> FocalCalibration:
    """Focal length that makes the identity's back-projected frames most nearly rigid-plus-expressions."""
    usable = np.flatnonzero(identity.detected & np.isfinite(identity.points).all(axis=(1, 2)))
    chosen = usable[np.unique(np.linspace(0, len(usable) - 1, min(cfg.calibration_frames, len(usable))).astype(int))]
    points = identity.points[chosen].astype(np.float64)
    size = identity.image_size
    default = cfg.default_focal * size
    if len(chosen) <= cfg.exp_components + 1:
        log.warning("%s: %d frames are too few to self-calibrate the focal; using the default %.0f px",
                    identity.name, len(chosen), default)
        return FocalCalibration(default, "flat", [])
    turn = rotation_spread_deg(facemesh_to_camera(points, size, None)[:, :FACE_VERTICES])
    if turn < cfg.min_turn_deg:
        log.warning("%s: the head turns by %.2f deg (median; face_model.min_turn_deg %.1f), too little to "
                    "self-calibrate the focal; using the default %.0f px (face_model.default_focal)",
                    identity.name, turn, cfg.min_turn_deg, default)
        return FocalCalibration(default, "still", [])
    curve: dict[float, float] = {}

    def score(inverse_focal: float) -> float:
        focal = 1.0 / inverse_focal
        if focal not in curve:
            shapes = facemesh_to_camera(points, size, focal)[:, :FACE_VERTICES]
            curve[focal] = rank_residual(shapes, cfg.exp_components)
        return curve[focal]

    grid = np.linspace(1.0 / (cfg.focal_min * size), 1.0 / (cfg.focal_max * size), cfg.focal_grid)
    scores = np.array([score(g) for g in grid])
    best = int(np.argmin(scores))
    ordered = sorted(curve.items())
    status = curve_status(scores, cfg.min_contrast)
    if status != "ok":
        log.warning("%s: focal self-calibration found no minimum (%s curve over %.0f-%.0f px: the landmarks are "
                    "too noisy to see perspective); using the default %.0f px (face_model.default_focal)",
                    identity.name, status, cfg.focal_min * size, cfg.focal_max * size, default)
        return FocalCalibration(default, status, ordered)
    low, high = grid[min(best + 1, len(grid) - 1)], grid[max(best - 1, 0)]
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    for _ in range(cfg.focal_refine_steps):
        if score(a) < score(b):
            high, b = b, a
            a = high - ratio * (high - low)
        else:
            low, a = a, b
            b = low + ratio * (high - low)
    focal, _ = min(curve.items(), key=lambda item: item[1])
    log.info("%s: self-calibrated focal %.1f px (%.3f x image side)", identity.name, focal, focal / size)
    return FocalCalibration(float(focal), "ok", sorted(curve.items()))


def load_bfm(path: Path, corpus: FaceModel, n_id: int) -> FaceModel:
    """BFM 2009's mean and identity basis at its 68 keypoints, with the corpus model's expressions.

    The corpus expression basis is taken at FaceMesh's iBUG-68 vertices and
    moved into BFM's frame by the similarity mapping the corpus mean onto the
    BFM mean there (expressions are displacements: rotation and scale only).
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        bfm = loadmat(str(path), variable_names=("shapeMU", "shapePC", "shapeEV"))
    except (OSError, ValueError, NotImplementedError, MatReadError) as error:
        raise FaceModelError(f"{path}: not a readable BFM 2009 .mat file ({error}); replace it with the "
                             f"{BFM_FILE} from the Basel Face Model 2009 download, or remove it to use the "
                             "corpus model") from error
    missing = [k for k in ("shapeMU", "shapePC", "shapeEV") if k not in bfm]
    if missing:
        raise FaceModelError(f"{path}: lacks {missing}; expected the Basel Face Model 2009 {BFM_FILE}")
    vertices = bfm["shapeMU"].reshape(-1, 3) / BFM_MICROMETRES_PER_DECIMETRE
    if vertices.shape[0] <= BFM_68.max():
        raise FaceModelError(f"{path}: {vertices.shape[0]} vertices, expected the full 53490-vertex BFM 2009")
    centre = vertices.mean(axis=0)
    mean = vertices[BFM_68] - centre
    components = bfm["shapePC"].shape[1]
    keep = min(n_id, components)
    sigma = bfm["shapeEV"].reshape(-1)[:keep]
    rows = (3 * BFM_68[:, None] + np.arange(3)).reshape(-1)
    id_basis = (bfm["shapePC"][rows, :keep] * sigma).T.reshape(keep, len(BFM_68), 3) / BFM_MICROMETRES_PER_DECIMETRE

    position = {int(v): i for i, v in enumerate(corpus.landmarks)}
    absent = [int(v) for v in topo.MP68 if int(v) not in position]
    if absent:
        raise FaceModelError(f"the corpus model lacks FaceMesh vertices {absent} of the 68-point subset")
    rows68 = np.array([position[int(v)] for v in topo.MP68])
    corpus_68 = corpus.mean[rows68]
    # Expression offsets are displacements: they take the similarity's scale and rotation, not its shift.
    to_bfm = fit_similarity(corpus_68, mean)
    exp_basis = corpus.exp_basis[:, rows68] @ (to_bfm.scale * to_bfm.rotation.T)
    log.info("BFM 2009 from %s: 68 keypoints, %d identity components, %d expression components from the corpus",
             path, keep, corpus.n_exp)
    return FaceModel(mean=mean, id_basis=id_basis, exp_basis=exp_basis, landmarks=topo.MP68.copy(),
                     source="bfm2009")


@dataclass
class BuiltModel:
    """The face model and how each identity's focal was found."""

    model: FaceModel
    calibrations: dict[str, FocalCalibration]
    corpus: FaceModel
    """The corpus model (the same object as ``model`` unless BFM 2009 was used)."""


def build_face_model(identities: Sequence[IdentityLandmarks], cfg: FaceModelConfig,
                     weights: Path | None = None) -> BuiltModel:
    """Self-calibrate every identity's focal, build the corpus model, and swap in BFM 2009 when present.

    ``weights`` is the local weights folder (default ``$TALKHEAD_WEIGHTS``);
    ``01_MorphableModel.mat`` there selects BFM 2009 for mean and identity.
    """
    if not identities:
        raise FaceModelError("no identities to build a face model from; run the landmarks stage first")
    calibrations = {identity.name: calibrate_focal(identity, cfg) for identity in identities}
    corpus = build_corpus_model(identities, {name: c.focal for name, c in calibrations.items()},
                                cfg.exp_components, cfg.id_components, cfg.frames_per_identity)
    bfm = (weights if weights is not None else weights_dir()) / BFM_FILE
    if bfm.is_file():
        model = load_bfm(bfm, corpus, cfg.id_components)
    else:
        log.info("%s not found: using the corpus face model (place the Basel Face Model 2009 file there to use "
                 "BFM instead)", bfm)
        model = corpus
    return BuiltModel(model=model, calibrations=calibrations, corpus=corpus)
