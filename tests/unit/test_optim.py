import pytest
import torch

from break_a_scene.optim import adamw


def _train(implementation: str, steps: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in ((7, 5), (5,), (3, 2, 2))]
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": 1e-2}]
    optimizer = adamw(groups, lr=5e-3, betas=(0.9, 0.99), weight_decay=1e-2, implementation=implementation)
    for _ in range(steps):
        optimizer.zero_grad()
        sum((p.sin() * torch.arange(p.numel()).view_as(p)).sum() for p in params).backward()
        optimizer.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("implementation", ["foreach", "fused", "auto"])
def test_faster_adamw_paths_equal_the_per_tensor_loop(implementation):
    expected = _train("for_loop")
    for got, want in zip(_train(implementation), expected):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert not torch.equal(expected[0], _train("for_loop", steps=0)[0])  # the parameters did move


def test_auto_picks_the_fused_kernels_on_the_cpu():
    optimizer = adamw([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    assert optimizer.defaults["fused"] is True and not optimizer.defaults["foreach"]
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["weight_decay"] == 1e-2


def test_state_bits_other_than_32_or_8_are_refused_before_any_work():
    from break_a_scene.errors import UserInputError

    with pytest.raises(UserInputError, match=r"optimizer.state_bits=16; use 32 \(torch AdamW\) or 8"):
        adamw([torch.nn.Parameter(torch.zeros(2))], lr=1.0, state_bits=16)


@pytest.mark.parametrize("max_norm", [1e-2, 1e3], ids=["active", "idle"])
def test_clipping_with_nothing_extra_equals_torch_clip_grad_norm(max_norm):
    from break_a_scene.optim import clip_grad_norm_with_

    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(shape, generator=generator) for shape in ((4, 3), (7,))]
    expected = [g.clone() for g in grads]
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in expected]
    for param, grad in zip(params, expected):
        param.grad = grad
    want = torch.nn.utils.clip_grad_norm_(params, max_norm)
    got = clip_grad_norm_with_(grads, max_norm, torch.zeros(()))
    torch.testing.assert_close(got, want)
    for mine, theirs in zip(grads, expected):
        torch.testing.assert_close(mine, theirs)
    assert (float(want) > max_norm) == (max_norm < 1)
