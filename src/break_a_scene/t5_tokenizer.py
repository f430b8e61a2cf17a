"""A small T5-style tokenizer, built offline, for the tiny FLUX.1 and SD 3 models of the tests and the CPU
checks: a SentencePiece unigram vocabulary with T5's special ids (pad 0, end 1, unknown 2) and its 100
sentinel tokens at the end, whose words are the whole words of CLIP's BPE list (bundled in open-clip-torch),
so prompts split into words as they do for T5. Real models ship their own (`tokenizer_2` / `tokenizer_3`)."""

from __future__ import annotations

import copy
import functools
import string

from transformers import T5Tokenizer

from break_a_scene.clip_tokenizer import clip_merges

WORDS = 2000  # CLIP's most frequent whole words


@functools.lru_cache(maxsize=1)
def _cached_t5_tokenizer() -> T5Tokenizer:
    words = [left + right.removesuffix("</w>") for left, right in clip_merges() if right.endswith("</w>")]
    unique = list(dict.fromkeys(w for w in words if w.isascii() and w.isalpha()))[:WORDS]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + word, -1.0 - i / WORDS) for i, word in enumerate(unique)]
    pieces += [("\u2581" + c, -2.0) for c in string.ascii_lowercase + string.digits if c not in unique]
    pieces += [("\u2581", -3.0)] + [(c, -5.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=pieces, extra_ids=100)


def build_t5_tokenizer() -> T5Tokenizer:
    """A fresh copy each time (callers add their tokens to it)."""
    return copy.deepcopy(_cached_t5_tokenizer())
