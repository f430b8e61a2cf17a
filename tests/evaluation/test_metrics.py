"""The metrics on tiny random encoders loaded from disk through the real loaders."""

import math

import pytest
import torch
import torch.nn.functional as F

from break_a_scene.errors import UserInputError
from break_a_scene.evaluation.encoders import ClipEncoder, DinoEncoder, DreamSimEncoder
from break_a_scene.evaluation.metrics import (
    ConceptAccuracy,
    DetectCompare,
    IdentitySimilarity,
    MeanScore,
    PromptSimilarity,
    black_outside,
    crop,
)
from break_a_scene.scene import mask_box

from .encoders_tiny import save_tiny_clip, save_tiny_dino


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return ClipEncoder.load(f"local-dir:{save_tiny_clip(tmp_path_factory.mktemp('clip'))}", pretrained=None)


@pytest.fixture(scope="module")
def dino(tmp_path_factory):
    return DinoEncoder.load(str(save_tiny_dino(tmp_path_factory.mktemp("dino"))))


def _images(n=3, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_clip_loads_the_saved_weights(tmp_path, clip):
    import open_clip

    from .encoders_tiny import TINY_CLIP_CFG

    torch.manual_seed(0)
    original = open_clip.CLIP(**TINY_CLIP_CFG).eval()
    tokens = open_clip.get_tokenizer("ViT-B-32")(["a photo of a cat"])
    assert torch.allclose(clip.embed_texts(["a photo of a cat"]), F.normalize(original.encode_text(tokens), dim=-1),
                          atol=1e-6)
    assert clip.embed_images(_images()).shape == (3, 16)


def test_missing_weights_say_what_to_download(tmp_path):
    with pytest.raises(UserInputError, match="cannot load the CLIP model 'ViT-L-14'.*evaluation.clip.pretrained"):
        ClipEncoder.load("ViT-L-14", pretrained=str(tmp_path / "missing.bin"))
    with pytest.raises(UserInputError, match="hf download facebook/dino-vitb16"):
        DinoEncoder.load("facebook/dino-vitb16")


def test_prompt_similarity_is_the_cosine_and_accumulates(clip):
    images, texts = _images(4), ["a photo of a cat", "a dog", "a red car", "snow"]
    metric = PromptSimilarity(clip)
    scores = metric.scores(images, texts)
    expected = (clip.embed_images(images) * clip.embed_texts(texts)).sum(-1)
    assert torch.allclose(scores.float(), expected, atol=1e-6)
    metric.update(images[:1], texts[:1])
    metric.update(images[1:], texts[1:])
    assert math.isclose(float(metric.compute()), float(expected.mean()), rel_tol=1e-5)


def test_identity_of_the_input_concept_itself_is_one(dino):
    images = _images(2)
    mask = torch.zeros(32, 32)
    mask[4:20, 6:30] = 1
    references = torch.stack([black_outside(images[0], mask), black_outside(images[1], mask)])  # two concepts
    metric = IdentitySimilarity(dino, references)
    scores = metric.scores(images, [[mask], [mask]], [[0], [1]])
    assert torch.allclose(scores, torch.ones(2, dtype=torch.float64), atol=1e-5)
    crossed = metric.scores(images, [[mask], [mask]], [[1], [0]])  # each image scored against the other concept
    assert (crossed < 0.999).all()


def test_similarity_takes_the_callers_embeddings_of_its_references_as_they_are(dino):
    images = _images(2)
    mask = torch.zeros(32, 32)
    mask[4:20, 6:30] = 1
    references = torch.stack([black_outside(images[0], mask), black_outside(images[1], mask)])
    swapped = dino.embed_images(references).flip(0)  # concept 0's row is concept 1's embedding
    metric = IdentitySimilarity(dino, references, embedded=swapped)
    assert metric.reference_embeddings is swapped  # not embedded again
    scores = metric.scores(images, [[mask], [mask]], [[1], [0]])
    assert torch.allclose(scores, torch.ones(2, dtype=torch.float64), atol=1e-5)


def test_identity_missing_and_aggregate_policies(dino):
    images = _images(1)
    mask = torch.zeros(32, 32)
    mask[:16] = 1
    other = torch.zeros(32, 32)
    other[16:] = 1
    refs = torch.stack([black_outside(images[0], mask), black_outside(images[0], other)])
    # concept 0 found (cosine 1), concept 1 not found
    def score(**policy) -> float:
        return float(IdentitySimilarity(dino, refs, **policy).scores(images, [[mask, None]], [[0, 1]])[0])

    assert score(missing="zero") == pytest.approx(0.5, abs=1e-5)
    assert score(missing="skip") == pytest.approx(1.0, abs=1e-5)
    assert score(missing="zero", aggregate="min") == 0.0
    skipped = IdentitySimilarity(dino, refs, missing="skip")
    skipped.update(images, [[None, None]], [[0, 1]])  # nothing found: NaN, left out of the mean
    assert torch.isnan(skipped.compute())
    with pytest.raises(UserInputError, match="evaluation.missing"):
        IdentitySimilarity(dino, refs, missing="drop")


def test_concept_accuracy_finds_each_concept_among_the_gallery(clip):
    images = _images(3, seed=1)
    mask = torch.zeros(32, 32)
    mask[2:30, 2:30] = 1
    gallery = clip.embed_images(torch.stack([black_outside(image, mask) for image in images]))
    metric = ConceptAccuracy(clip, gallery, k=1)
    # image b shows concept b: a hit each; a concept not found is a miss
    scores = metric.scores(images, [[mask], [mask], [None]], [[0], [1], [2]])
    assert scores.tolist() == [1.0, 1.0, 0.0]
    assert metric.scores(images[:1], [[mask]], [[2]]).tolist() == [0.0]  # labelled as another concept


def _ddp_worker(rank: int, world: int, port: int, out) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    metric = MeanScore()
    metric.update(scores=torch.tensor([1.0, 2.0]) if rank == 0 else torch.tensor([6.0, float("nan")]))
    out.put((rank, float(metric.compute())))
    dist.destroy_process_group()


def test_mean_score_sums_across_ranks():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    results = dict(queue.get() for _ in range(2))
    assert results == {0: 3.0, 1: 3.0}  # (1 + 2 + 6) / 3 on both ranks, NaN left out


def _photos(n=2, side=96):
    """8-bit images with structure finer than the encoders' 32 px, as PIL images and as [0, 1] tensors."""
    rng = torch.Generator().manual_seed(3)
    pixels = (torch.rand(n, 3, side // 4, side // 4, generator=rng) * 255).round()
    pixels = F.interpolate(pixels, scale_factor=4, mode="nearest") + torch.randint(-30, 30, (n, 3, side, side),
                                                                                   generator=rng)
    pixels = pixels.clamp(0, 255).to(torch.uint8)
    from PIL import Image

    return [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels], pixels.float() / 255


def test_encoders_use_their_own_preprocessing(clip, dino, tmp_path):
    """Embeddings equal those of the encoders' own pipelines (open_clip's transform, the DINO image
    processor) within 1e-3 on the inputs; a plain bicubic resize of ours would not."""
    import open_clip
    from transformers import AutoImageProcessor

    pictures, tensors = _photos()
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{save_tiny_clip(tmp_path / 'clip')}")
    pixels = torch.stack([preprocess(p) for p in pictures])
    expected = F.normalize(clip.model.encode_image(pixels).float(), dim=-1)
    assert (clip.embed_images(tensors) - expected).abs().max() < 1e-5
    naive = F.interpolate(tensors, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    assert (pixels - (naive - mean) / std).abs().mean() > 1e-2  # the resize this replaces differs

    processor = AutoImageProcessor.from_pretrained(save_tiny_dino(tmp_path / "dino"))
    processed = processor.preprocess(pictures, return_tensors="pt").pixel_values
    assert processed.shape == (2, 3, 32, 32)
    expected = F.normalize(dino.model(pixel_values=processed).last_hidden_state[:, 0], dim=-1)
    assert (dino.embed_images(tensors) - expected).abs().max() < 1e-5


def test_masked_references_take_each_concept_from_the_first_photo_that_shows_it():
    from break_a_scene.evaluation.scorers import masked_references
    from break_a_scene.scene import SceneTensors

    masks = torch.zeros(2, 4, 4)
    masks[1, :2] = 1
    first = SceneTensors(torch.full((3, 4, 4), 0.5), masks.clone(), torch.tensor([False, True]))
    masks[0, :, :2] = 1
    second = SceneTensors(torch.full((3, 4, 4), -0.5), masks, torch.tensor([True, True]))
    references = masked_references([first, second])
    assert references.shape == (2, 3, 4, 4)
    assert references[0, :, :, :2].eq(0.25).all() and references[0, :, :, 2:].eq(0).all()  # concept 0: photo 2
    assert references[1, :, :2].eq(0.75).all() and references[1, :, 2:].eq(0).all()  # concept 1: photo 1


def test_mask_box_and_crop_by_hand():
    mask = torch.zeros(10, 12)
    mask[2:5, 3:9] = 1
    assert mask_box(mask) == [3, 2, 9, 5]
    image = torch.arange(3 * 10 * 12, dtype=torch.float32).reshape(3, 10, 12)
    assert torch.equal(crop(image, mask_box(mask)), image[:, 2:5, 3:9])
    assert torch.equal(crop(image, [2.6, 1.2, 4.1, 1.9]), image[:, 1:2, 2:5])  # outwards, at least one pixel
    assert torch.equal(crop(image, [12.0, 10.0, 12.0, 10.0]), image[:, 9:10, 11:12])  # a box on the far edge


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    from break_a_scene.masks import WordDetector
    from tests.masks_models import save_tiny_owlv2

    return WordDetector.load(str(save_tiny_owlv2(tmp_path_factory.mktemp("owlv2"))), device="cpu", threshold=0.0)


def test_detect_and_compare_crops_each_concepts_best_box(detector, dino):
    images = _images(2, seed=4)
    references = [torch.rand(3, 20, 12), torch.rand(3, 9, 30)]
    metric = DetectCompare(detector, dino, references)
    concepts, names = [[0, 1], [1]], [["cup", "spoon"], ["spoon"]]
    scores = metric.scores(images, concepts, names)
    from break_a_scene.evaluation.encoders import to_pil

    expected = []
    for image, ids, classes in zip(images, concepts, names):  # by hand: each concept's best box, cropped
        found = detector(to_pil(image[None])[0], classes)
        values = [float((dino.embed_images(crop(image, f.boxes[0].tolist())[None])
                         * dino.embed_images(references[j][None])).sum()) for j, f in zip(ids, found)]
        expected.append(sum(values) / len(values))
    assert torch.allclose(scores, torch.tensor(expected, dtype=torch.float64), atol=1e-5)


def test_detect_and_compare_missing_policy(detector, dino):
    from break_a_scene.masks import WordDetector

    blind = WordDetector(detector.model, detector.processor, threshold=1.1)  # no box passes
    references = [torch.rand(3, 8, 8)]
    assert DetectCompare(blind, dino, references).scores(_images(1), [[0]], [["cup"]]).tolist() == [0.0]
    assert math.isnan(DetectCompare(blind, dino, references, missing="skip").scores(_images(1), [[0]], [["cup"]])[0])


def test_dreamsim_refuses_missing_files_and_hub_variants(tmp_path):
    with pytest.raises(UserInputError, match="no open_clip_vitb32_pretrain.pth.tar, open_clip_vitb32_single_lora"):
        DreamSimEncoder.check(str(tmp_path))
    with pytest.raises(UserInputError, match="torch.hub, which runs a downloaded repository's code"):
        DreamSimEncoder.check(str(tmp_path), "ensemble")


def _save_random_dreamsim(folder):
    """The open_clip_vitb32 release's layout with random weights: the ViT-B/32 (as the package reads it, with
    its `proj`) and a LoRA folder from peft's save_pretrained (B initialised non-zero, so the adapters count)."""
    from dreamsim.config import dreamsim_args
    from dreamsim.feature_extraction.vision_transformer import vit_base
    from dreamsim.model import PerceptualModel
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    vit = vit_base(patch_size=32)
    vit.pos_drop = torch.nn.LayerNorm(vit.embed_dim)
    weights = {k: v.half() for k, v in vit.state_dict().items()}  # loaded into float32 parameters
    weights["proj"] = torch.randn(768, 512) / 28  # used as stored: float32, as the release's
    torch.save({"state_dict": weights}, folder / "open_clip_vitb32_pretrain.pth.tar")
    model = PerceptualModel(**dreamsim_args["model_config"]["open_clip_vitb32"], device="cpu", load_dir=str(folder),
                            normalize_embeds=True)
    lora = LoraConfig(r=2, lora_alpha=2, lora_dropout=0.0, bias="none", target_modules=["qkv"],
                      init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(folder / "open_clip_vitb32_single_lora")


@pytest.mark.slow
def test_dreamsim_through_the_packages_loader_gives_its_distance(tmp_path):
    """A ViT-B/32 cannot be made tiny (the package builds it at its size): random weights, 175 MB in fp16."""
    from dreamsim import dreamsim

    from break_a_scene.evaluation.encoders import to_pil

    _save_random_dreamsim(tmp_path)
    encoder = DreamSimEncoder.load(str(tmp_path))
    images = _images(2, seed=5)
    ours = (encoder.embed_images(images[:1]) * encoder.embed_images(images[1:])).sum()
    model, preprocess = dreamsim(pretrained=True, device="cpu", cache_dir=str(tmp_path),
                                 dreamsim_type="open_clip_vitb32")
    a, b = (preprocess(picture) for picture in to_pil(images))
    with torch.no_grad():
        assert torch.isclose(ours, 1 - model(a, b)[0], atol=1e-5)
    assert float((encoder.embed_images(images[:1]) ** 2).sum()) == pytest.approx(1.0, abs=1e-5)
