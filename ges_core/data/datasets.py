"""Stereo datasets. Every sample is a dict of numpy arrays:

    left, right   (H, W, 3) uint8 RGB
    disparity     (H, W) float32, left view, x_right = x_left - d
    valid         (H, W) bool
    (optional) nonocc (H, W) bool, name str

Readers validate their folder on construction and name the missing path or the bad file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from .augment import AugmentConfig, augment
from .io import cached_npz, read_disparity, read_image, read_mask
from .photo_stereo import PhotoStereoConfig, render_photo_pair
from .procedural import ProceduralConfig, render_pair, supervised
from .proxy_stereo import ProxyStereoConfig, render_proxy_pair
from .teacher_stereo import TeacherStereoConfig, render_teacher_pair

Sample = Dict[str, object]


class StereoDataset:
    """A list of (left, right, disparity[, nonocc mask]) files read on demand."""

    def __init__(self, entries: Sequence[Tuple[str, ...]], *, disparity_reader: Callable[[str], Tuple[np.ndarray, np.ndarray]],
                 names: Optional[Sequence[str]] = None, augment_cfg: Optional[AugmentConfig] = None, seed: int = 0) -> None:
        self.entries = list(entries)
        self.read_disp = disparity_reader
        self.names = list(names) if names is not None else [os.path.basename(os.path.dirname(e[0])) for e in entries]
        self.augment_cfg = augment_cfg
        self.seed = seed

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Sample:
        entry = self.entries[index]
        left, right = read_image(entry[0]), read_image(entry[1])
        if left.shape != right.shape:
            raise ValueError(f"{entry[0]} is {left.shape[:2]} but {entry[1]} is {right.shape[:2]}")
        disp, valid = self.read_disp(entry[2])
        if disp.shape != left.shape[:2]:
            raise ValueError(f"{entry[2]}: disparity is {disp.shape}, image {entry[0]} is {left.shape[:2]}")
        sample: Sample = {"left": left, "right": right, "disparity": disp, "valid": valid, "name": self.names[index]}
        if len(entry) > 3 and entry[3]:
            sample["nonocc"] = read_mask(entry[3]) & valid
        if self.augment_cfg is not None:
            rng = np.random.default_rng([self.seed, index])
            sample["left"], sample["right"], sample["disparity"], sample["valid"] = augment(
                left, right, disp, valid, rng, self.augment_cfg)
            sample.pop("nonocc", None)
        return sample


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _first(folder: Path, stems: Sequence[str]) -> Optional[Path]:
    for stem in stems:
        hits = sorted(folder.glob(stem))
        if hits:
            return hits[0]
    return None


# ----------------------------------------------------------------------------- readers
def folder_dataset(root: str, **kw) -> StereoDataset:
    """Scene folders (the layout of ../shared/data/stereo and for users' own data):
    each scene has left.*, right.*, disp_left.* and a meta.json with disparity_divisor and invalid_value."""
    from .io import read_scene_disparity
    root_p = _require(Path(root), "dataset folder")
    scenes = sorted({p.parent for p in root_p.rglob("left.*")})
    if not scenes:
        raise FileNotFoundError(f"no scene folders (with left.*) under {root_p}")
    entries, names = [], []
    for scene in scenes:
        left = _first(scene, ["left.png", "left.jpg", "left.*"])
        right = _first(scene, ["right.png", "right.jpg", "right.*"])
        disp = _first(scene, ["disp_left.*"])
        for p, what in ((right, "right image"), (disp, "disp_left.* ground truth")):
            if p is None:
                raise FileNotFoundError(f"{what} missing in scene folder {scene}")
        _require(scene / "meta.json", "meta.json")
        entries.append((str(left), str(right), str(disp)))
        names.append(str(scene.relative_to(root_p)))
    return StereoDataset(entries, disparity_reader=read_scene_disparity, names=names, **kw)


def sceneflow_dataset(root: str, *, split: str = "TRAIN", pass_: str = "frames_cleanpass", **kw) -> StereoDataset:
    """FlyingThings3D / Monkaa / Driving: <root>/<pass>/.../left/*.png with <root>/disparity/.../left/*.pfm."""
    root_p = _require(Path(root), "SceneFlow root")
    _require(root_p / pass_, f"SceneFlow {pass_} folder")
    lefts = sorted(p for p in (root_p / pass_).rglob("left/*.png") if split.upper() in str(p).upper() or split == "all")
    if not lefts:
        lefts = sorted((root_p / pass_).rglob("left/*.png"))
    if not lefts:
        raise FileNotFoundError(f"no left/*.png under {root_p / pass_}")
    entries = []
    for left in lefts:
        rel = left.relative_to(root_p / pass_)
        right = root_p / pass_ / str(rel).replace("left", "right", 1)
        disp = (root_p / "disparity" / rel).with_suffix(".pfm")
        entries.append((str(left), str(_require(right, "right image")), str(_require(disp, "disparity PFM"))))
    return StereoDataset(entries, disparity_reader=lambda p: _dense(read_disparity(p)), **kw)


def _dense(d: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    valid = np.isfinite(d) & (d >= 0)
    return np.where(valid, d, 0).astype(np.float32), valid


def _png256(path: str) -> Tuple[np.ndarray, np.ndarray]:
    from .io import read_png_disparity
    return read_png_disparity(path, divisor=256.0, invalid=0)


def kitti_dataset(root: str, *, occ: bool = True, **kw) -> StereoDataset:
    """KITTI 2012 (colored_0/1, disp_occ) or 2015 (image_2/3, disp_occ_0)."""
    root_p = _require(Path(root), "KITTI root")
    for left_dir, right_dir, disp_dir in (("colored_0", "colored_1", "disp_occ" if occ else "disp_noc"),
                                          ("image_2", "image_3", "disp_occ_0" if occ else "disp_noc_0")):
        if (root_p / left_dir).is_dir():
            break
    else:
        raise FileNotFoundError(f"neither {root_p / 'colored_0'} (KITTI 2012) nor {root_p / 'image_2'} (KITTI 2015) exists")
    _require(root_p / disp_dir, "KITTI disparity folder")
    entries, names = [], []
    for disp in sorted((root_p / disp_dir).glob("*.png")):
        left = root_p / left_dir / disp.name
        entries.append((str(_require(left, "left image")), str(_require(root_p / right_dir / disp.name, "right image")), str(disp)))
        names.append(disp.stem)
    if not entries:
        raise FileNotFoundError(f"no disparity PNGs in {root_p / disp_dir}")
    return StereoDataset(entries, disparity_reader=_png256, names=names, **kw)


def middlebury_dataset(root: str, **kw) -> StereoDataset:
    """Middlebury 2014 / MiddEval3 and ETH3D two-view: <scene>/im0.png, im1.png, disp0GT.pfm (inf = invalid),
    optional mask0nocc.png (255 = non-occluded)."""
    root_p = _require(Path(root), "Middlebury/ETH3D root")
    scenes = sorted({p.parent for p in root_p.rglob("im0.png")})
    if not scenes:
        raise FileNotFoundError(f"no im0.png scene folders under {root_p}")
    entries, names = [], []
    for s in scenes:
        gt = _first(s, ["disp0GT.pfm", "disp0.pfm"])
        if gt is None:
            raise FileNotFoundError(f"disp0GT.pfm missing in {s}")
        mask = s / "mask0nocc.png"
        entries.append((str(s / "im0.png"), str(_require(s / "im1.png", "im1.png")), str(gt),
                        str(mask) if mask.exists() else ""))
        names.append(s.name)
    return StereoDataset(entries, disparity_reader=lambda p: _dense(read_disparity(p)), names=names, **kw)


def argoverse_dataset(root: str, *, split: str = "val", **kw) -> StereoDataset:
    """Argoverse 1 stereo v1.1: rectified_stereo_images_v1.1/<split>/<log>/stereo_front_{left,right}_rect/*.jpg
    and disparity_maps_v1.1/<split>/<log>/stereo_front_left_rect_disparity/*.png (uint16/256, 0 invalid)."""
    root_p = _require(Path(root), "Argoverse root")
    img_root = _require(root_p / "rectified_stereo_images_v1.1" / split, "Argoverse image split")
    disp_root = _require(root_p / "disparity_maps_v1.1" / split, "Argoverse disparity split")
    entries, names = [], []
    for disp in sorted(disp_root.glob("*/stereo_front_left_rect_disparity/*.png")):
        log = disp.parent.parent.name
        # disparity_<stamp>.png <-> stereo_front_left_rect_<stamp>.jpg
        stamp = disp.stem.split("_")[-1]
        left = img_root / log / "stereo_front_left_rect" / f"stereo_front_left_rect_{stamp}.jpg"
        right = img_root / log / "stereo_front_right_rect" / f"stereo_front_right_rect_{stamp}.jpg"
        entries.append((str(_require(left, "left image")), str(_require(right, "right image")), str(disp)))
        names.append(f"{log}/{stamp}")
    if not entries:
        raise FileNotFoundError(f"no disparity maps under {disp_root}")
    return StereoDataset(entries, disparity_reader=_png256, names=names, **kw)


def carla_dataset(root: str, **kw) -> StereoDataset:
    """CARLA-style driving captures in a KITTI-like layout (image_2/image_3/disp_occ_0)."""
    return kitti_dataset(root, **kw)


# ----------------------------------------------------------------------------- procedural
@dataclass
class GeneratedDataset:
    """Infinite on-the-fly pairs from a renderer (rng, config) -> (left, right, disparity, supervised); sample i is a
    pure function of (seed, i), so a resumed run sees exactly the data it would have seen."""
    render: object
    augment_cfg: Optional[AugmentConfig] = None
    seed: int = 0
    length: int = 10 ** 9
    renderer: Callable = staticmethod(render_pair)
    kind: str = "generated"
    sparse_labels: bool = False   # labels only where a matcher or teacher was sure: a photometric loss may fill in

    pool: int = 0                 # > 0: sample i shows one of `pool` scenes, drawn from (seed, i), with augmentation
                                  # of its own; each scene is rendered once and kept in cache_dir
    cache_dir: Optional[str] = None
    rendered: int = field(default=0, init=False, repr=False)   # pool scenes rendered here (not found in the cache)

    def __post_init__(self) -> None:
        if self.pool < 0 or (self.pool > 0 and not self.cache_dir):
            raise ValueError(f"a {self.kind} pool needs pool >= 1 scenes and a cache folder, got pool={self.pool}, "
                             f"cache_dir={self.cache_dir!r}")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        if self.pool:
            left, right, disp, valid = self.scene(self.scene_of(index))
            rng = np.random.default_rng([self.seed, index, 1])
        else:
            rng = np.random.default_rng([self.seed, index])
            left, right, disp, valid = self.renderer(rng, self.render)
        if self.augment_cfg is not None:
            left, right, disp, valid = augment(left, right, disp, valid, rng, self.augment_cfg)
            valid = supervised(valid, disp, self.render)
        sample: Sample = {"left": left, "right": right, "disparity": disp, "valid": valid, "name": f"{self.kind}_{index}"}
        if self.sparse_labels:
            sample["sparse_labels"] = True
        max_error = getattr(self.render, "max_error", None)   # a loss clamp for labels that may be grossly wrong
        if max_error is not None:
            sample["max_error"] = float(max_error)
        return sample

    def scene_of(self, index: int) -> int:
        """The pool's scene that sample `index` shows."""
        return int(np.random.default_rng([self.seed, index, 2]).integers(self.pool))

    def scene(self, scene: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Scene `scene` of the pool (rendered from (seed, scene)), read from the cache folder, or rendered and written
        there (atomically: a run interrupted mid-write leaves no partial scene; an unreadable file is rendered anew)."""
        path = Path(self.cache_dir) / f"{self.kind}-{self._digest}" / f"{scene:07d}.npz"

        def render():
            return dict(zip(("left", "right", "disparity", "valid"),
                            self.renderer(np.random.default_rng([self.seed, scene]), self.render)))
        arrays, computed = cached_npz(path, render)
        self.rendered += computed
        return arrays["left"], arrays["right"], arrays["disparity"], arrays["valid"]

    @cached_property
    def _digest(self) -> str:
        """What the pool's renders depend on: the renderer's settings, the seed, and the code of its renderer and of
        the renderer every generator shares (a change to either starts new pools)."""
        import hashlib
        import inspect
        from . import procedural
        renderer = inspect.getmodule(getattr(self.renderer, "__func__", self.renderer))
        h = hashlib.sha1(repr((self.kind, self.render, self.seed)).encode())
        for module in sorted({renderer, procedural}, key=lambda m: m.__name__):
            h.update(inspect.getsource(module).encode())
        return h.hexdigest()[:12]


def render_pools(dataset, indices) -> Dict[str, Tuple[int, float]]:
    """Render (into the render cache) the pool scenes that these sample indices show, as their first draws would;
    -> per source kind, the scenes rendered and the seconds they took. Sources without a pool are left alone."""
    import time
    done: Dict[str, Tuple[int, float]] = {}
    for i in indices:
        part = dataset.parts[dataset.source_of(i)] if isinstance(dataset, MixtureDataset) else dataset
        if getattr(part, "pool", 0):
            before, t = part.rendered, time.perf_counter()
            part.scene(part.scene_of(i))
            if part.rendered > before:
                n, secs = done.get(part.kind, (0, 0.0))
                done[part.kind] = (n + 1, secs + time.perf_counter() - t)
    return done


def ProceduralDataset(render: Optional[ProceduralConfig] = None, **kw) -> GeneratedDataset:
    """Layered synthetic scenes (`procedural`)."""
    return GeneratedDataset(render or ProceduralConfig(), renderer=render_pair, kind="procedural", **kw)


def PhotoStereoDataset(render: Optional[PhotoStereoConfig] = None, **kw) -> GeneratedDataset:
    """Pairs from single photographs (`photo_stereo`)."""
    return GeneratedDataset(render or PhotoStereoConfig(), renderer=render_photo_pair, kind="photo", **kw)


def ProxyStereoDataset(render: Optional[ProxyStereoConfig] = None, **kw) -> GeneratedDataset:
    """Crops of real unlabeled pairs with left-right consistent SGBM labels (`proxy_stereo`)."""
    return GeneratedDataset(render or ProxyStereoConfig(), renderer=render_proxy_pair, kind="proxy",
                            sparse_labels=True, **kw)


def TeacherStereoDataset(render: Optional[TeacherStereoConfig] = None, **kw) -> GeneratedDataset:
    """Crops of real unlabeled pairs with GES's own filtered labels (`teacher_stereo`, made by `ges pseudo-label`)."""
    return GeneratedDataset(render or TeacherStereoConfig(), renderer=render_teacher_pair, kind="teacher",
                            sparse_labels=True, **kw)


@dataclass
class MixtureDataset:
    """Infinite generators mixed by weight: sample i draws its source from (seed, i), so the stream is as
    reproducible as its parts. The sources must produce samples of one size (a batch stacks them)."""
    parts: Sequence[object]
    weights: Sequence[float]
    seed: int = 0
    length: int = 10 ** 9

    def __post_init__(self) -> None:
        if len(self.parts) != len(self.weights) or not self.parts:
            raise ValueError(f"a mixture needs one weight per source, got {len(self.parts)} sources and "
                             f"{len(self.weights)} weights")
        w = np.asarray(self.weights, np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"mixture weights must be >= 0 with a positive sum, got {list(self.weights)}")
        self._p = w / w.sum()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        return self.parts[self.source_of(index)][index]

    def source_of(self, index: int) -> int:
        """Which part sample `index` comes from."""
        return int(np.random.default_rng([self.seed, index, 7]).choice(len(self.parts), p=self._p))


class MotorcycleDataset:
    """The Middlebury 2014 motorcycle pair shipped with scikit-image (quarter size; GT inf = unknown).
    Evaluation only: never a training source."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Sample:
        if index != 0:
            raise IndexError(index)
        try:
            from skimage.data import stereo_motorcycle
        except ImportError:
            raise FileNotFoundError("the motorcycle pair ships with scikit-image: pip install scikit-image") from None
        left, right, disp = stereo_motorcycle()
        valid = np.isfinite(disp) & (disp > 0)
        return {"left": left, "right": right, "disparity": np.where(valid, disp, 0).astype(np.float32),
                "valid": valid, "name": "middlebury2014/motorcycle (scikit-image)"}


READERS: Dict[str, Callable[..., StereoDataset]] = {
    "folder": folder_dataset,
    "sceneflow": sceneflow_dataset,
    "kitti": kitti_dataset,
    "middlebury": middlebury_dataset,
    "eth3d": middlebury_dataset,
    "argoverse": argoverse_dataset,
    "carla": carla_dataset,
}


def build_dataset(name: str, root: Optional[str] = None, **kw):
    if name == "procedural":
        return ProceduralDataset(**kw)
    if name == "motorcycle":
        return MotorcycleDataset()
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}; valid: {sorted([*READERS, 'procedural', 'motorcycle'])}")
    if root is None:
        raise ValueError(f"dataset {name!r} needs a root folder")
    return READERS[name](root, **kw)
