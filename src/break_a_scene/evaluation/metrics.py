"""The paper's metrics as torchmetrics `Metric`s: they accumulate over batches and sum across DDP ranks.

Each metric also has `scores(...)`, the per-image values (the runner writes one row per image);
`update(...)` accumulates them. NaN scores (nothing to score) are left out of the mean.

Masked-concept metrics (identity, CLIP-I, concept accuracy) compare the input concept (the input image,
black outside its mask) with the generated concept (the generated image, black outside the segmenter's
mask). Several concepts in one image: `aggregate="mean"` (default) or `"min"` over them. A concept the
segmenter did not find: `missing="zero"` (default: scores 0, a method that drops a concept is penalised)
or `"skip"` (left out; an image with no concept found scores NaN).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torchmetrics import Metric

from break_a_scene.errors import UserInputError

Masks = list[list[torch.Tensor | None]]


def black_outside(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """image (3, H, W) in [0, 1], mask (H, W) bool or soft (> 0.5 counts) -> the image, black outside."""
    return image * (mask.float() > 0.5).to(image.dtype)


class MeanScore(Metric):
    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, *args, scores: torch.Tensor | None = None, **kwargs) -> None:
        """Accumulate a batch: its scores computed from the inputs, or given as `scores=` by a caller that
        already has them (the runner, which also writes them to its rows)."""
        values = (self.scores(*args, **kwargs) if scores is None else scores).detach().double().flatten()
        values = values[~torch.isnan(values)]
        self.total += values.sum().to(self.total.device)
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"), dtype=torch.float64)

    def scores(self, *args, **kwargs) -> torch.Tensor:
        raise NotImplementedError


class PromptSimilarity(MeanScore):
    """CLIP cosine between each image and its prompt with the tokens replaced by class names."""

    def __init__(self, clip, **kwargs):
        super().__init__(**kwargs)
        self.clip = clip

    def scores(self, images: torch.Tensor, class_prompts: list[str]) -> torch.Tensor:
        return (self.clip.embed_images(images) * self.clip.embed_texts(class_prompts)).sum(-1).cpu()


def _aggregate(per_concept: list[list[float]], how: str) -> torch.Tensor:
    values = []
    for scores in per_concept:
        kept = [s for s in scores if s == s]  # drop NaN (skipped concepts)
        values.append(float("nan") if not kept else (min(kept) if how == "min" else sum(kept) / len(kept)))
    return torch.tensor(values, dtype=torch.float64)


def _check_policies(missing: str, aggregate: str) -> None:
    if missing not in ("zero", "skip"):
        raise UserInputError(f"evaluation.missing must be 'zero' or 'skip', not {missing!r}")
    if aggregate not in ("mean", "min"):
        raise UserInputError(f"evaluation.aggregate must be 'mean' or 'min', not {aggregate!r}")


class MaskedConceptSimilarity(MeanScore):
    """Cosine between the masked input concept and the masked generated concept under `encoder`."""

    def __init__(self, encoder, references: torch.Tensor, missing: Literal["zero", "skip"] = "zero",
                 aggregate: Literal["mean", "min"] = "mean", embedded: torch.Tensor | None = None, **kwargs):
        """references (N, 3, H, W): each concept's input picture black outside its mask, embedded once here,
        or `embedded` (N, D), their embeddings under `encoder` where the caller has them already."""
        super().__init__(**kwargs)
        _check_policies(missing, aggregate)
        self.encoder, self.missing, self.aggregate = encoder, missing, aggregate
        self.reference_embeddings = encoder.embed_images(references) if embedded is None else embedded

    def scores(self, images: torch.Tensor, masks: Masks, concepts: list[list[int]]) -> torch.Tensor:
        """images (B, 3, H, W); masks[b][j]: the mask of concept concepts[b][j] in image b, or None."""
        pairs = [(b, j) for b, row in enumerate(masks) for j, mask in enumerate(row) if mask is not None]
        per_concept = [[0.0 if self.missing == "zero" else float("nan")] * len(row) for row in masks]
        if pairs:
            cut = torch.stack([black_outside(images[b], masks[b][j]) for b, j in pairs])
            generated = self.encoder.embed_images(cut)
            reference = self.reference_embeddings[[concepts[b][j] for b, j in pairs]].to(generated.device)
            for (b, j), value in zip(pairs, (generated * reference).sum(-1).tolist()):
                per_concept[b][j] = value
        return _aggregate(per_concept, self.aggregate)


class IdentitySimilarity(MaskedConceptSimilarity):
    """The paper's identity similarity: `MaskedConceptSimilarity` under DINO ViT-B/16."""


class ImageSimilarity(MaskedConceptSimilarity):
    """CLIP-I: `MaskedConceptSimilarity` under CLIP's image tower (as later papers report)."""


class DreamSimIdentity(MaskedConceptSimilarity):
    """Identity as MagicTailor reports DreamSim: `MaskedConceptSimilarity` under DreamSim (1 - its distance)."""


def crop(image: torch.Tensor, box) -> torch.Tensor:
    """image (3, H, W) cut to box [x0, y0, x1, y1] (pixels, floats rounded outwards), at least 1 x 1 and inside."""
    height, width = image.shape[-2:]
    x0, y0 = min(math.floor(box[0]), width - 1), min(math.floor(box[1]), height - 1)
    x1, y1 = min(max(x0 + 1, math.ceil(box[2])), width), min(max(y0 + 1, math.ceil(box[3])), height)
    return image[:, y0:y1, x0:x1]


class DetectCompare(MeanScore):
    """MuDI's Detect-and-Compare, per concept: the detector (bas-masks' OWLv2, every prompted class name a query
    of one pass) boxes each prompted concept in the generated image; its best box, cropped, is compared under
    `encoder` (DreamSim) with the concept's box in the input image. A concept not detected: `missing`."""

    def __init__(self, detector, encoder, references: list[torch.Tensor],
                 missing: Literal["zero", "skip"] = "zero", aggregate: Literal["mean", "min"] = "mean", **kwargs):
        """references: each concept's input crop (3, h, w) in [0, 1], in concept order."""
        super().__init__(**kwargs)
        _check_policies(missing, aggregate)
        self.detector, self.encoder, self.missing, self.aggregate = detector, encoder, missing, aggregate
        self.reference_embeddings = torch.cat([encoder.embed_images(ref[None]) for ref in references])

    def scores(self, images: torch.Tensor, concepts: list[list[int]], class_names: list[list[str]]) -> torch.Tensor:
        """concepts[b]: the prompt's concept indices; class_names[b]: their class names, in the same order."""
        from break_a_scene.evaluation.encoders import to_pil

        per_concept = []
        for image, picture, ids, names in zip(images, to_pil(images), concepts, class_names):
            found = self.detector(picture, names)
            row = []
            for concept, detections in zip(ids, found):
                if len(detections.boxes) == 0:
                    row.append(0.0 if self.missing == "zero" else float("nan"))
                    continue
                embedded = self.encoder.embed_images(crop(image, detections.boxes[0].tolist())[None])
                row.append(float((embedded[0].cpu() * self.reference_embeddings[concept].cpu()).sum()))
            per_concept.append(row)
        return _aggregate(per_concept, self.aggregate)


class ConceptAccuracy(MeanScore):
    """ConceptExpress-style accuracy: each generated concept (masked) is classified by CLIP-image nearest
    neighbour among every input concept of the benchmark (`gallery`, (C, D) normalised embeddings); a hit when
    its own concept is in the top `k`. Per image: the share of its concepts hit (a concept not found misses)."""

    def __init__(self, clip, gallery: torch.Tensor, k: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.clip, self.k = clip, k
        self.register_buffer("gallery", gallery.float(), persistent=False)

    def scores(self, images: torch.Tensor, masks: Masks, concept_ids: list[list[int]]) -> torch.Tensor:
        pairs = [(b, j) for b, row in enumerate(masks) for j, mask in enumerate(row) if mask is not None]
        hits = [[0.0] * len(row) for row in masks]
        if pairs:
            embedded = self.clip.embed_images(torch.stack([black_outside(images[b], masks[b][j]) for b, j in pairs]))
            top = (embedded @ self.gallery.to(embedded.device).T).topk(min(self.k, len(self.gallery)), dim=-1).indices
            for (b, j), row in zip(pairs, top.tolist()):
                hits[b][j] = float(concept_ids[b][j] in row)
        return _aggregate(hits, "mean")
