"""`semla-bench stream` compares like with like: its official SemLA pipeline (PEFT cat fusion, LoRA active,
text tower adapted, adapter deleted after every image) segments as the node's segmenter does per image."""
from __future__ import annotations

import json

import numpy as np
import torch
from openclip_helpers import register_tiny_openclip

from semla_ros.bench.stream import OfficialPipeline, _library
from semla_ros.catseg.build import build_catseg
from semla_ros.catseg.predictor import CatSegPredictor
from semla_ros.core.navigator import OpenClipNavigator
from semla_ros.core.segmenter import InlineExecutor, SemlaSegmenter
from semla_ros.core.settings import SegmenterSettings


def test_official_pipeline_segments_like_the_per_image_segmenter(tmp_path):
    from semla_ros.demo.build_assets import demo_config

    register_tiny_openclip(tmp_path, "SemlaTinyNavStream")
    config = tmp_path / "small.json"   # the demo's small CAT-Seg (96 px CLIP input): frames of milliseconds
    config.write_text(json.dumps(demo_config().to_dict()))
    torch.manual_seed(0)
    model = build_catseg(str(config)).eval()
    reference = CatSegPredictor(model, ["road", "sky", "car"])
    navigator = OpenClipNavigator("SemlaTinyNavStream", pretrained=None, image_size=32)
    library = _library(model, navigator, str(tmp_path / "library"), count=3, rank=4, seed=0)
    image = np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    plain = reference.predict(image).probs

    official = OfficialPipeline(CatSegPredictor(model, ["road", "sky", "car"]), library, navigator, 2, 0.05)
    ours = SemlaSegmenter(reference, library, navigator, SegmenterSettings(trigger="frame", top_k=2,
                                                                           warmup_frames=1),
                          executor=InlineExecutor())
    try:
        theirs = official.process(image)
        mine = ours.process(image, time_s=0.0)
        assert mine.active_adapters == 2
        fused = reference.predict(image).probs
        assert (fused - plain).abs().max() > 1e-4              # the fusion changes the output: a real comparison
        assert (theirs.probs - fused).abs().max() < 1e-4         # PEFT cat + LoRA active == our fused weights
        assert set(official.peft_model.peft_config) == set(library.names)   # the merged adapter was deleted
        again = official.process(image)                          # every image: add, run, delete again
        assert (again.probs - theirs.probs).abs().max() < 1e-6
    finally:
        ours.close()
