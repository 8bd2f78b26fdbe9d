"""A deformable 3D face built from one real photo, and identities derived from it.

The photo (scikit-image's astronaut by default, or another of
:data:`PHOTO_NAMES`, each shipped inside an installed wheel so nothing
downloads) is cut into a person layer with mediapipe's SelfieSegmentation
and given 3D structure with FaceMesh's 478 landmarks, back-projected
through a pinhole camera. Control points beyond the face (a skull shell
carrying the hair, the neck, the torso) let the whole person move: the
head rigidly with its pose, the torso loosely after it. Identities differ
in face shape, skin tone, hair and clothing colour, framing and
background, so they are told apart at a glance and by a face encoder.
"""

from __future__ import annotations

import functools
import logging
import typing
from dataclasses import dataclass
from typing import Callable, Literal

import cv2
import numpy as np
from scipy.spatial import Delaunay

from talkhead_models import face_topology as topo

log = logging.getLogger(__name__)

# Control-point kinds: how a point moves.
FACE, SHELL, NECK, TORSO, FIXED = 0, 1, 2, 3, 4

# Semantic labels of the ground-truth masks (also the parse stage's classes).
LABEL_BACKGROUND, LABEL_HEAD, LABEL_NECK, LABEL_TORSO, LABEL_LIPS, LABEL_MOUTH = 0, 1, 2, 3, 4, 5
LABEL_NAMES = ("background", "head", "neck", "torso", "lips", "mouth_interior")

EYE_OUTER_DISTANCE_CM = 9.0  # outer eye corners of an adult face; fixes the metric scale

PhotoName = Literal["astronaut", "grace_hopper"]
"""A real face photo identities can be derived from (the keys of :data:`PHOTO_READERS`)."""
PHOTO_NAMES: tuple[str, ...] = typing.get_args(PhotoName)
DEFAULT_PHOTO: PhotoName = "astronaut"


class SyntheticFaceError(RuntimeError):
    """The source photo could not be turned into a face model."""


@dataclass(frozen=True)
class PhotoFace:
    """The source photo with what mediapipe sees in it, cropped to a head-and-shoulders square."""

    image: np.ndarray  # [S, S, 3] uint8 RGB
    person: np.ndarray  # [S, S] float32 person probability (SelfieSegmentation)
    landmarks: np.ndarray  # [478, 3] pixel x, y and mediapipe depth z in pixels (negative = nearer)
    photo: str = DEFAULT_PHOTO  # which of PHOTO_NAMES it was cut from


@dataclass(frozen=True)
class FaceRig:
    """Everything the renderer needs for one identity, in one camera."""

    size: int  # canvas side in pixels
    focal: float  # pinhole focal length in pixels
    texture: np.ndarray  # [S, S, 3] float32 RGB in [0, 1], identity colours applied
    alpha: np.ndarray  # [S, S] float32 person matte in source coordinates
    labels: np.ndarray  # [S, S] uint8 source labels (background, head, neck, torso)
    background: np.ndarray  # [S, S, 3] float32 static background
    source_points: np.ndarray  # [P, 2] control points in texture pixels
    kinds: np.ndarray  # [P] FACE, SHELL, NECK, TORSO or FIXED
    canonical: np.ndarray  # [P, 3] head-frame coordinates (cm) incl. identity shape; FACE/SHELL/NECK rows
    torso_rest: np.ndarray  # [P, 3] camera coordinates (cm) at rest, used for NECK/TORSO rows
    head_rotation: np.ndarray  # [3, 3] rest rotation of the head frame in the camera
    head_pivot: np.ndarray  # [3] rest position of the head frame origin in the camera (cm)
    torso_pivot: np.ndarray  # [3] point the torso turns about (cm)
    triangles: np.ndarray  # [T, 3] triangulation of the control points
    cm_per_px: float  # metric size of a pixel at the face's depth


def _astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def _grace_hopper() -> np.ndarray:
    # matplotlib (a dependency of mediapipe) ships this portrait as sample data: read from the wheel, offline.
    from matplotlib import cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SyntheticFaceError(f"cannot read the grace_hopper photo at {path} (matplotlib's sample data)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


PHOTO_READERS: dict[str, Callable[[], np.ndarray]] = {"astronaut": _astronaut, "grace_hopper": _grace_hopper}
"""Each photo's reader: an [H, W, 3] uint8 RGB array from an installed package, without the network."""


def read_photo(photo: str) -> np.ndarray:
    """The named source photo as [H, W, 3] uint8 RGB."""
    if photo not in PHOTO_READERS:
        raise ValueError(f"unknown source photo {photo!r}; known: {', '.join(PHOTO_NAMES)}")
    return PHOTO_READERS[photo]()


@functools.cache
def photo_face(size: int, photo: PhotoName = DEFAULT_PHOTO) -> PhotoFace:
    """Run FaceMesh and SelfieSegmentation once on the named photo, cropped and resized to ``size``."""
    import mediapipe as mp

    image = read_photo(photo)
    height, width = image.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as mesh:
        result = mesh.process(image)
    if not result.multi_face_landmarks:
        raise SyntheticFaceError(f"mediapipe FaceMesh found no face in the source photo {photo!r}")
    norm = np.array([[p.x, p.y, p.z] for p in result.multi_face_landmarks[0].landmark], dtype=np.float64)
    pixels = norm * np.array([width, height, width])
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as segmenter:
        person = segmenter.process(image).segmentation_mask.astype(np.float32)

    # Head-and-shoulders framing, as a talking-head recording has it: the face
    # takes about 40% of the frame height, with room for hair and shoulders.
    face_height = pixels[topo.CHIN, 1] - pixels[topo.FOREHEAD, 1]
    side = 2.7 * face_height
    x0 = _crop_start(pixels[topo.FACE_OVAL, 0].mean(), side, width)
    y0 = _crop_start(pixels[topo.FACE_OVAL, 1].mean() + 0.28 * face_height, side, height)
    if x0 < 0 or y0 < 0 or x0 + side > width or y0 + side > height:
        log.info("photo %s: the %.0f px crop runs past the %dx%d photo; its edge pixels fill the rest", photo,
                 side, width, height)
    scale = size / side
    affine = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
    # Past the photo's border the picture and the matte repeat their edge pixels alike: the shoulders carry on
    # instead of ending in a straight black cut (mirroring them would notch the matte where a shoulder meets the
    # edge).
    border = cv2.BORDER_REPLICATE
    crop = cv2.warpAffine(image, affine, (size, size), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC,
                          borderMode=border)
    person_crop = cv2.warpAffine(person, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
    landmarks = np.column_stack([(pixels[:, 0] - x0) * scale, (pixels[:, 1] - y0) * scale, pixels[:, 2] * scale])
    return PhotoFace(image=crop, person=person_crop, landmarks=landmarks, photo=photo)


def _crop_start(centre: float, side: float, extent: int) -> float:
    """Where a crop of ``side`` pixels around ``centre`` starts on an axis of ``extent`` pixels.

    A crop that fits is moved inside the photo (the framing stays the
    photo's own); one larger than the photo covers all of it, as near the
    face's centre as that allows, and the rest is padded.
    """
    low, high = sorted((0.0, extent - side))
    return float(np.clip(centre - side / 2, low, high))


@dataclass(frozen=True)
class IdentityLook:
    """Random but fixed traits of one synthetic identity."""

    width: float  # face width factor
    jaw_width: float  # extra width factor below the nose
    length: float  # face length factor
    nose: float  # nose size factor
    eye_spacing_cm: float  # outward shift of each eye and brow
    lip_fullness: float  # lip thickness factor
    skin_gain: tuple[float, float, float]  # RGB multiplier on skin
    hair_colour: tuple[float, float, float]  # RGB target of the hair
    cloth_colour: tuple[float, float, float]  # RGB tint of the clothing
    zoom: float  # framing: >1 nearer the camera
    offset_px: tuple[float, float]  # framing: person shift in the frame, as a fraction of the canvas
    background_seed: int


SKIN_TONES = [(1.0, 1.0, 1.0), (0.78, 0.62, 0.52), (1.06, 0.98, 0.9), (0.58, 0.43, 0.35), (0.92, 0.8, 0.68),
              (0.7, 0.55, 0.5)]
HAIR_COLOURS = [(0.12, 0.08, 0.05), (0.85, 0.7, 0.4), (0.55, 0.22, 0.08), (0.03, 0.03, 0.03), (0.6, 0.6, 0.58),
                (0.35, 0.2, 0.1)]
CLOTH_COLOURS = [(0.2, 0.3, 0.7), (0.7, 0.15, 0.15), (0.2, 0.55, 0.3), (0.8, 0.75, 0.3), (0.5, 0.3, 0.6),
                 (0.3, 0.3, 0.3)]


def make_look(index: int, rng: np.random.Generator) -> IdentityLook:
    """Traits for identity ``index``: colours cycle through distinct palettes so neighbours differ."""
    return IdentityLook(
        width=float(rng.uniform(0.9, 1.12)),
        jaw_width=float(rng.uniform(0.9, 1.1)),
        length=float(rng.uniform(0.93, 1.08)),
        nose=float(rng.uniform(0.85, 1.25)),
        eye_spacing_cm=float(rng.uniform(-0.25, 0.25)),
        lip_fullness=float(rng.uniform(0.85, 1.25)),
        skin_gain=SKIN_TONES[index % len(SKIN_TONES)],
        hair_colour=HAIR_COLOURS[(index * 5 + 1) % len(HAIR_COLOURS)],
        cloth_colour=CLOTH_COLOURS[(index * 7 + 2) % len(CLOTH_COLOURS)],
        zoom=float(rng.uniform(0.92, 1.08)),
        offset_px=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.03, 0.03))),
        background_seed=int(rng.integers(0, 2**31 - 1)),
    )


def build_rig(look: IdentityLook, photo: PhotoFace, focal_factor: float) -> FaceRig:
    """The deformable face of one identity seen by a camera of focal ``focal_factor * size``."""
    size = photo.image.shape[0]
    lm = photo.landmarks.copy()
    focal = focal_factor * size
    centre = size / 2.0

    eye_px = np.linalg.norm(lm[263, :2] - lm[33, :2])
    cm_per_px = EYE_OUTER_DISTANCE_CM / eye_px
    depth0 = focal * cm_per_px  # the depth at which one photo pixel is cm_per_px wide

    shell, shell_kinds = _shell_points(lm, size, cm_per_px)
    border = _border_points(size)
    source_points = np.vstack([lm[:, :2], shell[:, :2], border])
    kinds = np.concatenate([np.full(len(lm), FACE), shell_kinds, np.full(len(border), FIXED)])
    mp_depth = np.concatenate([lm[:, 2], shell[:, 2], np.zeros(len(border))])

    # Back-project every control point to camera coordinates (cm), then frame
    # the identity: move the person nearer (zoom) and sideways in the scene.
    z = depth0 + mp_depth * cm_per_px
    xy = (source_points - centre) * z[:, None] / focal
    rest = np.column_stack([xy, z])
    rest[:, 2] -= depth0 * (1.0 - 1.0 / look.zoom)
    rest[:, :2] += np.array(look.offset_px) * size * cm_per_px

    rotation = _face_frame(rest[: len(lm)])
    pivot = rest[topo.NOSE_TIP] + rotation @ np.array([0.0, 3.0, 9.0])  # near the top of the spine
    canonical = (rest - pivot) @ rotation
    canonical[: len(lm)] = _identity_shape(canonical[: len(lm)], look)
    shell_rows = kinds == SHELL
    canonical[shell_rows, 0] *= look.width
    canonical[shell_rows, 1] *= look.length
    torso_pivot = pivot + np.array([0.0, 12.0, 4.0])

    texture, labels = _appearance(photo, lm, look)
    background = _background(size, look.background_seed)
    triangles = Delaunay(source_points).simplices.astype(np.int64)
    log.debug("rig: %d control points, %d triangles, depth %.1f cm", len(source_points), len(triangles), depth0)
    return FaceRig(
        size=size, focal=focal, texture=texture, alpha=photo.person, labels=labels, background=background,
        source_points=source_points, kinds=kinds, canonical=canonical, torso_rest=rest,
        head_rotation=rotation, head_pivot=pivot, torso_pivot=torso_pivot, triangles=triangles,
        cm_per_px=cm_per_px,
    )


def _face_frame(points: np.ndarray) -> np.ndarray:
    """Columns: head x (towards the subject's left = image right), y (down), z (into the scene)."""
    x_axis = points[topo.LEFT_EYE_LOWER[0]] - points[topo.RIGHT_EYE_LOWER[0]]
    x_axis /= np.linalg.norm(x_axis)
    y_axis = points[topo.CHIN] - points[topo.FOREHEAD]
    y_axis -= x_axis * (y_axis @ x_axis)
    y_axis /= np.linalg.norm(y_axis)
    return np.column_stack([x_axis, y_axis, np.cross(x_axis, y_axis)])


def _shell_points(lm: np.ndarray, size: int, cm_per_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Points around the face: a skull shell (hair) above the mouth, neck and torso below.

    Depths are in the landmarks' pixel units; the shell recedes behind the
    face (a head is round), the neck and torso sit further back.
    """
    px = 1.0 / cm_per_px
    oval = lm[topo.FACE_OVAL]
    centre = oval[:, :2].mean(axis=0)
    mouth_y = lm[topo.MOUTH_CORNERS, 1].mean()
    chin_y = lm[topo.CHIN, 1]
    face_height = chin_y - lm[topo.FOREHEAD, 1]
    points, kinds = [], []
    for vertex in oval:
        direction = vertex[:2] - centre
        if vertex[1] < mouth_y:
            for ring, recede in ((1.3, 2.0), (1.75, 5.0), (2.3, 9.0)):
                xy = centre + ring * direction
                points.append([xy[0], xy[1], vertex[2] + recede * px])
                kinds.append(SHELL)
        else:
            xy = centre + 1.15 * direction
            points.append([xy[0], xy[1], vertex[2] + 4.0 * px])
            kinds.append(NECK)
    # Neck column and torso grid below the jaw.
    half_jaw = 0.5 * (lm[topo.FACE_OVAL, 0].max() - lm[topo.FACE_OVAL, 0].min())
    centre_x = lm[topo.CHIN, 0]
    for dy in (0.2, 0.38):
        for dx in (-0.7, -0.35, 0.0, 0.35, 0.7):
            points.append([centre_x + dx * half_jaw, chin_y + dy * face_height, 6.0 * px])
            kinds.append(NECK)
    step = size / 6.0
    for y in np.arange(chin_y + 0.6 * face_height, size + 1, step):
        for x in np.arange(0.0, size + 1, step):
            points.append([x, y, 10.0 * px])
            kinds.append(TORSO)
    for x in (0.0, size):
        for y in np.arange(chin_y, chin_y + 0.6 * face_height, step / 2):
            points.append([x, y, 10.0 * px])
            kinds.append(TORSO)
    return np.asarray(points, dtype=np.float64), np.asarray(kinds)


def _border_points(size: int) -> np.ndarray:
    """Fixed points on the canvas border above the shoulders: the background does not move."""
    edge = np.linspace(0.0, size, 7)
    top = np.column_stack([edge, np.zeros_like(edge)])
    sides = np.array([[0.0, size * f] for f in (0.2, 0.4)] + [[size, size * f] for f in (0.2, 0.4)])
    return np.vstack([top, sides])


def _identity_shape(face: np.ndarray, look: IdentityLook) -> np.ndarray:
    """Per-identity geometry in head coordinates (cm)."""
    face = face.copy()
    nose_tip = face[topo.NOSE_TIP].copy()
    chin = face[topo.CHIN]
    below_nose = np.clip((face[:, 1] - nose_tip[1]) / (chin[1] - nose_tip[1]), 0.0, 1.0)
    face[:, 0] *= look.width * (1.0 + (look.jaw_width - 1.0) * below_nose)
    face[:, 1] = nose_tip[1] + (face[:, 1] - nose_tip[1]) * look.length
    nose = topo.NOSE
    face[nose, 2] = nose_tip[2] + 1.5 + (face[nose, 2] - nose_tip[2] - 1.5) * look.nose
    face[nose, 0] *= look.nose ** 0.5
    for indices, sign in ((topo.RIGHT_EYE_UPPER + topo.RIGHT_EYE_LOWER + topo.RIGHT_EYE_CREASE + topo.RIGHT_IRIS
                           + topo.RIGHT_BROW, -1.0),
                          (topo.LEFT_EYE_UPPER + topo.LEFT_EYE_LOWER + topo.LEFT_EYE_CREASE + topo.LEFT_IRIS
                           + topo.LEFT_BROW, 1.0)):
        face[indices, 0] += sign * look.eye_spacing_cm
    lips = topo.lips_indices()
    mouth_y = face[topo.MOUTH_CORNERS, 1].mean()
    face[lips, 1] = mouth_y + (face[lips, 1] - mouth_y) * look.lip_fullness
    return face


def _appearance(photo: PhotoFace, lm: np.ndarray, look: IdentityLook) -> tuple[np.ndarray, np.ndarray]:
    """Recolour skin, hair and clothes; label head, neck and torso in source pixels."""
    size = photo.image.shape[0]
    image = photo.image.astype(np.float32) / 255.0
    person = photo.person > 0.5

    oval = lm[topo.FACE_OVAL, :2].astype(np.int32)
    face_mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(face_mask, [oval], 1)
    chin_y = lm[topo.CHIN, 1]
    face_height = chin_y - lm[topo.FOREHEAD, 1]
    half_jaw = 0.5 * (oval[:, 0].max() - oval[:, 0].min())
    rows = np.arange(size)[:, None]
    cols = np.arange(size)[None, :]
    # Head = the face plus everything of the person above the jaw line's level.
    jaw_level = lm[[topo.FACE_OVAL[i] for i in (10, 26)], 1].mean()
    head = person & ((rows < jaw_level) | (face_mask > 0))
    head_region = cv2.dilate(face_mask, np.ones((5, 5), np.uint8)) > 0
    head |= person & head_region
    collar = chin_y + 0.3 * face_height
    neck = person & ~head & (rows < collar) & (np.abs(cols - lm[topo.CHIN, 0]) < 0.75 * half_jaw)
    torso = person & ~head & ~neck
    labels = np.zeros((size, size), np.uint8)
    labels[head] = LABEL_HEAD
    labels[neck] = LABEL_NECK
    labels[torso] = LABEL_TORSO

    # Skin: face and neck, feathered; hair: head pixels outside the face oval.
    skin = cv2.GaussianBlur((face_mask > 0).astype(np.float32) + neck.astype(np.float32), (0, 0), size / 120)
    skin = np.clip(skin, 0, 1)[..., None]
    gain = np.array(look.skin_gain, np.float32)
    image = image * (1 - skin) + np.clip(image * gain, 0, 1) * skin
    hair = (head & (face_mask == 0)).astype(np.float32)
    hair = cv2.GaussianBlur(hair, (0, 0), size / 200)[..., None]
    luminance = image.mean(axis=2, keepdims=True)
    hair_rgb = np.clip(np.array(look.hair_colour, np.float32) * (0.6 + 2.5 * luminance), 0, 1)
    image = image * (1 - hair) + hair_rgb * hair
    cloth = cv2.GaussianBlur(torso.astype(np.float32), (0, 0), size / 60)[..., None] * person[..., None]
    cloth_rgb = np.clip(np.array(look.cloth_colour, np.float32) * (0.5 + 1.2 * luminance), 0, 1)
    image = image * (1 - cloth) + cloth_rgb * cloth
    return image.astype(np.float32), labels


def _background(size: int, seed: int) -> np.ndarray:
    """A static room-like backdrop: a two-colour gradient wall with a few soft panels."""
    rng = np.random.default_rng(seed)
    top, bottom = rng.uniform(0.25, 0.85, 3), rng.uniform(0.15, 0.7, 3)
    ramp = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    wall = (top * (1 - ramp) + bottom * ramp) * np.ones((1, size, 1), np.float32)
    for _ in range(int(rng.integers(3, 6))):
        x0, y0 = rng.uniform(0, 0.85, 2) * size
        w, h = rng.uniform(0.1, 0.35, 2) * size
        colour = rng.uniform(0.1, 0.95, 3)
        panel = np.zeros((size, size), np.float32)
        cv2.rectangle(panel, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), 1.0, -1)
        panel = cv2.GaussianBlur(panel, (0, 0), size / 150)[..., None]
        wall = wall * (1 - 0.8 * panel) + colour * 0.8 * panel
    grain = cv2.GaussianBlur(rng.normal(0, 0.03, (size, size)).astype(np.float32), (0, 0), 1.0)[..., None]
    return np.clip(wall + grain, 0, 1).astype(np.float32)
