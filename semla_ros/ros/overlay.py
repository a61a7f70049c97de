"""Colour overlay of a class-id mask on the input frame (visualisation only).

Why a fixed palette: the same class keeps the same colour across frames, runs and vocabulary
edits that append classes. The first 19 colours are Cityscapes', the rest are spread by a
golden-ratio hue walk so neighbouring ids never look alike.
"""
from __future__ import annotations

import colorsys

import numpy as np

_CITYSCAPES = [
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
]


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 RGB colours."""
    colours = list(_CITYSCAPES[:num_classes])
    hue = 0.0
    while len(colours) < num_classes:
        hue = (hue + 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return np.array(colours, dtype=np.uint8).reshape(num_classes, 3)


def blend(image_rgb: np.ndarray, class_ids: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """alpha * class colour + (1 - alpha) * image, as uint8 RGB."""
    coloured = colours[np.clip(class_ids, 0, len(colours) - 1)].astype(np.float32)
    mixed = alpha * coloured + (1.0 - alpha) * image_rgb.astype(np.float32)
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
