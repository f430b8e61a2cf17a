"""Per-batch scoring of generated images, one scorer per world, both built from `cfg.evaluation`.

A scorer takes the batch's images (B, 3, H, W) in [0, 1], its `EvalPrompt`s and its `Sample`s (for the
attention maps) and returns {metric name: one value per image}. It also accumulates its torchmetrics
`Metric`s, whose `compute()` is the trial's summary (summed across ranks under DDP).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from break_a_scene.errors import UserInputError
from break_a_scene.evaluation.metrics import (
    ConceptAccuracy,
    DetectCompare,
    DreamSimIdentity,
    IdentitySimilarity,
    ImageSimilarity,
    MeanScore,
    PromptSimilarity,
    black_outside,
    crop,
)
from break_a_scene.evaluation.prompts import EvalPrompt
from break_a_scene.evaluation.segmenters import Generated
from break_a_scene.models import quiet_loading
from break_a_scene.scene import SceneTensors, mask_box


def first_sightings(photos: list[SceneTensors]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each concept's (input image in [0, 1], its mask) from the first photo that shows it."""
    sightings = []
    for concept in range(photos[0].masks.shape[0]):
        photo = next(p for p in photos if p.present[concept])
        sightings.append(((photo.image + 1) / 2, photo.masks[concept]))
    return sightings


def masked_references(photos: list[SceneTensors]) -> torch.Tensor:
    """(N, 3, R, R) in [0, 1]: the input image black outside each concept's mask."""
    return torch.stack([black_outside(image, mask) for image, mask in first_sightings(photos)])


def reference_crops(photos: list[SceneTensors]) -> list[torch.Tensor]:
    """Each concept's box in the input image: (3, h, w) in [0, 1]."""
    return [crop(image, mask_box(mask)) for image, mask in first_sightings(photos)]


class PaperScorer:
    """Prompt similarity (CLIP), identity similarity (DINO), CLIP-I and concept accuracy (top-k for each k);
    with a DreamSim encoder also DreamSim identity, and with a detector too MuDI's Detect-and-Compare."""

    needs_attention = False

    def __init__(self, clip, dino, segmenter, references: torch.Tensor, tokens: list[str], class_names: list[str],
                 gallery: torch.Tensor, gallery_ids: list[int], missing: str = "zero", aggregate: str = "mean",
                 accuracy_k: tuple[int, ...] = (1, 3), dreamsim=None, detector=None,
                 crops: list[torch.Tensor] | None = None):
        self.segmenter = segmenter
        self.needs_attention = getattr(segmenter, "uses_attention", False)
        self.tokens, self.class_names, self.gallery_ids = tokens, class_names, gallery_ids
        self.metrics: dict[str, MeanScore] = {
            "prompt_similarity": PromptSimilarity(clip),
            "identity_similarity": IdentitySimilarity(dino, references, missing, aggregate),
            # the gallery holds this scene's references under CLIP at gallery_ids: not embedded twice
            "clip_i": ImageSimilarity(clip, references, missing, aggregate, embedded=gallery[gallery_ids]),
            **{f"concept_acc{k}": ConceptAccuracy(clip, gallery, k) for k in accuracy_k},
        }
        if dreamsim is not None:
            self.metrics["dreamsim"] = DreamSimIdentity(dreamsim, references, missing, aggregate)
            if detector is not None:
                self.metrics["detect_compare"] = DetectCompare(detector, dreamsim, crops, missing, aggregate)

    def __call__(self, images: torch.Tensor, prompts: list[EvalPrompt], samples) -> dict[str, list[float]]:
        generated = [Generated(image, [self.tokens[j] for j in p.concepts], [self.class_names[j] for j in p.concepts],
                               sample.attention) for image, p, sample in zip(images, prompts, samples)]
        masks = self.segmenter(generated)
        concepts = [list(p.concepts) for p in prompts]
        ids = [[self.gallery_ids[j] for j in p.concepts] for p in prompts]
        values = {}
        for name, metric in self.metrics.items():
            if name == "prompt_similarity":
                scores = metric.scores(images, [p.class_prompt for p in prompts])
            elif name.startswith("concept_acc"):
                scores = metric.scores(images, masks, ids)
            elif name == "detect_compare":
                scores = metric.scores(images, concepts, [[self.class_names[j] for j in p.concepts] for p in prompts])
            else:
                scores = metric.scores(images, masks, concepts)
            metric.update(scores=scores)
            values[name] = scores.tolist()
        values["concepts_found"] = [sum(m is not None for m in row) / len(row) for row in masks]
        return values


class ToyScorer:
    """The toy world's judge (identity, prompt_following, position, background, all_correct, extra_objects,
    mixed, the stray_* counts) and each image's attention IoU."""

    needs_attention = True

    def __init__(self, judge):
        from break_a_scene.evaluation.toy import ToyIdentity, ToyPromptFollowing

        self.judge = judge
        self.metrics: dict[str, MeanScore] = {"identity": ToyIdentity(judge),
                                              "prompt_following": ToyPromptFollowing(judge)}

    def __call__(self, images: torch.Tensor, prompts: list[EvalPrompt], samples) -> dict[str, list[float]]:
        from break_a_scene.evaluation.toy import attention_iou, toy_scores

        values = toy_scores(self.judge, images, [p.target for p in prompts])
        for name, metric in self.metrics.items():
            metric.update(scores=torch.tensor(values[name]))
        values["attention_iou"] = [attention_iou(p.target, s.attention, images.shape[-1])
                                   for p, s in zip(prompts, samples)]
        return values


def check_paper_weights(cfg: DictConfig) -> None:
    """The paper scorer's weights are where `evaluation.*` says, found before a trial trains (they are loaded
    after it). A missing download is named with the setting that points elsewhere; nothing is loaded here."""
    from break_a_scene.models import resolve_model_dir

    clip = cfg.clip
    model_name, pretrained = str(clip.model_name), clip.get("pretrained")
    if model_name.startswith("local-dir:"):
        if not Path(model_name.removeprefix("local-dir:")).is_dir():
            raise UserInputError(f"evaluation.clip.model_name={model_name}: no such folder; point it at a folder "
                                 f"holding open_clip_config.json and the weights.")
    elif model_name.startswith("hf-hub:"):
        resolve_model_dir(model_name.removeprefix("hf-hub:"), setting="evaluation.clip.model_name",
                          expected="local-dir:<a folder with open_clip_config.json and the weights>")
    elif pretrained and not Path(str(pretrained)).is_file():
        import open_clip

        hub = (open_clip.get_pretrained_cfg(model_name, str(pretrained)) or {}).get("hf_hub")
        if hub:
            resolve_model_dir(hub.strip("/"), setting="evaluation.clip.pretrained", expected="a local checkpoint file")
    resolve_model_dir(cfg.dino.name_or_path, setting="evaluation.dino.name_or_path",
                      expected="a local folder with a ViT's weights and preprocessor_config.json")
    if cfg.get("dreamsim"):
        from break_a_scene.evaluation.encoders import DreamSimEncoder

        DreamSimEncoder.check(str(cfg.dreamsim.cache_dir), cfg.dreamsim.get("dreamsim_type", "open_clip_vitb32"))
    if cfg.get("detector"):
        if not cfg.get("dreamsim"):
            raise UserInputError("evaluation.detector (Detect-and-Compare) compares with DreamSim: set "
                                 "evaluation.dreamsim too, or evaluation.detector=null.")
        resolve_model_dir(cfg.detector.name_or_path, setting="evaluation.detector.name_or_path",
                          expected="a local folder that OWLv2's save_pretrained wrote (or evaluation.detector=null)")
    if cfg.segmenter.get("name_or_path"):
        resolve_model_dir(cfg.segmenter.name_or_path, setting="evaluation.segmenter.name_or_path",
                          expected="a local folder (or evaluation/segmenter=attention, which needs no model)")


def check_weights_load(setting: str, load: Callable[[], object]) -> None:
    """Load a scorer's weights once on the CPU and let them go: a damaged or truncated file stops the trial in
    one line naming its setting, before the trial trains (they are loaded again to score)."""
    try:
        with quiet_loading():
            load()
    except UserInputError:
        raise
    except Exception as err:  # torch, safetensors, open_clip and transformers each raise their own types
        raise UserInputError(f"{setting}: its weights cannot be read ({type(err).__name__}: "
                             f"{' '.join(str(err).split())[:200]}); the file is damaged or incomplete. Download or "
                             f"copy it again, or point {setting} at an intact one.") from None


def build_paper_scorer(cfg: DictConfig, scene: list[SceneTensors], tokens: list[str], class_names: list[str],
                       gallery_scenes: list[list[SceneTensors]], scene_offset: int) -> PaperScorer:
    """Load the encoders and segmenter the config names; the concept-accuracy gallery is every concept of
    `gallery_scenes` (the whole benchmark), this scene's concepts (`scene` itself) starting at `scene_offset`."""
    clip = instantiate(cfg.clip)
    dino = instantiate(cfg.dino)
    segmenter = instantiate(cfg.segmenter)
    gallery = torch.cat([clip.embed_images(masked_references(s)) for s in gallery_scenes])
    ids = list(range(scene_offset, scene_offset + len(tokens)))
    dreamsim = instantiate(cfg.dreamsim) if cfg.get("dreamsim") else None
    detector = instantiate(cfg.detector) if cfg.get("detector") and dreamsim is not None else None
    return PaperScorer(clip, dino, segmenter, masked_references(scene), tokens, class_names, gallery.cpu(), ids,
                       cfg.missing, cfg.aggregate, tuple(cfg.concept_accuracy_k), dreamsim, detector,
                       reference_crops(scene))
