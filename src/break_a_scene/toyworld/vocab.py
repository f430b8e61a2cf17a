"""A CLIP tokenizer pruned to the toy world's words, so the shipped text encoder's embedding matrix is
small. It splits those words exactly as the full CLIP tokenizer does; any other word still tokenizes,
into single characters."""

from __future__ import annotations

from transformers import CLIPTokenizer

from break_a_scene.clip_tokenizer import clip_merges, tokenizer_from_merges
from break_a_scene.toyworld.world import BACKGROUNDS, COLOURS, SHAPES, SLOTS, TEXTURES

CAPTION_WORDS = ("a", "an", "photo", "of", "and", "on", "the", "in", "background", "object", "shape", "thing")
MAX_LENGTH = 40  # the longest caption (three textured objects, positions, background) is 32 tokens


def world_words() -> list[str]:
    return sorted({*CAPTION_WORDS, *SHAPES, *COLOURS, *BACKGROUNDS, *SLOTS, *TEXTURES})


def _merges_used(word: str, ranks: dict[tuple[str, str], int]) -> list[tuple[str, str]]:
    """The merges CLIP's BPE applies to `word`, lowest rank first, as the tokenizer does."""
    symbols = list(word[:-1]) + [word[-1] + "</w>"]
    used = []
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, 1 << 30), i, pair) for i, pair in enumerate(zip(symbols, symbols[1:]))]
        rank, _, best = min(pairs)
        if rank == 1 << 30:
            break
        used.append(best)
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return used


def build_toyworld_tokenizer() -> CLIPTokenizer:
    merges = clip_merges()
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    needed = {pair for word in world_words() for pair in _merges_used(word, ranks)}
    kept = [pair for pair in merges if pair in needed]  # CLIP's order, so ranks compare as in CLIP
    return tokenizer_from_merges(kept, max_length=MAX_LENGTH)
