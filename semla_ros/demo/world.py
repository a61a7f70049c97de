"""A procedural driving-like world with exact per-pixel labels and several visual domains.

Why: the demo has no dataset and no pretrained weights, yet it must show a real domain shift
(same kind of scene, different appearance, plus one domain whose layout differs too) with ground
truth that is exact by construction: every object is rasterised once into a mask, and that one
mask writes both the label map and the surface colour, so a label can never disagree with the
image. Weather and light (fog, rain streaks, snow flakes, glare) change pixels, never labels.

Pure numpy and deterministic: `render(domain, seed)` always returns the same arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "vegetation", "sky", "car", "person", "pole",
)
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, CAR, PERSON, POLE = range(len(CLASS_NAMES))

# Cityscapes-like colours (RGB) for colour-coded masks.
PALETTE = np.array(
    [[128, 64, 128], [244, 35, 232], [70, 70, 70], [107, 142, 35],
     [70, 130, 180], [0, 0, 142], [220, 20, 60], [153, 153, 153]],
    dtype=np.uint8,
)

DOMAINS: tuple[str, ...] = ("clear", "dusk", "night", "fog", "rain", "snow", "tunnel")
# The base model is trained on these; every other domain is a shift it never saw.
SOURCE_DOMAINS: tuple[str, ...] = ("clear",)
# A tunnel has walls and a ceiling instead of sky, facades and trees: a layout shift.
DOMAIN_LAYOUT = {d: ("tunnel" if d == "tunnel" else "street") for d in DOMAINS}

DEFAULT_SIZE = (96, 128)  # (H, W)

# Surface colours (0..1 RGB) in daylight.
_ALBEDO = np.array(
    [[0.33, 0.33, 0.35], [0.62, 0.58, 0.54], [0.55, 0.42, 0.34], [0.22, 0.45, 0.16],
     [0.45, 0.65, 0.95], [0.70, 0.10, 0.10], [0.25, 0.22, 0.45], [0.45, 0.45, 0.48]],
    dtype=np.float32,
)
_CAR_COLOURS = np.array(
    [[0.70, 0.10, 0.10], [0.10, 0.20, 0.60], [0.85, 0.85, 0.85], [0.10, 0.10, 0.12],
     [0.20, 0.45, 0.25], [0.80, 0.65, 0.15]],
    dtype=np.float32,
)
_WARM = np.array([1.0, 0.85, 0.55], np.float32)


@dataclass(frozen=True)
class Frame:
    """One rendered view: the image and its exact labels."""

    image: np.ndarray   # (H, W, 3) uint8 RGB
    labels: np.ndarray  # (H, W) uint8 class ids, indices into CLASS_NAMES
    domain: str
    seed: int


class Scene:
    """Painter's-algorithm canvas: each `paint` writes label, colour and depth through ONE mask."""

    def __init__(self, height: int, width: int, rng: np.random.Generator):
        self.h, self.w, self.rng = height, width, rng
        yy, xx = np.mgrid[0:height, 0:width]
        self.yy, self.xx = yy.astype(np.float32), xx.astype(np.float32)
        self.labels = np.full((height, width), SKY, np.uint8)
        self.albedo = np.zeros((height, width, 3), np.float32)
        self.depth = np.full((height, width), 1e3, np.float32)
        self.lights = np.zeros((height, width, 3), np.float32)  # emitters: lamps, windows, headlights
        self.lamps: list[tuple[float, float, float]] = []         # (x, y, size) of street lamps
        self.horizon = 0.0
        self.vx = 0.0

    def paint(self, mask: np.ndarray, cls: int, colour, depth) -> None:
        self.labels[mask] = cls
        self.albedo[mask] = colour if np.ndim(colour) == 1 else colour[mask]
        self.depth[mask] = depth if np.ndim(depth) == 0 else depth[mask]
        self.lights[mask] = 0.0

    def shade(self, mask: np.ndarray, colour) -> None:
        """Recolours already-painted pixels (windows, glass, lane marks); labels stay."""
        self.albedo[mask] = colour

    def emit(self, mask: np.ndarray, colour) -> None:
        self.lights[mask] = np.maximum(self.lights[mask], colour)

    def ground_depth(self) -> np.ndarray:
        return (self.h * 1.5 / np.maximum(self.yy - self.horizon, 0.5)).astype(np.float32)


def _grain(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blocky plus fine noise, for textures and snow cover."""
    gh, gw = max(2, h // 8), max(2, w // 8)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    coarse = np.repeat(np.repeat(coarse, -(-h // gh), 0), -(-w // gw), 1)[:h, :w]
    return 0.7 * coarse + 0.3 * rng.standard_normal((h, w)).astype(np.float32)


def _draw_object(sc: Scene, kind: str, s: float, x_ground: float, tunnel: bool) -> None:
    """An object standing on the ground at perspective scale s (0 far .. 1 near)."""
    rng, h = sc.rng, sc.h
    y0 = sc.horizon + s * (h - sc.horizon)
    depth = np.float32(h * 1.5 / max(y0 - sc.horizon, 0.5))
    u = s * (h - sc.horizon)  # pixels per metre-ish at that depth
    dx, dy = sc.xx - x_ground, sc.yy - y0
    if kind == "car":
        cw, ch = 1.6 * u, 0.75 * u
        body = (np.abs(dx) < cw / 2) & (dy <= 0) & (dy > -ch * 0.6)
        cabin = (dy <= -ch * 0.6) & (dy > -ch) & (np.abs(dx) < cw * 0.35 + (dy + ch * 0.6) * 0.4)
        colour = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))]
        sc.paint(body | cabin, CAR, colour, depth)
        sc.shade(cabin, colour * 0.3 + 0.1)
        lamp = body & (dy > -ch * 0.45) & (dy < -ch * 0.3) & (np.abs(np.abs(dx) - cw * 0.38) < cw * 0.08)
        sc.emit(lamp, np.array([1.0, 0.15, 0.1], np.float32))
    elif kind == "person":
        ph, pw = 0.9 * u, 0.22 * u
        body = (np.abs(dx) < pw / 2) & (dy <= 0) & (dy > -ph * 0.82)
        head = dx ** 2 + (dy + ph * 0.9) ** 2 < (ph * 0.1) ** 2
        clothes = np.array([0.95, 0.55, 0.1], np.float32) if tunnel else \
            np.clip(_ALBEDO[PERSON] * rng.uniform(0.5, 1.8, 3), 0, 1).astype(np.float32)
        sc.paint(body | head, PERSON, clothes, depth)
        sc.shade(head, np.array([0.85, 0.65, 0.5], np.float32))
    elif kind == "pole":
        ph, pw = (0.9 if tunnel else 2.2) * u, max(0.07 * u, 1.0)
        pole = (np.abs(dx) < pw / 2) & (dy <= 0) & (dy > -ph)
        sc.paint(pole, POLE, np.array([0.8, 0.75, 0.2], np.float32) if tunnel else _ALBEDO[POLE], depth)
        if not tunnel:
            sc.lamps.append((x_ground, y0 - ph, u))
    else:  # tree: trunk + crown, both vegetation
        th = 1.8 * u
        trunk = (np.abs(dx) < 0.06 * u + 0.5) & (dy <= 0) & (dy > -th * 0.6)
        crown = (dx / (0.5 * u + 1)) ** 2 + ((dy + th * 0.75) / (0.35 * u + 1)) ** 2 < 1.0
        sc.paint(trunk | crown, VEGETATION, _ALBEDO[VEGETATION] * np.float32(rng.uniform(0.7, 1.2)), depth)
        sc.shade(trunk & ~crown, np.array([0.3, 0.22, 0.12], np.float32))


def _ground(sc: Scene, road_half: float, walk: float, verge: int) -> tuple[np.ndarray, np.ndarray]:
    """Road in the middle, sidewalks beside it, `verge` class beyond; returns (road, sidewalk)."""
    rng = sc.rng
    s = np.clip((sc.yy - sc.horizon) / (sc.h - sc.horizon), 0.0, None)
    below = sc.yy > sc.horizon
    gdepth = sc.ground_depth()
    dx = np.abs(sc.xx - sc.vx)
    road = below & (dx <= road_half * s)
    side = below & ~road & (dx <= (road_half + walk) * s)
    sc.paint(below & ~road & ~side, verge, _ALBEDO[verge] * np.float32(rng.uniform(0.8, 1.1)), gdepth)
    sc.paint(road, ROAD, _ALBEDO[ROAD] + np.float32(rng.uniform(-0.04, 0.04)), gdepth)
    sc.paint(side, SIDEWALK, _ALBEDO[SIDEWALK] + np.float32(rng.uniform(-0.05, 0.05)), gdepth)
    lane = road & (dx < 0.03 * road_half * s + 0.3) & (np.sin(gdepth * 1.3) > 0.2)
    sc.shade(lane, np.array([0.85, 0.85, 0.80], np.float32))
    return road, side


def _street(sc: Scene) -> None:
    rng, h, w = sc.rng, sc.h, sc.w
    sc.horizon = h * rng.uniform(0.36, 0.46)
    sc.vx = w * rng.uniform(0.42, 0.58)
    road_half, walk = w * rng.uniform(0.42, 0.60), w * rng.uniform(0.20, 0.32)
    sky_grad = np.clip(sc.yy / max(sc.horizon, 1.0), 0, 1)[..., None]
    sc.albedo[:] = _ALBEDO[SKY] * (1.0 - 0.25 * sky_grad) + 0.2 * sky_grad
    _ground(sc, road_half, walk, VEGETATION)
    # Facades: blocks of buildings (or a park) along each side, tops converging to the horizon.
    outer = road_half + walk
    col_s = np.clip(np.abs(sc.xx - sc.vx) / outer, 1e-3, None)   # perspective scale of a column
    base_row = sc.horizon + col_s * (h - sc.horizon)
    wdepth = (h * 1.5 / np.maximum(base_row - sc.horizon, 0.5)).astype(np.float32)
    above_base = sc.yy < base_row
    for sign in (-1.0, 1.0):
        side_cols = (sc.xx - sc.vx) * sign > 0
        cuts = np.sort(rng.uniform(0.05, 1.0, int(rng.integers(1, 4))))
        bounds = np.concatenate([[0.02], cuts, [1e9]])
        for a, b in pairwise(bounds):
            block = side_cols & (col_s >= a) & (col_s < b) & above_base
            top_row = sc.horizon - col_s * (h - sc.horizon) * rng.uniform(0.8, 2.6)
            if rng.uniform() < 0.25:  # a park
                crown = block & (sc.yy > top_row * 0.6 + sc.horizon * 0.4) & (_grain(rng, h, w) > -0.8)
                sc.paint(crown, VEGETATION, _ALBEDO[VEGETATION] * np.float32(rng.uniform(0.7, 1.2)), wdepth)
                continue
            wall = block & (sc.yy >= top_row)
            colour = np.clip(_ALBEDO[BUILDING] * rng.uniform(0.6, 1.4, 3), 0, 1).astype(np.float32)
            sc.paint(wall, BUILDING, colour, wdepth)
            period = np.maximum(6.0 * col_s, 2.0)
            win = wall & (np.mod(sc.xx, period * 2) < period) & (np.mod(sc.yy, period * 2) < period)
            sc.shade(win, colour * 0.45)
            sc.emit(win & (rng.uniform(size=(h, w)) < 0.08), _WARM)
    objs = [("car", rng.uniform(0.15, 0.95), rng.uniform(-0.7, 0.7)) for _ in range(rng.integers(1, 4))]
    for kind, n, (lo, hi) in (("person", rng.integers(1, 4), (0.3, 0.8)),
                              ("pole", rng.integers(1, 4), (0.1, 0.1)),
                              ("tree", rng.integers(0, 3), (0.6, 0.6))):
        for _ in range(n):
            lateral = (road_half + walk * rng.uniform(lo, hi)) / road_half * rng.choice([-1.0, 1.0])
            objs.append((kind, rng.uniform(0.1, 0.95), lateral))
    for kind, s, lateral in sorted(objs, key=lambda o: o[1]):  # far to near: near occludes far
        _draw_object(sc, kind, s, sc.vx + lateral * road_half * s, tunnel=False)


def _tunnel(sc: Scene) -> None:
    rng, h, w = sc.rng, sc.h, sc.w
    sc.horizon = h * rng.uniform(0.40, 0.48)
    sc.vx = w * rng.uniform(0.44, 0.56)
    road_half, walk = w * rng.uniform(0.38, 0.50), w * rng.uniform(0.06, 0.10)
    # Walls and ceiling are structure (building); the far exit is a small bright portal (sky).
    ring = np.maximum(np.abs(sc.xx - sc.vx) / (road_half + walk),
                      np.abs(sc.yy - sc.horizon) / (h - sc.horizon) * 1.1)
    tdepth = (h * 1.5 / np.maximum(ring * (h - sc.horizon), 0.5)).astype(np.float32)
    sc.paint(np.ones((h, w), bool), BUILDING, np.array([0.5, 0.48, 0.44], np.float32), tdepth)
    sc.shade(np.mod(tdepth * 2.0, 2.0) < 1.0, np.array([0.4, 0.38, 0.35], np.float32))
    ceiling = (sc.yy < sc.horizon) & (np.abs(sc.xx - sc.vx) < 0.12 * (sc.horizon - sc.yy) + 0.5)
    sc.emit(ceiling & (np.mod(tdepth * 0.7, 1.0) < 0.45), np.array([1.0, 0.75, 0.35], np.float32))
    portal = (ring < rng.uniform(0.05, 0.09)) & (sc.yy <= sc.horizon)
    sc.paint(portal, SKY, np.array([0.95, 0.95, 0.9], np.float32), 1e3)
    sc.emit(portal, np.array([1.0, 1.0, 0.95], np.float32))
    road, side = _ground(sc, road_half, walk, BUILDING)
    lane = road_half * 0.5 * np.clip((sc.yy - sc.horizon) / (h - sc.horizon), 0, 1)
    sc.shade(road & (np.abs(np.abs(sc.xx - sc.vx) - lane) < 0.6),
             np.array([0.9, 0.8, 0.3], np.float32))
    objs = [("car", rng.uniform(0.15, 0.95), rng.uniform(-0.6, 0.6)) for _ in range(rng.integers(1, 4))]
    for kind, p in (("person", 0.5), ("pole", 0.8)):
        if rng.uniform() < p:
            objs.append((kind, rng.uniform(0.3, 0.9), rng.choice([-1.0, 1.0]) * (road_half + walk * 0.5) / road_half))
    for kind, s, lateral in sorted(objs, key=lambda o: o[1]):
        _draw_object(sc, kind, s, sc.vx + lateral * road_half * s, tunnel=True)


def _glow(sc: Scene, strength: float) -> np.ndarray:
    """Light pools of street lamps, for dark domains."""
    out = np.zeros((sc.h, sc.w, 3), np.float32)
    for x, y, u in sc.lamps:
        r2 = ((sc.xx - x) ** 2 + (sc.yy - y) ** 2) / (1.0 + (0.6 * u) ** 2)
        out += (strength * np.exp(-r2))[..., None] * _WARM
    return out


def _appearance(sc: Scene, domain: str) -> np.ndarray:
    """Turns surface colours into an image under the domain's light and weather (labels untouched)."""
    rng, h, w = sc.rng, sc.h, sc.w
    lab = sc.labels
    col = sc.albedo * (1.0 + 0.07 * _grain(rng, h, w))[..., None]
    sky = lab == SKY
    grad = np.clip(sc.yy / max(sc.horizon, 1.0), 0, 1)[..., None]
    if domain == "clear":
        img = col * 1.05
    elif domain == "dusk":
        sky_col = (1 - grad) * np.array([0.35, 0.25, 0.55], np.float32) + grad * np.array([1.0, 0.55, 0.25], np.float32)
        img = col * np.array([0.75, 0.5, 0.4], np.float32)
        img[sky] = sky_col[sky]
        img += 0.5 * sc.lights + _glow(sc, 0.3)
    elif domain == "night":
        img = col * np.array([0.10, 0.11, 0.16], np.float32)
        img[sky] = (np.array([0.02, 0.03, 0.08], np.float32) * (1.5 - grad))[sky]
        img += 0.9 * sc.lights + _glow(sc, 0.55)
        img += 0.02 * rng.standard_normal((h, w, 1)).astype(np.float32)
    elif domain == "fog":
        t = np.exp(-sc.depth / 7.0)[..., None]
        img = col * 0.9 * t + np.float32(0.78) * (1.0 - t)
    elif domain == "rain":
        grey = col.mean(axis=2, keepdims=True)
        img = (0.45 * col + 0.55 * grey) * 0.6
        img[sky] = 0.55 + 0.05 * grad[sky]
        wet = (lab == ROAD) | (lab == SIDEWALK)
        # Reflections: the scene mirrored about the horizon shows faintly on wet ground.
        rows = np.clip((2 * sc.horizon - sc.yy).astype(int), 0, h - 1)
        img[wet] += 0.25 * img[rows, sc.xx.astype(int)][wet]
        streaks = np.zeros((h, w), np.float32)
        for _ in range(int(h * w / 60)):
            x, y, n = rng.integers(0, w), rng.integers(0, h), rng.integers(3, 8)
            ys, xs = np.clip(y + np.arange(n), 0, h - 1), np.clip(x + np.arange(n) // 3, 0, w - 1)
            streaks[ys, xs] = 0.35
        img = img + streaks[..., None]
    elif domain == "snow":
        cover = ((lab == ROAD) | (lab == SIDEWALK) | (lab == VEGETATION)) & ~sky
        snowy = np.clip(0.85 + 0.08 * _grain(rng, h, w), 0, 1)[..., None] * np.array([0.93, 0.95, 1.0], np.float32)
        below = np.clip(sc.yy - sc.horizon, 0, None)
        tracks = (lab == ROAD) & (np.abs(np.abs(sc.xx - sc.vx) - 0.3 * below) < 0.06 * below + 0.5)
        img = col * np.array([0.8, 0.85, 0.95], np.float32)
        mix = np.where(tracks, 0.35, 0.8).astype(np.float32)[..., None]
        img[cover] = (mix * snowy + (1 - mix) * img)[cover]
        # Overcast snow sky: a darker blue-grey than fog's airlight, so the two stay apart.
        img[sky] = (np.array([0.56, 0.60, 0.68], np.float32) + 0.08 * grad)[sky]
        flakes = rng.uniform(size=(h, w)) < 0.04
        img[flakes] = 0.97
    elif domain == "tunnel":
        img = col * np.array([0.75, 0.55, 0.3], np.float32) + 0.8 * sc.lights
    else:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render(domain: str, seed: int, size: tuple[int, int] = DEFAULT_SIZE) -> Frame:
    """Renders one view of `domain`; the same (domain, seed, size) always gives the same frame."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    h, w = int(size[0]), int(size[1])
    if h < 16 or w < 16:
        raise ValueError(f"size {size} too small: need at least 16x16")
    sc = render_layout(domain, seed, (h, w))
    # Weather draws from its own stream, so one street seed looks the same under every sky.
    sc.rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 1 + DOMAINS.index(domain)])
    return Frame(image=_appearance(sc, domain), labels=sc.labels.copy(), domain=domain, seed=int(seed))


def render_layout(domain: str, seed: int, size: tuple[int, int] = DEFAULT_SIZE) -> Scene:
    """The painted scene before light and weather (labels, surface colours, depth).

    The layout depends on the seed and the domain's layout kind only: the same seed gives the
    same street in clear, fog or snow."""
    layout = DOMAIN_LAYOUT[domain]
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0, 1 if layout == "tunnel" else 0])
    sc = Scene(int(size[0]), int(size[1]), rng)
    (_tunnel if layout == "tunnel" else _street)(sc)
    return sc


def colorize(labels: np.ndarray) -> np.ndarray:
    """Class ids -> RGB using PALETTE (ids outside the palette are black)."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(PALETTE)] = PALETTE
    return lut[labels.astype(np.intp)]


def dataset(domain: str, seeds, size: tuple[int, int] = DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Stacks frames for training/eval: images (N,H,W,3) uint8, labels (N,H,W) uint8."""
    frames = [render(domain, s, size) for s in seeds]
    return np.stack([f.image for f in frames]), np.stack([f.labels for f in frames])
