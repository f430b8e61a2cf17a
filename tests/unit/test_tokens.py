import logging

import pytest
import torch

from break_a_scene.errors import UserInputError
from break_a_scene.tokens import FrozenRows, add_placeholder_tokens, check_new_tokens, default_token_names


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


def test_frozen_rows_restore_all_but_trainable():
    embedding = torch.nn.Embedding(6, 3)
    before = embedding.weight.detach().clone()
    guard = FrozenRows(embedding, [4, 5])
    with torch.no_grad():
        embedding.weight.add_(1.0)
    guard.restore()
    assert torch.equal(embedding.weight[:4], before[:4])
    assert torch.equal(embedding.weight[4:], before[4:] + 1.0)
