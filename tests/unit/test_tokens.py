import logging

import pytest
import torch

from break_a_scene.errors import UserInputError
from break_a_scene.tokens import (
    add_placeholder_tokens,
    check_new_tokens,
    default_token_names,
    plain_token_embedding,
    split_token_rows,
)


def test_default_names():
    assert default_token_names(3) == ["<asset0>", "<asset1>", "<asset2>"]


def test_added_tokens_get_new_ids_and_single_positions(tiny):
    tokens = add_placeholder_tokens(tiny.tokenizer, tiny.text_encoder, ["<asset0>", "<asset1>"], ["cup", "spoon"])
    assert tokens.ids == [49408, 49409]
    assert tiny.text_encoder.get_input_embeddings().weight.shape[0] == 49410
    ids = tiny.tokenizer("a photo of <asset1> and <asset0>").input_ids
    assert ids == [49406, 320, 1125, 539, 49409, 537, 49408, 49407]


def test_initialised_from_first_bpe_piece_with_warning(tiny, caplog):
    weight = tiny.text_encoder.get_input_embeddings().weight
    cup = tiny.tokenizer.encode("cup", add_special_tokens=False)
    pieces = tiny.tokenizer.encode("espressomachine", add_special_tokens=False)
    assert len(cup) == 1 and len(pieces) > 1
    expected = [weight[cup[0]].detach().clone(), weight[pieces[0]].detach().clone()]
    with caplog.at_level(logging.WARNING):
        tokens = add_placeholder_tokens(tiny.tokenizer, tiny.text_encoder, ["<a>", "<b>"], ["cup", "espressomachine"])
    weight = tiny.text_encoder.get_input_embeddings().weight
    assert torch.equal(weight[tokens.ids[0]], expected[0])
    assert torch.equal(weight[tokens.ids[1]], expected[1])
    warnings = [r.getMessage() for r in caplog.records if "BPE pieces" in r.getMessage()]
    assert len(warnings) == 1 and "'espressomachine' for <b>" in warnings[0]


def test_without_words_uses_released_rare_rows(tiny):
    weight = tiny.text_encoder.get_input_embeddings().weight
    vocab = weight.shape[0]  # 49408; N = 3 -> rows V-6 .. V-4
    expected = weight[vocab - 6 : vocab - 3].detach().clone()
    tokens = add_placeholder_tokens(tiny.tokenizer, tiny.text_encoder, default_token_names(3))
    assert torch.equal(tiny.text_encoder.get_input_embeddings().weight[tokens.ids], expected)


@pytest.mark.parametrize("name", ["cat", "<|endoftext|>", "Photo"])
def test_existing_token_is_refused(tiny, name):
    with pytest.raises(UserInputError, match="already exists in the tokenizer's vocabulary"):
        check_new_tokens(tiny.tokenizer, [name])


def test_repeated_names_are_refused(tiny):
    with pytest.raises(UserInputError, match="repeat"):
        check_new_tokens(tiny.tokenizer, ["<x>", "<x>"])


def test_token_rows_embedding_reads_like_the_full_matrix(tiny):
    tokens = add_placeholder_tokens(tiny.tokenizer, tiny.text_encoder, default_token_names(2), ["cup", "dog"])
    full = tiny.text_encoder.get_input_embeddings().weight.detach().clone()
    ids = tiny.tokenizer(["a photo of <asset1> and <asset0>"], return_tensors="pt").input_ids
    plain = tiny.text_encoder(ids)[0]
    spliced = split_token_rows(tiny.text_encoder, tokens.ids)
    assert [name for name, p in spliced.named_parameters()] == ["rows", "base.weight"]
    assert torch.equal(spliced.weight, full) and spliced.rows.shape == (2, 32)
    assert torch.equal(tiny.text_encoder(ids)[0], plain)
    with plain_token_embedding(tiny.text_encoder) as encoder:
        assert type(encoder.get_input_embeddings()) is torch.nn.Embedding
        assert torch.equal(encoder.get_input_embeddings().weight, full)
    assert tiny.text_encoder.get_input_embeddings() is spliced


@pytest.mark.parametrize("max_norm", [100.0, 1e-3], ids=["clipping_idle", "clipping_active"])
def test_phase1_on_the_token_rows_equals_the_full_matrix_with_rows_restored(tiny, max_norm):
    """The released code trains the whole matrix, clips its whole gradient, and writes the other rows back
    after each step; training the rows alone, clipping with the frozen rows' gradient counted, is the same
    update (AdamW with weight decay), 3 steps, within 1e-6."""
    from break_a_scene.optim import clip_grad_norm_with_

    tokens = add_placeholder_tokens(tiny.tokenizer, tiny.text_encoder, default_token_names(2), ["cup", "dog"])
    ids = tiny.tokenizer(["a photo of <asset1> and <asset0>", "a photo of <asset0>"], padding="max_length",
                         max_length=77, return_tensors="pt").input_ids
    target = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(0))
    encoder = tiny.text_encoder.requires_grad_(False)

    def backward(optimizer):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(encoder(ids)[0], target).backward()

    matrix = encoder.get_input_embeddings().weight
    start = matrix.detach().clone()
    matrix.requires_grad_(True)
    optimizer = torch.optim.AdamW([matrix], lr=5e-3, weight_decay=1e-2)
    others = torch.ones(matrix.shape[0], dtype=torch.bool)
    others[tokens.ids] = False
    norms = []
    for _ in range(3):
        backward(optimizer)
        norms.append(float(torch.nn.utils.clip_grad_norm_([matrix], max_norm)))
        optimizer.step()
        with torch.no_grad():
            matrix[others] = start[others]
    expected = matrix.detach()[tokens.ids].clone()
    assert (min(norms) > max_norm) == (max_norm < 1) and max(norms) < 100  # the clipping is what the two cases say

    with torch.no_grad():
        matrix.copy_(start)
    matrix.requires_grad_(False)
    spliced = split_token_rows(encoder, tokens.ids)
    optimizer = torch.optim.AdamW([spliced.rows], lr=5e-3, weight_decay=1e-2)
    for step in range(3):
        backward(optimizer)
        _, frozen = spliced.take_frozen_rows_grad()
        total = clip_grad_norm_with_([spliced.rows.grad], max_norm, frozen.pow(2).sum())
        assert float(total) == pytest.approx(norms[step], rel=1e-5)
        optimizer.step()
    assert not torch.equal(spliced.rows.detach(), start[tokens.ids])
    torch.testing.assert_close(spliced.rows.detach(), expected, atol=1e-6, rtol=0)
    assert torch.equal(encoder.get_input_embeddings().weight[others], start[others])


def test_tokenize_all_pads_each_tokenizer_to_the_longest_with_its_own_pad_id():
    from break_a_scene.clip_tokenizer import build_clip_tokenizer
    from break_a_scene.t5_tokenizer import build_t5_tokenizer
    from break_a_scene.tokens import tokenize_all

    clip, t5 = build_clip_tokenizer("<|endoftext|>"), build_t5_tokenizer()
    ids = tokenize_all([clip, t5], ["a photo"], [77, 100])
    assert ids.shape == (1, 2, 100)
    assert ids[0, 0, :4].tolist() == [49406, 320, 1125, 49407] and (ids[0, 0, 4:] == 49407).all()  # 77 + 23 pads
    assert ids[0, 1, :3].tolist() == [t5.convert_tokens_to_ids("\u2581a"), t5.convert_tokens_to_ids("\u2581photo"), 1]
    assert (ids[0, 1, 3:] == 0).all()


def test_placeholder_ids_translate_from_the_first_tokenizer_to_each_encoder():
    from break_a_scene.tokens import PlaceholderTokens

    tokens = PlaceholderTokens(["<a>", "<b>"], [49408, 49409], None, encoder_ids=[[49408, 49409], [2234, 2235]])
    batch = torch.tensor([[49409, -1], [49408, 49409]])
    assert tokens.translate(batch, 0).tolist() == [[49409, -1], [49408, 49409]]
    assert tokens.translate(batch, 1).tolist() == [[2235, -1], [2234, 2235]]
    assert PlaceholderTokens(["<a>"], [7], None).ids_in(2) == [7]  # one vocabulary: the same ids everywhere
