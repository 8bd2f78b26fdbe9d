"""Neural components shared by the four methods, each with a pure-PyTorch path that runs on a CPU.

Fast GPU libraries are used where present, behind the same call and one option:
hash grids ``backend="torch" | "tcnn" | "auto"``, Gaussian rasterisation
``backend="torch" | "gsplat" | "auto"``. See docs/COMPONENTS.md.
"""

from talkhead_models.components.audio import AudioAttNet, AudioNet, TemporalSmoother
from talkhead_models.components.densify import (
    DensificationConfig,
    DensificationReport,
    DensificationState,
    DensificationStrategy,
)
from talkhead_models.components.encodings import FrequencyEncoding
from talkhead_models.components.gaussians import (
    RasterOutput,
    RasterSettings,
    opengl_c2w_to_viewmat,
    rasterize_gaussians,
)
from talkhead_models.components.hashgrid import (
    HashGridConfig,
    HashGridEncoding,
    LandmarkHashEncoder,
    TriPlaneConfig,
    TriPlaneHashGrid,
    progressive_level_count,
)
from talkhead_models.components.mlp import MLP, AffineConditionedMLP
from talkhead_models.components.occupancy import OccupancyGrid, OccupancyGridConfig, composite_marched
from talkhead_models.components.rays import RayBundle, get_rays, intersect_aabb, sample_patch, sample_pixels
from talkhead_models.components.volume import (
    RenderResult,
    composite,
    render_hierarchical,
    render_rays,
    sample_importance,
    sample_stratified,
)

__all__ = [
    "AffineConditionedMLP",
    "AudioAttNet",
    "AudioNet",
    "DensificationConfig",
    "DensificationReport",
    "DensificationState",
    "DensificationStrategy",
    "FrequencyEncoding",
    "HashGridConfig",
    "HashGridEncoding",
    "LandmarkHashEncoder",
    "MLP",
    "OccupancyGrid",
    "OccupancyGridConfig",
    "RasterOutput",
    "RasterSettings",
    "RayBundle",
    "RenderResult",
    "TemporalSmoother",
    "TriPlaneConfig",
    "TriPlaneHashGrid",
    "composite",
    "composite_marched",
    "get_rays",
    "intersect_aabb",
    "opengl_c2w_to_viewmat",
    "progressive_level_count",
    "rasterize_gaussians",
    "render_hierarchical",
    "render_rays",
    "sample_importance",
    "sample_patch",
    "sample_pixels",
    "sample_stratified",
]
