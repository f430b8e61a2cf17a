"""Where each prompted concept is in a generated image, for the masked identity metrics.

Two segmenters:
- `PanopticSegmenter`: a COCO panoptic model (MaskFormer / Mask2Former through transformers), the paper's
  choice. Matching (the paper does not say): a concept takes the segments whose predicted label equals its
  class name (case-insensitive, or one of `aliases[class]`); `match="largest"` keeps the largest of them,
  `match="union"` their union. No matching segment -> None (the metric's `missing` policy decides).
- `AttentionSegmenter`: no extra model; the token's own cross-attention map during sampling (max-normalised),
  upsampled to the image and thresholded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from break_a_scene.errors import UserInputError


@dataclass
class Generated:
    """One generated image and what segmenting and scoring it needs."""

    image: torch.Tensor  # (3, H, W) in [0, 1]
    tokens: list[str]  # the prompt's tokens, in prompt order
    class_names: list[str]  # their concepts' class names
    attention: dict[str, np.ndarray] = field(default_factory=dict)  # token -> (r, r), max-normalised


def _same_label(label: str, class_name: str, aliases: dict[str, list[str]]) -> bool:
    label = label.lower().strip()
    wanted = {class_name.lower().strip(), *(a.lower().strip() for a in aliases.get(class_name, []))}
    return label in wanted


def match_segments(segmentation: torch.Tensor, segments: list[dict], id2label: dict[int, str],
                   class_names: list[str], match: Literal["largest", "union"] = "largest",
                   aliases: dict[str, list[str]] | None = None) -> list[torch.Tensor | None]:
    """segmentation (H, W) of segment ids; segments [{"id", "label_id"}, ...] -> one bool mask per class name."""
    aliases = aliases or {}
    masks = []
    for class_name in class_names:
        hits = [segmentation == seg["id"] for seg in segments
                if _same_label(id2label[int(seg["label_id"])], class_name, aliases)]
        if not hits:
            masks.append(None)
        elif match == "largest":
            masks.append(max(hits, key=lambda m: int(m.sum())))
        else:
            masks.append(torch.stack(hits).any(dim=0))
    return masks


class PanopticSegmenter:
    def __init__(self, model, processor, match: Literal["largest", "union"] = "largest",
                 score_threshold: float = 0.5, aliases: dict[str, list[str]] | None = None):
        if match not in ("largest", "union"):
            raise UserInputError(f"evaluation.segmenter.match must be 'largest' or 'union', not {match!r}")
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.match = match
        self.score_threshold = score_threshold
        self.aliases = dict(aliases or {})

    @classmethod
    def load(cls, name_or_path: str = "facebook/maskformer-swin-large-coco", device: str = "cpu",
             **kwargs) -> "PanopticSegmenter":
        from transformers import AutoImageProcessor, AutoModelForUniversalSegmentation

        from break_a_scene.devices import resolve_device

        device = resolve_device(device)
        try:
            processor = AutoImageProcessor.from_pretrained(name_or_path, local_files_only=True)
            model = AutoModelForUniversalSegmentation.from_pretrained(name_or_path, local_files_only=True)
        except OSError as err:
            raise UserInputError(
                f"cannot load the panoptic segmenter '{name_or_path}' offline: {err}. Download it with "
                f"`hf download {name_or_path}`, point evaluation.segmenter.name_or_path to a local folder, or "
                "use evaluation/segmenter=attention (no extra model)."
            ) from None
        return cls(model.to(device), processor, **kwargs)

    @torch.no_grad()
    def __call__(self, batch: list[Generated]) -> list[list[torch.Tensor | None]]:
        device = next(self.model.parameters()).device
        pictures = [Image.fromarray((g.image.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy())
                    for g in batch]
        inputs = self.processor(images=pictures, return_tensors="pt").to(device)
        outputs = self.model(**inputs)
        sizes = [tuple(g.image.shape[-2:]) for g in batch]
        results = self.processor.post_process_panoptic_segmentation(
            outputs, threshold=self.score_threshold, target_sizes=sizes, label_ids_to_fuse=set())
        return [match_segments(r["segmentation"].cpu(), r["segments_info"], self.model.config.id2label,
                               g.class_names, self.match, self.aliases) for g, r in zip(batch, results)]


class AttentionSegmenter:
    uses_attention = True  # the runner records the tokens' attention while sampling

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold

    def __call__(self, batch: list[Generated]) -> list[list[torch.Tensor | None]]:
        out = []
        for g in batch:
            masks = []
            for token in g.tokens:
                if token not in g.attention:
                    masks.append(None)
                    continue
                attention = torch.as_tensor(g.attention[token], dtype=torch.float32)[None, None]
                attention = F.interpolate(attention, size=tuple(g.image.shape[-2:]), mode="bilinear",
                                          align_corners=False)[0, 0]
                masks.append(attention >= self.threshold * attention.max())
            out.append(masks)
        return out
