"""The metrics on tiny random encoders loaded from disk through the real loaders."""

import math

import pytest
import torch
import torch.nn.functional as F

from break_a_scene.errors import UserInputError
from break_a_scene.evaluation.encoders import ClipEncoder, DinoEncoder
from break_a_scene.evaluation.metrics import (
    ConceptAccuracy,
    IdentitySimilarity,
    MeanScore,
    PromptSimilarity,
    black_outside,
)

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
    references = [torch.stack([black_outside(images[0], mask)]), torch.stack([black_outside(images[1], mask)])]
    metric = IdentitySimilarity(dino)
    scores = metric.scores(images, [[mask], [mask]], references)
    assert torch.allclose(scores, torch.ones(2, dtype=torch.float64), atol=1e-5)


def test_identity_missing_and_aggregate_policies(dino):
    images = _images(1)
    mask = torch.zeros(32, 32)
    mask[:16] = 1
    other = torch.zeros(32, 32)
    other[16:] = 1
    refs = [torch.stack([black_outside(images[0], mask), black_outside(images[0], other)])]
    # concept 0 found (cosine 1), concept 1 not found
    def score(**policy) -> float:
        return float(IdentitySimilarity(dino, **policy).scores(images, [[mask, None]], refs)[0])

    assert score(missing="zero") == pytest.approx(0.5, abs=1e-5)
    assert score(missing="skip") == pytest.approx(1.0, abs=1e-5)
    assert score(missing="zero", aggregate="min") == 0.0
    skipped = IdentitySimilarity(dino, missing="skip")
    skipped.update(images, [[None, None]], refs)  # nothing found: NaN, left out of the mean
    assert torch.isnan(skipped.compute())
    with pytest.raises(UserInputError, match="evaluation.missing"):
        IdentitySimilarity(dino, missing="drop")


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
