"""Explicit dimensions of a CAT-Seg network, so one code path serves tiny test models, ViT-B and ViT-L.

The official code derives several constants from the CLIP name (heads = width // 64, tap blocks [3, 7] / [7, 15],
upsampler inputs 768 / 1024, CLIP input 384 / 336). Here every one of them is a field, so nothing is guessed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

OPENAI_CLIP_MEAN_255 = (122.7709383, 116.7460125, 104.09373615)
OPENAI_CLIP_STD_255 = (68.5005327, 66.6321579, 70.3231630)
OFFICIAL_PROMPT_TEMPLATE = "A photo of a {} in the scene"


def _int_pair(values: Any, what: str) -> tuple[int, int]:
    """Two ints from a fixture's list, or a clear error naming the field."""
    items = tuple(int(v) for v in values)
    if len(items) != 2:
        raise ValueError(f"{what} needs exactly 2 values, got {items}")
    return items[0], items[1]


def _float_triple(values: Any, what: str) -> tuple[float, float, float]:
    """Three floats (one per RGB channel) from a fixture's list, or a clear error naming the field."""
    items = tuple(float(v) for v in values)
    if len(items) != 3:
        raise ValueError(f"{what} needs exactly 3 values, got {items}")
    return items[0], items[1], items[2]


@dataclass(frozen=True)
class VisionConfig:
    """CLIP ViT image tower. `pretrain_resolution` sets the stored positional-embedding grid."""

    width: int
    layers: int
    heads: int
    patch_size: int
    pretrain_resolution: int
    tap_blocks: tuple[int, ...]  # 0-based blocks whose outputs guide the decoder (upsample1, upsample2)
    mlp_ratio: int = 4

    @property
    def pretrain_grid(self) -> int:
        return self.pretrain_resolution // self.patch_size


@dataclass(frozen=True)
class TextConfig:
    """CLIP text tower (causal transformer over BPE tokens)."""

    width: int
    layers: int
    heads: int
    context_length: int = 77
    vocab_size: int = 49408
    mlp_ratio: int = 4


@dataclass(frozen=True)
class AggregatorConfig:
    """Cost aggregation (Swin spatial + linear class attention) and the upsampling decoder."""

    hidden_dim: int = 128
    num_heads: int = 4
    num_layers: int = 2
    window_size: int = 12
    pooling_size: tuple[int, int] = (1, 1)  # SemLA eval and LoRA training; upstream CAT-Seg trains with (2, 2)
    feature_resolution: tuple[int, int] = (24, 24)
    pad_len: int = 256
    attention_type: str = "linear"
    text_guidance_proj_dim: int = 128
    appearance_guidance_proj_dim: int = 128
    decoder_dims: tuple[int, int] = (64, 32)
    decoder_guidance_dims: tuple[int, int] = (256, 128)  # also the upsample1/upsample2 output channels
    decoder_guidance_proj_dims: tuple[int, int] = (32, 16)
    prompt_channel: int = 1
    swin_mlp_ratio: int = 4
    class_mlp_ratio: int = 4


@dataclass(frozen=True)
class InferenceConfig:
    """Pre/post-processing constants of the two official inference paths."""

    clip_resolution: int = 384  # 384 for the ViT-B/16 branch, 336 otherwise
    size_divisibility: int = 32
    pixel_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN_255
    pixel_std: tuple[float, float, float] = OPENAI_CLIP_STD_255
    sliding_kernel: int = 384
    sliding_overlap: float = 0.333
    sliding_out_res: tuple[int, int] = (640, 640)

    @property
    def sliding_stride(self) -> int:
        return int(self.sliding_kernel * (1 - self.sliding_overlap))


@dataclass(frozen=True)
class CatSegConfig:
    """The whole network. `embed_dim` is the CLIP joint space (text and appearance guidance dim)."""

    name: str
    embed_dim: int
    vision: VisionConfig
    text: TextConfig
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    prompt_template: str = OFFICIAL_PROMPT_TEMPLATE

    def __post_init__(self) -> None:
        problems = []
        if self.vision.width % self.vision.heads:
            problems.append(f"vision width {self.vision.width} not divisible by heads {self.vision.heads}")
        if self.text.width % self.text.heads:
            problems.append(f"text width {self.text.width} not divisible by heads {self.text.heads}")
        if self.aggregator.hidden_dim % self.aggregator.num_heads:
            problems.append("aggregator hidden_dim not divisible by num_heads")
        agg = self.aggregator
        if agg.hidden_dim <= agg.decoder_guidance_proj_dims[0] or \
                agg.decoder_dims[0] <= agg.decoder_guidance_proj_dims[1]:
            problems.append("each decoder stage's input channels must exceed its guidance channels "
                            f"(hidden {agg.hidden_dim}, decoder_dims {agg.decoder_dims}, "
                            f"guidance proj {agg.decoder_guidance_proj_dims})")
        if len(self.vision.tap_blocks) != 2:
            problems.append(f"need exactly 2 guidance tap blocks, got {self.vision.tap_blocks}")
        elif max(self.vision.tap_blocks) >= self.vision.layers - 1:
            problems.append("a guidance tap cannot sit on the last (dense) visual block")
        grid = self.inference.clip_resolution // self.vision.patch_size
        if (grid, grid) != tuple(self.aggregator.feature_resolution):
            problems.append(f"CLIP grid {grid}x{grid} != aggregator feature_resolution "
                            f"{self.aggregator.feature_resolution}")
        if self.aggregator.attention_type not in ("linear", "full"):
            problems.append(f"attention_type must be 'linear' or 'full', got {self.aggregator.attention_type!r}")
        if "{}" not in self.prompt_template:
            problems.append(f"prompt_template needs a '{{}}' slot: {self.prompt_template!r}")
        if problems:
            raise ValueError("invalid CatSegConfig: " + "; ".join(problems))

    @property
    def output_resolution(self) -> tuple[int, int]:
        """Logit map size: the decoder upsamples the feature grid 4x (96x96 for a 24x24 grid)."""
        h, w = self.aggregator.feature_resolution
        return 4 * h, 4 * w

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists); `from_dict` inverts it exactly."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CatSegConfig":
        """Inverse of `to_dict` (a model's config saved as JSON next to its weights)."""
        def section(kind, values):
            known = {f.name for f in dataclasses.fields(kind)}
            unknown = set(values) - known
            if unknown:
                raise ValueError(f"unknown {kind.__name__} fields: {sorted(unknown)}")
            return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

        extra = set(data) - {f.name for f in dataclasses.fields(cls)}
        if extra:
            raise ValueError(f"unknown CatSegConfig fields: {sorted(extra)}")
        return cls(name=data["name"], embed_dim=int(data["embed_dim"]),
                   vision=section(VisionConfig, data["vision"]), text=section(TextConfig, data["text"]),
                   aggregator=section(AggregatorConfig, data.get("aggregator", {})),
                   inference=section(InferenceConfig, data.get("inference", {})),
                   prompt_template=data.get("prompt_template", OFFICIAL_PROMPT_TEMPLATE))

    @classmethod
    def from_fixture(cls, config_json: Mapping[str, Any], name: str | None = None) -> "CatSegConfig":
        """Build from a reference fixture's config.json (the format of shared/fixtures/*/config.json)."""
        clip = config_json["clip"]
        vis, txt = clip["vision"], clip["text"]
        agg, dec = config_json["aggregator"], config_json["decoder"]
        whole = config_json["inference"]["whole_image"]
        sliding = config_json["inference"]["sliding_window"]
        embed_dim = int(vis["output_dim"])
        if int(txt["embed_dim"]) != embed_dim:
            raise ValueError(f"text embed_dim {txt['embed_dim']} != vision output_dim {embed_dim}")
        return cls(
            name=name or f"fixture_{config_json.get('fixture', 'unnamed')}",
            embed_dim=embed_dim,
            vision=VisionConfig(
                width=int(vis["width"]),
                layers=int(vis["layers"]),
                heads=int(vis["heads"]),
                patch_size=int(vis["patch_size"]),
                pretrain_resolution=int(vis["pretrain_image_resolution"]),
                tap_blocks=tuple(int(i) for i in config_json["guidance"]["tap_block_indices"]),
                mlp_ratio=int(vis["mlp_hidden"]) // int(vis["width"]),
            ),
            text=TextConfig(
                width=int(txt["width"]),
                layers=int(txt["layers"]),
                heads=int(txt["heads"]),
                context_length=int(txt["context_length"]),
                vocab_size=int(txt["vocab_size"]),
                mlp_ratio=int(txt["mlp_hidden"]) // int(txt["width"]),
            ),
            aggregator=AggregatorConfig(
                hidden_dim=int(agg["hidden_dim"]),
                num_heads=int(agg["num_heads"]),
                num_layers=int(agg["num_layers"]),
                window_size=int(agg["window_size"]),
                pooling_size=_int_pair(agg["pooling_sizes"], "aggregator.pooling_sizes"),
                feature_resolution=_int_pair(agg["feature_resolution"], "aggregator.feature_resolution"),
                pad_len=int(agg["pad_len"]),
                attention_type=str(agg["attention_type"]),
                text_guidance_proj_dim=int(agg["text_guidance_proj_dim"]),
                appearance_guidance_proj_dim=int(agg["appearance_guidance_proj_dim"]),
                decoder_dims=_int_pair(dec["decoder_dims"], "decoder.decoder_dims"),
                decoder_guidance_dims=_int_pair(dec["decoder_guidance_dims"], "decoder.decoder_guidance_dims"),
                decoder_guidance_proj_dims=_int_pair(dec["decoder_guidance_proj_dims"],
                                                    "decoder.decoder_guidance_proj_dims"),
                prompt_channel=int(agg.get("prompt_channel", 1)),
                swin_mlp_ratio=int(agg.get("swin_mlp", {}).get("ratio", 4)),
                class_mlp_ratio=int(agg.get("class_mlp", {}).get("ratio", 4)),
            ),
            inference=InferenceConfig(
                clip_resolution=int(whole["resize"]["to"][0]),
                size_divisibility=int(whole["size_divisibility"]),
                pixel_mean=_float_triple(clip["pixel_mean"], "clip.pixel_mean"),
                pixel_std=_float_triple(clip["pixel_std"], "clip.pixel_std"),
                sliding_kernel=int(sliding["kernel"]),
                sliding_overlap=float(sliding["overlap"]),
                sliding_out_res=_int_pair(sliding["out_res"], "inference.sliding_window.out_res"),
            ),
            prompt_template=str(config_json["text"]["prompt_template"]),
        )
