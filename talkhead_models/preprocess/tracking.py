"""Head-pose and expression tracking: a morphable landmark model fitted to FaceMesh points.

What the peers' ``face_tracker.py`` does with Adam over thousands of steps,
done here with batched Levenberg-Marquardt (Gauss-Newton with damping) in
torch, so a whole video is fitted in seconds on a CPU:

1. **Focal search** on a subset of frames spread over the recordings: a
   coarse grid of focal lengths (multiples of the image side, as AD-NeRF tries
   ``range(600, 1500, 100)`` for 450 px), each fitted from a warm start, then a
   golden-section refinement around the best grid point. A search whose
   landscape is flat (the head hardly turns, so perspective says nothing) or
   whose best point is the edge of the grid is reported with a warning.
2. **Initial pose per frame in closed form**: mediapipe's relative depth z is
   in the same pixel units as x and y, so each frame's 478 points are a 3D
   shape; a similarity Procrustes against the model gives rotation, scale
   (hence depth = focal / scale) and translation.
3. **Refinement** of per-frame pose (euler, trans) and expression with the
   identity shared by all frames: residuals are the reprojection error in x, y
   and the centred relative depth (weighted by ``depth_weight``), plus a prior
   on the coefficients and a temporal smoothness term on the projected
   landmarks between neighbouring frames of the same recording (solved by
   block-Jacobi sweeps, so frames stay independent linear systems).

Conventions (head frame, OpenGL camera, euler order, units) are the peers';
see :mod:`talkhead_models.preprocess.cameras`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from talkhead_models import face_topology as topo
from talkhead_models.config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from talkhead_models.geometry import fit_similarity, mean_rotation
from talkhead_models.preprocess.cameras import euler_to_rotation as euler_to_rotation_np
from talkhead_models.preprocess.cameras import project, rotation_angle_deg, rotation_to_euler
from talkhead_models.preprocess.face_model import FaceModel

log = logging.getLogger(__name__)

DTYPE = torch.float32


class TrackingError(RuntimeError):
    """Landmarks that cannot be tracked; the message names the cause and the fix."""


@dataclass(frozen=True)
class TrackConfig:
    """Fitting the morphable landmark model to an identity's FaceMesh points."""

    focal_min: PositiveFloat = 1.0
    """Smallest focal length of the coarse search, as a multiple of the image side."""
    focal_max: PositiveFloat = 4.0
    """Largest focal length of the coarse search, as a multiple of the image side."""
    focal_grid: PositiveInt = 9
    """Focal lengths tried on the coarse grid (evenly spaced in 1 / focal, i.e. in perspective strength)."""
    focal_refine_steps: NonNegativeInt = 8
    """Golden-section steps around the best grid point."""
    focal_frames: PositiveInt = 120
    """Frames (spread over all recordings) that the focal search fits."""
    focal_iterations: PositiveInt = 4
    """Levenberg-Marquardt iterations per focal candidate (warm-started from the previous candidate)."""
    default_focal: PositiveFloat = 1100.0 / 450.0
    """Focal length (multiple of the image side) when the search is degenerate: AD-NeRF's tracked 1100 px for
    its 450 px video, a typical talking-head camera."""
    min_turn_deg: NonNegativeFloat = 2.0
    """A focal search over frames whose head turns less than this (median angle to the mean pose) is degenerate."""
    flat_tolerance: NonNegativeFloat = 1e-3
    """A search whose best and worst grid scores differ by less than this fraction is degenerate."""
    iterations: PositiveInt = 12
    """Levenberg-Marquardt iterations of the full fit."""
    depth_weight: NonNegativeFloat = 0.0
    """Weight of mediapipe's relative-depth residual against the x, y residuals. Off by default: mediapipe's
    depth tilts the face when the jaw opens and follows head turns only partly, which costs rotation accuracy
    (the depth still sets the closed-form initial pose and the face model's shape)."""
    exp_prior: NonNegativeFloat = 1.0
    """Weight of the squared expression coefficients (units of one standard deviation), in px^2."""
    id_prior: NonNegativeFloat = 0.5
    """Weight of the squared identity coefficients, in px^2 per frame fitted (the peers' 0.5 * mean(id^2)
    against their mean squared landmark error, in these units; a stronger prior pulled the focal 4% off)."""
    smoothness: NonNegativeFloat = 4.0
    """Weight of the squared frame-to-frame motion of the rigidly moved landmarks (pose only, not expression)
    against their reprojection error."""
    interpolated_weight: NonNegativeFloat = 0.1
    """Data weight of frames the landmarks stage interpolated (no face detected there)."""
    min_frames: PositiveInt = 10
    """Fewest frames with a detected face that a fit accepts."""
    batch_frames: PositiveInt = 256
    """Frames per batch when building Jacobians (bounds memory)."""
    max_points: PositiveInt = 128
    """Model points fitted per frame: the inner iBUG-68 subset first, then evenly spread inner-face points
    (speed; outline points are never fitted, see :func:`fitted_rows`)."""
    threads: PositiveInt = 1
    """torch threads during the fit. The work is many small batched solves; on shared cores a second
    thread's spin-waiting made the fit up to 9x slower (measured), and one thread alone does 300+ frames/s."""


@dataclass
class TrackResult:
    """The fit, in the peers' ``track_params.pt`` conventions."""

    id: np.ndarray
    """[Ki] identity coefficients."""
    exp: np.ndarray
    """[N, Ke] expression coefficients."""
    euler: np.ndarray
    """[N, 3] radians (see :mod:`~talkhead_models.preprocess.cameras`)."""
    trans: np.ndarray
    """[N, 3] decimetres."""
    focal: float
    """Focal length in pixels."""
    residual_px: np.ndarray
    """[N] per-frame median distance between fitted and observed landmarks (pixels)."""
    focal_curve: list[tuple[float, float]] = field(default_factory=list)
    """(focal, mean squared residual) of every focal candidate tried."""
    focal_status: str = "ok"
    """See :attr:`FocalEstimate.status`."""


# ---------------------------------------------------------------------------------------
# Rotations
# ---------------------------------------------------------------------------------------


def _rotation_with_derivatives(euler: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """R = Rx(theta) Ry(phi) Rz(-psi) [N, 3, 3] and dR / d(theta, phi, psi) [N, 3, 3, 3] (last axis)."""
    cos, sin = torch.cos(euler), torch.sin(euler)
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def matrix(*rows):
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    c0, s0, c1, s1, c2, s2 = cos[:, 0], sin[:, 0], cos[:, 1], sin[:, 1], cos[:, 2], sin[:, 2]
    rx = matrix((one, zero, zero), (zero, c0, -s0), (zero, s0, c0))
    ry = matrix((c1, zero, s1), (zero, one, zero), (-s1, zero, c1))
    rz = matrix((c2, s2, zero), (-s2, c2, zero), (zero, zero, one))
    drx = matrix((zero, zero, zero), (zero, -s0, -c0), (zero, c0, -s0))
    dry = matrix((-s1, zero, c1), (zero, zero, zero), (-c1, zero, -s1))
    drz = matrix((-s2, c2, zero), (-c2, -s2, zero), (zero, zero, zero))
    ryz = ry @ rz
    rotation = rx @ ryz
    derivatives = torch.stack([drx @ ryz, rx @ dry @ rz, rx @ ry @ drz], dim=-1)
    return rotation, derivatives


# ---------------------------------------------------------------------------------------
# The problem: observations, model, state
# ---------------------------------------------------------------------------------------


@dataclass
class _State:
    euler: torch.Tensor  # [N, 3]
    trans: torch.Tensor  # [N, 3]
    exp: torch.Tensor  # [N, Ke]
    id: torch.Tensor  # [Ki]

    def copy(self) -> "_State":
        return _State(self.euler.clone(), self.trans.clone(), self.exp.clone(), self.id.clone())

    def take(self, frames: torch.Tensor) -> "_State":
        return _State(self.euler[frames], self.trans[frames], self.exp[frames], self.id)


class _Problem:
    """Observations of N frames, the model and the fitting weights; evaluates costs and Jacobians."""

    def __init__(self, model: FaceModel, rows: np.ndarray, points: np.ndarray, weights: np.ndarray,
                 segment: np.ndarray, image_size: int, cfg: TrackConfig) -> None:
        self.cfg = cfg
        self.mean = torch.as_tensor(model.mean[rows], dtype=DTYPE)
        self.id_basis = torch.as_tensor(model.id_basis[:, rows], dtype=DTYPE)
        self.exp_basis = torch.as_tensor(model.exp_basis[:, rows], dtype=DTYPE)
        observed = torch.as_tensor(np.nan_to_num(points[:, model.landmarks[rows]]), dtype=DTYPE)
        self.uv = observed[..., :2]
        self.depth = observed[..., 2] - observed[..., 2].mean(dim=1, keepdim=True)
        self.weights = torch.as_tensor(weights, dtype=DTYPE)
        segment = np.asarray(segment)
        same_as_previous = np.zeros(len(segment), bool)
        same_as_previous[1:] = segment[1:] == segment[:-1]
        self.has_previous = torch.as_tensor(same_as_previous)
        self.has_next = torch.as_tensor(np.append(same_as_previous[1:], False))
        self.centre = image_size / 2.0
        self.n_frames = len(points)

    # -- forward model --------------------------------------------------------------

    def shape(self, state: _State) -> torch.Tensor:
        identity = self.mean + torch.einsum("k,kpi->pi", state.id, self.id_basis)
        return identity + torch.einsum("nk,kpi->npi", state.exp, self.exp_basis)

    def project(self, state: _State, focal: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel projections [N, P, 2] and centred relative depth [N, P] (mediapipe's z convention)."""
        rotation, _ = _rotation_with_derivatives(state.euler)
        camera = self.shape(state) @ rotation.transpose(1, 2) + state.trans[:, None, :]
        x, y, z = camera.unbind(-1)
        uv = torch.stack([-focal * x / z + self.centre, focal * y / z + self.centre], -1)
        relative = focal * z / z.mean(dim=1, keepdim=True)
        return uv, relative - relative.mean(dim=1, keepdim=True)

    def data_cost(self, state: _State, focal: float) -> torch.Tensor:
        """[N] squared residuals per frame: x, y and the weighted relative depth."""
        uv, depth = self.project(state, focal)
        uv_error = ((uv - self.uv) ** 2).sum(dim=(1, 2))
        return uv_error + self.cfg.depth_weight ** 2 * ((depth - self.depth) ** 2).sum(dim=1)

    def rigid_projection(self, state: _State, focal: float) -> torch.Tensor:
        """[N, P, 2] projections of the identity shape without expression (the head's rigid motion)."""
        rotation, _ = _rotation_with_derivatives(state.euler)
        identity = self.mean + torch.einsum("k,kpi->pi", state.id, self.id_basis)
        camera = identity @ rotation.transpose(1, 2) + state.trans[:, None, :]
        return torch.stack([-focal * camera[..., 0] / camera[..., 2] + self.centre,
                            focal * camera[..., 1] / camera[..., 2] + self.centre], -1)

    def total_cost(self, state: _State, focal: float) -> torch.Tensor:
        """Weighted data term, expression prior and smoothness of the rigid motion, summed over frames."""
        data = self.data_cost(state, focal)
        rigid = self.rigid_projection(state, focal)
        motion = ((rigid[1:] - rigid[:-1]) ** 2).sum(dim=(1, 2)) * self.has_next[:-1]
        return (self.weights * data).sum() + self.cfg.exp_prior * (state.exp ** 2).sum() \
            + self.cfg.smoothness * motion.sum()

    # -- Jacobians ---------------------------------------------------------------------

    def frame_jacobian(self, state: _State, focal: float, frames: torch.Tensor):
        """Residuals [n, 3P] and their Jacobian [n, 3P, 6 + Ke] w.r.t. (euler, trans, exp) of ``frames``."""
        sub = state.take(frames)
        rotation, d_rotation = _rotation_with_derivatives(sub.euler)
        shape = self.shape(sub)
        camera = shape @ rotation.transpose(1, 2) + sub.trans[:, None, :]
        n, points, _ = camera.shape
        # d camera / d parameters: [n, P, 3, 6 + Ke]
        d_euler = torch.einsum("nijk,npj->npik", d_rotation, shape)
        d_trans = torch.eye(3, dtype=DTYPE).expand(n, points, 3, 3)
        d_exp = torch.einsum("nij,kpj->npik", rotation, self.exp_basis)
        d_camera = torch.cat([d_euler, d_trans, d_exp], dim=-1)
        return self._project_jacobian(camera, d_camera, focal, frames)

    def id_jacobian(self, state: _State, focal: float, frames: torch.Tensor):
        """Residuals [n, 3P] and their Jacobian [n, 3P, Ki] w.r.t. the shared identity coefficients."""
        sub = state.take(frames)
        rotation, _ = _rotation_with_derivatives(sub.euler)
        camera = self.shape(sub) @ rotation.transpose(1, 2) + sub.trans[:, None, :]
        d_camera = torch.einsum("nij,kpj->npik", rotation, self.id_basis)
        return self._project_jacobian(camera, d_camera, focal, frames)

    def rigid_jacobian(self, state: _State, focal: float, frames: torch.Tensor) -> torch.Tensor:
        """[n, 2P] Jacobian of the rigid projections (all u, then all v) w.r.t. the pose of ``frames``."""
        sub = state.take(frames)
        rotation, d_rotation = _rotation_with_derivatives(sub.euler)
        identity = self.mean + torch.einsum("k,kpi->pi", sub.id, self.id_basis)
        camera = identity @ rotation.transpose(1, 2) + sub.trans[:, None, :]
        n, points, _ = camera.shape
        d_euler = torch.einsum("nijk,pj->npik", d_rotation, identity)
        d_trans = torch.eye(3, dtype=DTYPE).expand(n, points, 3, 3)
        _, _, du, dv = self._uv_jacobian(camera, torch.cat([d_euler, d_trans], dim=-1), focal)
        return torch.cat([du, dv], dim=1)

    @staticmethod
    def _uv_jacobian(camera: torch.Tensor, d_camera: torch.Tensor, focal: float, centre: float = 0.0):
        x, y, z = camera.unbind(-1)
        dx, dy, dz = d_camera.unbind(-2)
        inverse_z = 1.0 / z
        u = -focal * x * inverse_z + centre
        v = focal * y * inverse_z + centre
        du = (-focal * inverse_z)[..., None] * dx + (focal * x * inverse_z ** 2)[..., None] * dz
        dv = (focal * inverse_z)[..., None] * dy - (focal * y * inverse_z ** 2)[..., None] * dz
        return u, v, du, dv

    def _project_jacobian(self, camera: torch.Tensor, d_camera: torch.Tensor, focal: float, frames: torch.Tensor):
        z = camera[..., 2]
        dz = d_camera[..., 2, :]
        u, v, du, dv = self._uv_jacobian(camera, d_camera, focal, self.centre)
        mean_z = z.mean(dim=1, keepdim=True)
        relative = focal * z / mean_z
        d_relative = (focal / mean_z)[..., None] * dz \
            - (focal * z / mean_z ** 2)[..., None] * dz.mean(dim=1, keepdim=True)
        relative = relative - relative.mean(dim=1, keepdim=True)
        d_relative = d_relative - d_relative.mean(dim=1, keepdim=True)
        weight = self.cfg.depth_weight
        residuals = torch.cat([u - self.uv[frames, :, 0], v - self.uv[frames, :, 1],
                               weight * (relative - self.depth[frames])], dim=1)
        jacobian = torch.cat([du, dv, weight * d_relative], dim=1)
        return residuals, jacobian


# ---------------------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------------------


def _closed_form_pose(problem: _Problem, identity_shape: torch.Tensor, focal: float,
                      frames: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Euler [n, 3] and trans [n, 3] from a similarity Procrustes of each frame's 3D points to the model."""
    uv = problem.uv[frames]
    observed = torch.stack([uv[..., 0] - problem.centre, problem.centre - uv[..., 1], -problem.depth[frames]], -1)
    observed = observed.numpy()
    model_shape = identity_shape.numpy()
    fit = fit_similarity(model_shape, observed)
    # Weak perspective: the fitted scale is focal / depth, and the observed centroid sits on the ray at that depth.
    depth = focal / fit.scale
    observed_mean = observed.mean(axis=1)
    centre = np.stack([observed_mean[:, 0] * depth / focal, observed_mean[:, 1] * depth / focal, -depth], -1)
    trans = centre - fit.rotation @ model_shape.mean(axis=0)
    return rotation_to_euler(fit.rotation), trans


# ---------------------------------------------------------------------------------------
# Levenberg-Marquardt
# ---------------------------------------------------------------------------------------


def _solve_block_tridiagonal(diagonal: np.ndarray, upper: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve a symmetric positive definite block-tridiagonal system: blocks [N, b, b], [N - 1, b, b], rhs [N, b]."""
    from scipy.linalg import solveh_banded

    n, size = rhs.shape
    band = 2 * size - 1
    packed = np.zeros((band + 1, n * size))
    rows_in, cols_in = np.triu_indices(size)
    start = np.arange(n)[:, None] * size
    rows, cols = (start + rows_in).ravel(), (start + cols_in).ravel()
    packed[band + rows - cols, cols] = diagonal[:, rows_in, cols_in].ravel()
    if n > 1:
        rows_in, cols_in = (g.ravel() for g in np.meshgrid(np.arange(size), np.arange(size), indexing="ij"))
        start = np.arange(n - 1)[:, None] * size
        rows, cols = (start + rows_in).ravel(), (start + size + cols_in).ravel()
        packed[band + rows - cols, cols] = upper[:, rows_in, cols_in].ravel()
    return solveh_banded(packed, rhs.ravel(), check_finite=False).reshape(n, size)


def _solve_frames(problem: _Problem, state: _State, focal: float, iterations: int, fit_identity: bool) -> _State:
    """Levenberg-Marquardt on every frame's pose and expression (and the shared identity).

    The smoothness term couples neighbouring poses, so each step solves one
    block-tridiagonal system in the poses (the expressions are eliminated
    frame by frame, a Schur complement), exactly and in O(N).
    """
    cfg = problem.cfg
    n_frames, n_exp = problem.n_frames, problem.exp_basis.shape[0]
    frames = torch.arange(n_frames)
    damping = 1e-3
    cost = problem.total_cost(state, focal)
    for _ in range(iterations):
        diagonal = torch.zeros(n_frames, 6, 6, dtype=torch.float64)
        upper = torch.zeros(max(n_frames - 1, 0), 6, 6, dtype=torch.float64)
        rhs = torch.zeros(n_frames, 6, dtype=torch.float64)
        exp_solution = torch.zeros(n_frames, n_exp, 7, dtype=DTYPE)  # A_ee^-1 [A_ep | g_e]
        rigid_all = problem.rigid_projection(state, focal)
        rigid_flat = torch.cat([rigid_all[..., 0], rigid_all[..., 1]], dim=1)
        for start in range(0, n_frames, cfg.batch_frames):
            chunk = frames[start:start + cfg.batch_frames]
            residuals, jacobian = problem.frame_jacobian(state, focal, chunk)
            weight = problem.weights[chunk]
            hessian = weight[:, None, None] * torch.einsum("nri,nrj->nij", jacobian, jacobian)
            gradient = weight[:, None] * torch.einsum("nri,nr->ni", jacobian, residuals)
            hessian[:, 6:, 6:] += cfg.exp_prior * torch.eye(n_exp, dtype=DTYPE)
            gradient[:, 6:] += cfg.exp_prior * state.exp[chunk]
            hessian = hessian + torch.diag_embed(damping * torch.diagonal(hessian, dim1=1, dim2=2) + 1e-6)
            factor, _ = torch.linalg.cholesky_ex(hessian[:, 6:, 6:])
            solved = torch.cholesky_solve(torch.cat([hessian[:, 6:, :6], gradient[:, 6:, None]], 2), factor)
            exp_solution[chunk] = solved
            schur = hessian[:, :6, :6] - hessian[:, :6, 6:] @ solved[..., :6]
            reduced = -gradient[:, :6] + (hessian[:, :6, 6:] @ solved[..., 6:])[..., 0]
            # Smoothness between each frame and the next one of the same recording.
            with_next = chunk[chunk < n_frames - 1]
            extended = frames[start:min(start + cfg.batch_frames + 1, n_frames)]
            pose_jacobian = problem.rigid_jacobian(state, focal, extended)
            own = pose_jacobian[:len(chunk)]
            linked = problem.has_next[chunk].to(DTYPE) * cfg.smoothness
            linked_previous = problem.has_previous[chunk].to(DTYPE) * cfg.smoothness
            gram = torch.einsum("nri,nrj->nij", own, own)
            schur = schur + (linked + linked_previous)[:, None, None] * gram
            forward = torch.zeros(len(chunk), rigid_flat.shape[1], dtype=DTYPE)
            forward[:len(with_next)] = rigid_flat[with_next] - rigid_flat[with_next + 1]
            backward = torch.zeros_like(forward)
            has_previous = chunk > 0
            backward[has_previous] = rigid_flat[chunk[has_previous]] - rigid_flat[chunk[has_previous] - 1]
            reduced = reduced - torch.einsum("nri,nr->ni", own, linked[:, None] * forward
                                             + linked_previous[:, None] * backward)
            diagonal[chunk] = schur.double()
            rhs[chunk] = reduced.double()
            if len(with_next):
                following = pose_jacobian[1:len(with_next) + 1]
                upper[with_next] = (-linked[:len(with_next), None, None]
                                    * torch.einsum("nri,nrj->nij", own[:len(with_next)], following)).double()
        pose_step = torch.as_tensor(_solve_block_tridiagonal(diagonal.numpy(), upper.numpy(), rhs.numpy()),
                                    dtype=DTYPE)
        exp_step = -(exp_solution[..., 6] + (exp_solution[..., :6] @ pose_step[..., None])[..., 0])
        candidate = state.copy()
        candidate.euler += pose_step[:, :3]
        candidate.trans += pose_step[:, 3:]
        candidate.exp += exp_step
        new_cost = problem.total_cost(candidate, focal)
        if torch.isfinite(new_cost) and new_cost < cost:
            state, cost, damping = candidate, new_cost, max(damping / 3.0, 1e-7)
        else:
            damping = min(damping * 8.0, 1e7)
        if fit_identity and problem.id_basis.shape[0] > 0:
            state = _identity_step(problem, state, focal)
            cost = problem.total_cost(state, focal)
    return state


def _identity_step(problem: _Problem, state: _State, focal: float) -> _State:
    """One Gauss-Newton step on the shared identity coefficients (kept only if it lowers the data cost)."""
    cfg = problem.cfg
    frames = torch.arange(problem.n_frames)
    n_id = problem.id_basis.shape[0]
    hessian = torch.zeros(n_id, n_id, dtype=DTYPE)
    gradient = torch.zeros(n_id, dtype=DTYPE)
    for start in range(0, len(frames), cfg.batch_frames):
        chunk = frames[start:start + cfg.batch_frames]
        residuals, jacobian = problem.id_jacobian(state, focal, chunk)
        weight = problem.weights[chunk]
        hessian += torch.einsum("n,nri,nrj->ij", weight, jacobian, jacobian)
        gradient += torch.einsum("n,nri,nr->i", weight, jacobian, residuals)
    prior = cfg.id_prior * len(frames)
    hessian += prior * torch.eye(n_id, dtype=DTYPE)
    gradient += prior * state.id
    step = -torch.linalg.solve(hessian, gradient)
    before = (problem.weights * problem.data_cost(state, focal)).sum() + prior * (state.id ** 2).sum()
    candidate = state.copy()
    candidate.id = state.id + step
    after = (problem.weights * problem.data_cost(candidate, focal)).sum() + prior * (candidate.id ** 2).sum()
    return candidate if torch.isfinite(after) and after < before else state


# ---------------------------------------------------------------------------------------
# Focal search and the full fit
# ---------------------------------------------------------------------------------------


def _initial_state(problem: _Problem, focal: float, identity: torch.Tensor) -> _State:
    frames = torch.arange(problem.n_frames)
    identity_shape = problem.mean + torch.einsum("k,kpi->pi", identity, problem.id_basis)
    euler, trans = _closed_form_pose(problem, identity_shape, focal, frames)
    return _State(torch.as_tensor(euler, dtype=DTYPE), torch.as_tensor(trans, dtype=DTYPE),
                  torch.zeros(problem.n_frames, problem.exp_basis.shape[0], dtype=DTYPE), identity.clone())


def _rescale_depth(state: _State, old_focal: float, new_focal: float) -> _State:
    """Warm start for another focal: the same image needs the head proportionally further away."""
    moved = state.copy()
    moved.trans = state.trans * (new_focal / old_focal)
    return moved


def _mean_square(problem: _Problem, state: _State, focal: float) -> float:
    data = problem.data_cost(state, focal)
    usable = problem.weights > 0
    points = problem.uv.shape[1]
    return float((data[usable]).mean() / points)


def _focal_search(problem: _Problem, image_size: int, cfg: TrackConfig) -> tuple[float, list, str, _State]:
    """Coarse grid, then golden-section refinement, on the subset problem. Returns focal, curve, status, state."""
    grid = 1.0 / np.linspace(1.0 / cfg.focal_min, 1.0 / cfg.focal_max, cfg.focal_grid) * image_size
    identity = torch.zeros(problem.id_basis.shape[0], dtype=DTYPE)
    curve: list[tuple[float, float]] = []
    states: dict[float, _State] = {}
    state = _initial_state(problem, float(grid[0]), identity)
    previous_focal = float(grid[0])

    def evaluate(focal: float, start: _State, start_focal: float) -> float:
        fitted = _solve_frames(problem, _rescale_depth(start, start_focal, focal), focal, cfg.focal_iterations, True)
        score = _mean_square(problem, fitted, focal)
        curve.append((focal, score))
        states[focal] = fitted
        return score

    turn = _rotation_spread_deg(state.euler.numpy())
    if turn < cfg.min_turn_deg:
        focal = cfg.default_focal * image_size
        log.warning("focal search is degenerate: the head turns by %.2f deg (median, track.min_turn_deg %.1f), so "
                    "perspective says nothing about the focal; using the default %.0f px (track.default_focal)",
                    turn, cfg.min_turn_deg, focal)
        evaluate(focal, state, previous_focal)
        return focal, curve, "still", states[focal]

    scores = []
    for focal in grid:
        scores.append(evaluate(float(focal), state, previous_focal))
        state, previous_focal = states[float(focal)], float(focal)
    scores = np.array(scores)
    if not np.isfinite(scores).any():
        raise TrackingError("focal search: no candidate focal gave a finite fit (NaN in the optimisation); "
                            "check lms478.npy for corrupt values")
    best = int(np.nanargmin(scores))
    finite = scores[np.isfinite(scores)]
    if (finite.max() - finite.min()) <= cfg.flat_tolerance * finite.min():
        focal = cfg.default_focal * image_size
        log.warning("focal search is degenerate (scores within %.2g%% over %.0f-%.0f px); using the default "
                    "focal %.0f px (track.default_focal)", 100 * cfg.flat_tolerance,
                    grid[0], grid[-1], focal)
        nearest = float(grid[np.argmin(np.abs(grid - focal))])
        return focal, curve, "flat", _rescale_depth(states[nearest], nearest, focal)
    status = "ok"
    if best in (0, len(grid) - 1):
        status = "edge"
        log.warning("focal search: best focal %.0f px is at the edge of the grid %.0f-%.0f px; widen "
                    "track.focal_min / track.focal_max if the camera is unusual", grid[best], grid[0], grid[-1])
    # Golden section on 1 / focal between the best point's neighbours.
    low = 1.0 / grid[min(best + 1, len(grid) - 1)]
    high = 1.0 / grid[max(best - 1, 0)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    anchor = float(grid[best])
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    score_a = evaluate(1.0 / a, states[anchor], anchor)
    score_b = evaluate(1.0 / b, states[anchor], anchor)
    for _ in range(max(cfg.focal_refine_steps - 2, 0)):
        if score_a < score_b:
            high, b, score_b = b, a, score_a
            a = high - ratio * (high - low)
            score_a = evaluate(1.0 / a, states[1.0 / b], 1.0 / b)
        else:
            low, a, score_a = a, b, score_b
            b = low + ratio * (high - low)
            score_b = evaluate(1.0 / b, states[1.0 / a], 1.0 / a)
    best_focal, _ = min(curve, key=lambda item: item[1])
    return best_focal, curve, status, states[best_focal]


def _rotation_spread_deg(euler: np.ndarray) -> float:
    """Median angle (degrees) between each rotation and their mean rotation."""
    rotations = euler_to_rotation_np(euler)
    return float(np.median(rotation_angle_deg(rotations, mean_rotation(rotations)[None])))


def _fill_gaps(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linearly interpolate rows [N, D] where ``valid`` is False from the valid rows (edges: nearest)."""
    if valid.all():
        return values
    index = np.arange(len(values))
    return np.stack([np.interp(index, index[valid], values[valid, d]) for d in range(values.shape[1])], axis=1)


SILHOUETTE = frozenset(topo.FACE_OVAL) | frozenset(int(v) for v in topo.MP68[:17])
"""FaceMesh vertices on the face's outline (mediapipe's face oval and the iBUG-68 jaw line)."""


def fitted_rows(model: FaceModel, max_points: int) -> np.ndarray:
    """Model rows the tracker fits: the inner iBUG-68 vertices, then farthest-point samples of the inner face.

    Outline points are left out: they mark where the silhouette is, which
    slides over the face as the head turns, so they are not fixed points of
    the head (measured on the demo corpus: leaving them out lowers the median
    rotation error of every identity, by 0.01-0.06 deg). Farthest-point
    sampling would otherwise favour them, being on the shape's rim. A model
    with nothing but outline points keeps them all.
    """
    inner = np.array([i for i, v in enumerate(model.landmarks) if int(v) not in SILHOUETTE])
    if len(inner) == 0:
        inner = np.arange(model.n_points)
    position = {int(v): i for i, v in enumerate(model.landmarks)}
    chosen = [position[int(v)] for v in topo.MP68 if int(v) in position and int(v) not in SILHOUETTE][:max_points]
    if not chosen:
        chosen = [int(inner[0])]
    candidates = model.mean[inner]
    distance = np.linalg.norm(candidates[:, None] - model.mean[chosen][None], axis=-1).min(axis=1)
    while len(chosen) < min(max_points, len(inner)):
        farthest = int(np.argmax(distance))
        chosen.append(int(inner[farthest]))
        distance = np.minimum(distance, np.linalg.norm(candidates - candidates[farthest], axis=-1))
    return np.array(sorted(set(chosen)))


def frame_weights(points: np.ndarray, detected: np.ndarray, interpolated_weight: float) -> np.ndarray:
    """Data weight per frame: 1 detected, ``interpolated_weight`` interpolated, 0 without usable points."""
    finite = np.isfinite(points).all(axis=(1, 2))
    spread = np.where(finite, np.nan_to_num(points[..., :2]).std(axis=1).min(axis=-1), 0.0)
    usable = finite & (spread > 1.0)  # a collapsed point set (all landmarks on one spot) carries no pose
    return np.where(usable, np.where(detected, 1.0, interpolated_weight), 0.0)


@dataclass
class FocalEstimate:
    """The focal search's answer."""

    focal: float
    """Focal length in pixels."""
    curve: list[tuple[float, float]]
    """(focal, mean squared residual per point) of every candidate tried."""
    status: str
    """"ok"; "still" or "flat" (degenerate: fell back to ``default_focal``); "edge" (best at the grid's edge)."""
    identity: np.ndarray
    """[Ki] identity coefficients fitted at the chosen focal (a warm start for the full fit)."""


@contextlib.contextmanager
def _fitting(threads: int) -> Iterator[None]:
    """No autograd, and ``threads`` torch threads, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(before)


def _checked_weights(model: FaceModel, points: np.ndarray, detected: np.ndarray, cfg: TrackConfig,
                     name: str) -> np.ndarray:
    """Per-frame data weights, after refusing inputs that cannot be tracked."""
    if points.ndim != 3 or points.shape[1] < int(model.landmarks.max()) + 1 or points.shape[2] != 3:
        raise TrackingError(f"{name}: landmarks of shape {points.shape}; expected [N, 478, 3] FaceMesh points")
    if detected.shape != (len(points),):
        raise TrackingError(f"{name}: detected.npy has {detected.shape} entries for {len(points)} frames")
    weights = frame_weights(points[:, model.landmarks], detected, cfg.interpolated_weight)
    n_detected = int((weights == 1.0).sum())
    if n_detected == 0:
        raise TrackingError(f"{name}: no frame has a detected face ({len(points)} frames); check the crop and "
                            "landmarks stages' output (detected.npy is all False)")
    if n_detected < cfg.min_frames:
        raise TrackingError(f"{name}: only {n_detected} frames with a detected face; tracking needs at least "
                            f"{cfg.min_frames} (track.min_frames)")
    return weights


def estimate_focal(model: FaceModel, points: np.ndarray, detected: np.ndarray, image_size: int, cfg: TrackConfig,
                   name: str = "identity") -> FocalEstimate:
    """Focal length of one identity's camera from ``cfg.focal_frames`` frames spread over its recordings."""
    points = np.asarray(points, dtype=np.float64)
    weights = _checked_weights(model, points, np.asarray(detected, dtype=bool), cfg, name)
    detected_frames = np.flatnonzero(weights == 1.0)
    subset = detected_frames[np.unique(np.linspace(0, len(detected_frames) - 1,
                                                   min(cfg.focal_frames, len(detected_frames))).astype(int))]
    problem = _Problem(model, fitted_rows(model, cfg.max_points), points[subset], np.ones(len(subset)),
                       np.arange(len(subset)), image_size, cfg)
    with _fitting(cfg.threads):
        focal, curve, status, state = _focal_search(problem, image_size, cfg)
    log.info("%s: focal %.1f px (%.3f x image side, search %s)", name, focal, focal / image_size, status)
    return FocalEstimate(focal=focal, curve=curve, status=status, identity=state.id.numpy().astype(np.float64))


def track(model: FaceModel, points: np.ndarray, detected: np.ndarray, segment: np.ndarray, image_size: int,
          cfg: TrackConfig, name: str = "identity", focal: FocalEstimate | None = None) -> TrackResult:
    """Fit pose, expression and a shared identity to FaceMesh points [N, 478, 3] of one identity.

    ``segment`` [N] labels the recording of each frame: smoothness never
    links frames of different recordings. ``focal`` skips the focal search.
    ``name`` appears in messages.
    """
    points = np.asarray(points, dtype=np.float64)
    detected = np.asarray(detected, dtype=bool)
    weights = _checked_weights(model, points, detected, cfg, name)
    if focal is None:
        focal = estimate_focal(model, points, detected, image_size, cfg, name)
    usable = weights > 0
    problem = _Problem(model, fitted_rows(model, cfg.max_points), points, weights, segment, image_size, cfg)
    with _fitting(cfg.threads):
        state = _initial_state(problem, focal.focal, torch.as_tensor(focal.identity, dtype=DTYPE))
        state.euler = torch.as_tensor(_fill_gaps(state.euler.numpy(), usable), dtype=DTYPE)
        state.trans = torch.as_tensor(_fill_gaps(state.trans.numpy(), usable), dtype=DTYPE)
        state = _solve_frames(problem, state, focal.focal, cfg.iterations, True)
    for tensor, what in ((state.euler, "euler"), (state.trans, "trans"), (state.exp, "exp"), (state.id, "id")):
        if not torch.isfinite(tensor).all():
            raise TrackingError(f"{name}: NaN in the optimisation ({what}); the landmarks may contain corrupt "
                                "values: re-run the landmarks stage")
    result = TrackResult(id=state.id.numpy().astype(np.float64), exp=state.exp.numpy().astype(np.float64),
                         euler=state.euler.numpy().astype(np.float64), trans=state.trans.numpy().astype(np.float64),
                         focal=float(focal.focal), residual_px=np.zeros(len(points)), focal_curve=focal.curve,
                         focal_status=focal.status)
    result.residual_px = np.median(np.linalg.norm(reproject(model, result, image_size) - points[:, model.landmarks, :2],
                                                  axis=-1), axis=1)
    return result


def reproject(model: FaceModel, result: TrackResult, image_size: int) -> np.ndarray:
    """[N, P, 2] pixel positions of every model point under the tracked parameters."""
    shape = model.shape(result.id, result.exp)
    return project(shape, euler_to_rotation_np(result.euler), result.trans, result.focal, image_size / 2.0,
                   image_size / 2.0)
