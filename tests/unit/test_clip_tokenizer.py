from break_a_scene.clip_tokenizer import build_clip_tokenizer


def test_offline_tokenizer_is_real_clip():
    tokenizer = build_clip_tokenizer()
    assert len(tokenizer) == 49408
    assert tokenizer.model_max_length == 77
    # ids of OpenAI/OpenCLIP's tokenizer: <|startoftext|> a photo of a cat <|endoftext|>
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer.pad_token_id == 0  # SD 2.x pads with "!"
    assert build_clip_tokenizer(pad_token="<|endoftext|>").pad_token_id == 49407  # SD 1.x
