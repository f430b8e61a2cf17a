"""Union sampling (method.md, "Union sampling"): every sample is the whole image with a random subset of
its concepts, the prompt naming them in a random order and their masks in that same order. With several
photos of the scene, a sample first picks a photo, then a subset of the concepts that photo shows."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import CLIPTokenizer

from break_a_scene.scene import SceneTensors, mask_box
from break_a_scene.settings import LoaderSettings
from break_a_scene.tokens import tokenize_all


class UnionSamplingDataset(Dataset):
    """Sample i draws k ~ U{1..N} (k = 1 without union sampling), a random k-subset in random order, the
    prompt "a photo of <a> and <b>" and a joint horizontal flip with probability `flip_p`.

    `scene` may be a list of photos (`prepare_photos`): then a photo p ~ U{0..P-1} is drawn first and N is
    the number of concepts it shows. One photo draws exactly what it drew before photos existed.

    Each index has its own generator seeded from (seed, offset + i), so draws do not depend on workers, ranks
    or on where a resumed run starts; the same generator gives the sample's `noise_seed`, from which the
    training step draws its latents, noise and timestep.
    With class images (prior preservation), sample i also carries class image i mod M and its prompt.
    With `solid_background` (the paper's baselines, TI-m / DB-m / CD-m), the chosen concepts are pasted on a
    random solid colour instead of the rest of the scene.
    Beyond the paper (docs/method.md): with probability `replace_p` the chosen concepts are cut out by their
    masks and pasted at random places on a random solid colour (MuDI's Seg-Mix), so no concept is tied to the
    place it had in the photo (`replace_places="scene"`: each onto the place of one of the photo's concepts,
    itself or another, drawn at random, so objects stand where objects stood). With `replace_full_loss` such a
    sample's loss covers the whole picture, as MuDI trains its composites (the plain colour, with nothing else
    on it, is learned too); with `replace_origin_loss` it covers the moved concepts and the places they left
    (now the plain colour), so the model learns that a concept that moved leaves its place empty. With
    `replace_backdrop="photo"` the plain colour is the photo's own mean colour outside its masks. Samples
    before global index `replace_from` are drawn as without re-placement (phase 1 as the method's own with
    `replace_from` at its end); the later ones as with it from the start.
    With several photos (a concept library), `mix_photos_p` is the share of samples that cut the chosen
    concepts and some of another photo's out and paste them together on a plain colour (`_mix_photos`).
    `degrade_noise` adds Gaussian noise of that standard deviation (pixels in [-1, 1]) outside the chosen masks,
    fading as (1 - progress) ** `degrade_power` over the run (MagicTailor's dynamic masked degradation), so what
    lies around a concept is not learned as part of it; a sample learned whole is not degraded (its loss would
    learn the noise).
    With `layout_phrases` (n phrases, one for each of n equal vertical bands, left to right) each token in the
    prompt is followed by the phrase of the band its mask's box centre lies in, read after re-placement and
    flip ("a photo of <a> on the left and <b> on the right"): the caption says where each concept stands, so the
    token does not learn its place as part of it.
    `settings` are `data.loader`'s (`LoaderSettings`: what each switch above is called there); `replace_from` is
    a sample index (the datamodule turns `replace_from_step` into one). `token_lengths`: each tokenizer's prompt
    length (the family's `token_lengths`; default their own maximum).
    """

    def __init__(
        self,
        scene: SceneTensors | list[SceneTensors],
        tokenizers: list[CLIPTokenizer],
        token_names: list[str],
        token_ids: list[int],
        length: int,
        settings: LoaderSettings = LoaderSettings(),
        seed: int = 0,
        offset: int = 0,
        replace_from: int = 0,
        class_images: torch.Tensor | None = None,
        class_prompt: str | None = None,
        token_lengths: list[int] | None = None,
        joiner: str = " and ",
    ):
        self.photos = [scene] if isinstance(scene, SceneTensors) else list(scene)
        for photo in self.photos:
            if len(token_names) != photo.masks.shape[0]:
                raise ValueError(f"{len(token_names)} tokens for {photo.masks.shape[0]} masks")
        self.shown = [photo.present.nonzero().flatten() for photo in self.photos]  # concept indices, per photo
        self.tokenizers = list(tokenizers)
        self.token_names = list(token_names)
        self.token_ids = torch.tensor(token_ids)
        self.length, self.seed, self.offset, self.replace_from = length, seed, offset, replace_from
        self.settings = settings
        self.joiner = joiner
        self.class_images = class_images
        self.token_lengths = token_lengths
        self.backdrops = [backdrop_colour(photo) for photo in self.photos] \
            if settings.replace_backdrop == "photo" else None
        self.class_input_ids = tokenize_all(tokenizers, [class_prompt], token_lengths)[0] \
            if class_images is not None else None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.offset + index)
        loader = self.settings
        several = len(self.photos) > 1
        p = int(torch.randint(0, len(self.photos), (1,), generator=generator)) if several else 0
        shown = self.shown[p]
        count = len(shown)
        k = int(torch.randint(1, count + 1, (1,), generator=generator)) if loader.union_sampling else 1
        chosen = shown[torch.randperm(count, generator=generator)[:k]]
        image, masks = self.photos[p].image, self.photos[p].masks[chosen]
        redrawn = loader.solid_background
        whole = False  # the loss covers the whole picture, not only the chosen masks
        region = masks.amax(dim=0, keepdim=True)  # where the loss looks, unless whole
        if loader.solid_background:
            colour = (torch.rand(3, 1, 1, generator=generator) * 2 - 1).to(image.dtype)
            image = image * region + colour * (1 - region)
        later = self.offset + index >= self.replace_from
        mixed = several and loader.mix_photos_p > 0 and later and \
            float(torch.rand(1, generator=generator)) < loader.mix_photos_p
        if mixed:
            image, masks, chosen = self._mix_photos(p, chosen, generator)
            redrawn, whole = True, loader.replace_full_loss
            region = masks.amax(dim=0, keepdim=True)
        elif loader.replace_p > 0 and later and float(torch.rand(1, generator=generator)) < loader.replace_p:
            places = [box_centre(self.photos[p].masks[i] > 0) for i in shown] \
                if loader.replace_places == "scene" else None
            colour = self.backdrops[p] if self.backdrops is not None else None
            image, masks = replace_concepts(image, masks, generator, places, colour=colour)
            redrawn, whole = True, loader.replace_full_loss
            moved = masks.amax(dim=0, keepdim=True)
            region = torch.maximum(region, moved) if loader.replace_origin_loss else moved
        if loader.degrade_noise > 0 and not whole:  # noise outside the masks, unless the loss learns it there
            progress = (self.offset + index) / max(self.length, 1)
            strength = loader.degrade_noise * max(0.0, 1.0 - progress) ** loader.degrade_power
            outside = 1 - masks.amax(dim=0, keepdim=True)
            noise = torch.randn(image.shape, generator=generator).to(image.dtype)
            image = (image + strength * noise * outside).clamp(-1, 1)
            redrawn = True
        flipped = float(torch.rand(1, generator=generator)) < loader.flip_p
        if flipped:
            image, masks, region = image.flip(-1), masks.flip(-1), region.flip(-1)
        prompt = loader.prompt_prefix + self.joiner.join(
            self.token_names[i] + layout_phrase(mask, loader.layout_phrases) for i, mask in zip(chosen.tolist(), masks))
        item = {
            "pixel_values": image,  # (3, R, R)
            "masks": masks,  # (k, R, R), in prompt order
            "loss_region": torch.ones_like(region) if whole else region,  # (1, R, R)
            "token_ids": self.token_ids[chosen],  # (k,)
            "input_ids": tokenize_all(self.tokenizers, [prompt], self.token_lengths)[0],  # (E, T): each tokenizer
            "prompt": prompt,
            "noise_seed": int(torch.randint(0, 2**62, (1,), generator=generator)),
            # the same picture always has the same key (its VAE posterior can be cached); None: drawn anew
            "latent_key": None if redrawn else (
                (f"photo{p}" if several else "scene") + ("_flipped" if flipped else "")),
            "photo": p,
        }
        if self.class_images is not None:
            item["class_pixel_values"] = self.class_images[index % len(self.class_images)]
            item["class_input_ids"] = self.class_input_ids
            item["class_latent_key"] = f"class_{index % len(self.class_images)}"
        return item


    def _mix_photos(self, p: int, chosen: torch.Tensor, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The chosen concepts of photo p and a random non-empty subset of another photo's (those not chosen
        already), cut out and pasted at random places on a plain colour, in a random order: a prompt naming
        concepts of different pictures, seen in training. Returns the image, the masks and the concepts, in the
        prompt's order."""
        q = int(torch.randint(0, len(self.photos) - 1, (1,), generator=generator))
        q += q >= p
        options = self.shown[q][~torch.isin(self.shown[q], chosen)]
        if len(options) == 0:  # the other photo shows only concepts already chosen
            return self.photos[p].image, self.photos[p].masks[chosen], chosen
        count = int(torch.randint(1, len(options) + 1, (1,), generator=generator))
        extra = options[torch.randperm(len(options), generator=generator)[:count]]
        concepts = torch.cat([chosen, extra])
        sources = [p] * len(chosen) + [q] * len(extra)
        order = torch.randperm(len(concepts), generator=generator)
        concepts = concepts[order]
        sources = [sources[i] for i in order.tolist()]
        masks = torch.stack([self.photos[s].masks[c] for s, c in zip(sources, concepts.tolist())])
        pictures = torch.stack([self.photos[s].image for s in sources])
        colour = self.backdrops[p] if self.backdrops is not None else None
        image, masks = replace_concepts(self.photos[p].image, masks, generator, colour=colour, sources=pictures)
        return image, masks, concepts


def backdrop_colour(photo: SceneTensors) -> torch.Tensor:
    """(3, 1, 1): the photo's mean colour outside all its masks (the whole photo's where they cover it all)."""
    outside = 1 - photo.masks.amax(dim=0, keepdim=True)
    if float(outside.sum()) == 0:
        return photo.image.mean(dim=(1, 2), keepdim=True)
    return (photo.image * outside).sum(dim=(1, 2), keepdim=True) / outside.sum()


def layout_phrase(mask: torch.Tensor, phrases: list[str] | None) -> str:
    """The phrase of the vertical band (of len(phrases) equal ones) that the mask's box centre lies in; "" without
    phrases or for an empty mask (a concept covered whole by another)."""
    if not phrases or not bool((mask > 0.5).any()):
        return ""
    x0, _, x1, _ = mask_box(mask)
    band = int((x0 + x1) / 2 / mask.shape[-1] * len(phrases))
    return phrases[min(band, len(phrases) - 1)]


def _bounds(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """The (dy, dx) range that keeps the mask's bounding box inside the picture: low_y, high_y, low_x, high_x."""
    x0, y0, x1, y1 = mask_box(mask)
    side_y, side_x = mask.shape
    return -y0, side_y - y1, -x0, side_x - x1


def _translation(mask: torch.Tensor, generator: torch.Generator) -> tuple[int, int]:
    """A random (dy, dx) that keeps the mask's bounding box inside the picture."""
    low_y, high_y, low_x, high_x = _bounds(mask)
    dy = int(torch.randint(low_y, high_y + 1, (1,), generator=generator))
    dx = int(torch.randint(low_x, high_x + 1, (1,), generator=generator))
    return dy, dx


def box_centre(mask: torch.Tensor) -> tuple[int, int]:
    """The (y, x) centre of the mask's bounding box (its first and last pixels' midpoint), rounded down."""
    x0, y0, x1, y1 = mask_box(mask)
    return (y0 + y1 - 1) // 2, (x0 + x1 - 1) // 2


def _translation_to(mask: torch.Tensor, place: tuple[int, int]) -> tuple[int, int]:
    """The (dy, dx) that brings the mask's box centre to `place`, as near as the picture's edges allow."""
    low_y, high_y, low_x, high_x = _bounds(mask)
    y, x = box_centre(mask)
    return min(max(place[0] - y, low_y), high_y), min(max(place[1] - x, low_x), high_x)


def replace_concepts(image: torch.Tensor, masks: torch.Tensor, generator: torch.Generator,
                     places: list[tuple[int, int]] | None = None, tries: int = 20,
                     max_overlap: float = 0.1, colour: torch.Tensor | None = None,
                     sources: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The concepts `masks` (k, R, R) cut out of `image` (3, R, R) (or each out of its own picture, `sources`
    (k, 3, R, R)) and pasted, in order, on a solid colour (random, or `colour` (3, 1, 1)): at random places, each
    drawn up to `tries` times until the concept overlaps those already pasted by at most `max_overlap` of its
    area; or, given `places` ((y, x) centres, at least k), each centred on a different one of them drawn at
    random. A later concept covers an earlier one, whose mask loses what is covered. Returns the new image and
    masks."""
    if colour is None:
        colour = (torch.rand(3, 1, 1, generator=generator) * 2 - 1).to(image.dtype)
    canvas = colour.expand_as(image).clone()
    placed = torch.zeros_like(masks)
    order = torch.randperm(len(places), generator=generator).tolist() if places is not None else []
    for j, mask in enumerate(masks):
        if not bool((mask > 0).any()):
            continue
        if places is not None:
            dy, dx = _translation_to(mask > 0, places[order[j]])
            moved = mask.roll((dy, dx), dims=(0, 1))
        else:
            for _ in range(tries):
                dy, dx = _translation(mask > 0, generator)
                moved = mask.roll((dy, dx), dims=(0, 1))
                taken = placed[:j].amax(dim=0) if j else torch.zeros_like(mask)
                if float((moved * taken).sum()) <= max_overlap * float(mask.sum()):
                    break
        cut = (image if sources is None else sources[j]).roll((dy, dx), dims=(1, 2))
        canvas = canvas * (1 - moved) + cut * moved
        placed[:j] = placed[:j] * (1 - moved)
        placed[j] = moved
    return canvas, placed


def collate_union_samples(items: list[dict]) -> dict:
    """Stack samples with different k: masks and token ids are padded to the batch's largest k.

    Returns masks (B, K, R, R), token_ids (B, K) with -1 padding, token_valid (B, K) bool, and the masked
    loss's region (B, 1, R, R): the union of each sample's masks, or the whole picture (`replace_full_loss`).
    """
    width = max(item["masks"].shape[0] for item in items)
    side = items[0]["masks"].shape[-1]
    masks = torch.zeros(len(items), width, side, side)
    token_ids = torch.full((len(items), width), -1, dtype=torch.long)
    for row, item in enumerate(items):
        k = item["masks"].shape[0]
        masks[row, :k] = item["masks"]
        token_ids[row, :k] = item["token_ids"]
    batch = {
        "pixel_values": torch.stack([item["pixel_values"] for item in items]),
        "masks": masks,
        "token_ids": token_ids,
        "token_valid": token_ids >= 0,
        "union_mask": torch.stack([item["loss_region"] for item in items]),
        "input_ids": torch.stack([item["input_ids"] for item in items]),
        "prompts": [item["prompt"] for item in items],
        "noise_seed": [item["noise_seed"] for item in items],  # a list stays on the host: no sync to read it
        "latent_keys": [item["latent_key"] for item in items],
    }
    if "class_pixel_values" in items[0]:
        batch["class_pixel_values"] = torch.stack([item["class_pixel_values"] for item in items])
        batch["class_input_ids"] = torch.stack([item["class_input_ids"] for item in items])
        batch["latent_keys"] += [item["class_latent_key"] for item in items]
    return batch


class UnionSamplingDataModule(L.LightningDataModule):
    """Serves the union samples of `total_steps` optimizer steps (times gradient accumulation) on every rank,
    drawn as `settings` (`data.loader`) say.

    A resumed run starts the stream at the restored step, so it sees the samples an uninterrupted run
    would have seen from there on.
    """

    def __init__(
        self,
        scene: SceneTensors | list[SceneTensors],
        tokenizers: list[CLIPTokenizer],
        token_names: list[str],
        token_ids: list[int],
        total_steps: int,
        settings: LoaderSettings = LoaderSettings(),
        seed: int = 0,
        class_images: torch.Tensor | None = None,
        class_prompt: str | None = None,
        token_lengths: list[int] | None = None,
    ):
        super().__init__()
        self.photos = [scene] if isinstance(scene, SceneTensors) else list(scene)
        self.sample_inputs = (scene, tokenizers, token_names, token_ids)
        self.settings, self.total_steps, self.seed = settings, total_steps, seed
        self.class_images, self.class_prompt, self.token_lengths = class_images, class_prompt, token_lengths
        self.dataset: UnionSamplingDataset | None = None

    def samples(self, length: int, offset: int = 0, replace_from: int = 0) -> UnionSamplingDataset:
        """The samples from index `offset` on, as this datamodule draws them."""
        return UnionSamplingDataset(
            *self.sample_inputs, length=length, settings=self.settings, seed=self.seed, offset=offset,
            replace_from=replace_from, class_images=self.class_images, class_prompt=self.class_prompt,
            token_lengths=self.token_lengths,
        )

    def _samples_per_step(self) -> int:
        """Samples that one optimizer step consumes across all ranks."""
        if self.trainer is None:
            return self.settings.batch_size
        return self.settings.batch_size * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def train_dataloader(self) -> DataLoader:
        # Lightning counts a resumed epoch's batches from where the checkpoint stopped and ends the epoch at the
        # loader's length, so the loader keeps its full length and the stream starts at the restored step.
        done = self.trainer.global_step if self.trainer is not None else 0
        per_step = self._samples_per_step()
        self.dataset = self.samples(max(self.total_steps, 1) * per_step, done * per_step,
                                    self.settings.replace_from_step * per_step)
        workers = self.settings.num_workers
        return DataLoader(
            self.dataset,
            batch_size=self.settings.batch_size,
            shuffle=False,  # every index is already an independent random draw
            num_workers=workers,
            collate_fn=collate_union_samples,
            persistent_workers=workers > 0,
        )
