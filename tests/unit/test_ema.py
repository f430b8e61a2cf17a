import pytest
import torch

from break_a_scene.ema import EmaTeacher


def _net() -> torch.nn.Module:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1.0)
    net[1].requires_grad_(False)  # a frozen layer (the base weights under LoRA)
    return net


def test_teacher_moves_toward_the_trained_weights_by_one_minus_decay():
    online = _net()
    teacher = EmaTeacher(online, decay=0.9)
    with torch.no_grad():
        online[0].weight.fill_(11.0)
        online[1].weight.fill_(5.0)  # frozen: the update leaves the teacher's copy as it was made
    teacher.update(online)
    assert torch.equal(teacher.model[0].weight, torch.full((2, 2), 2.0))  # 0.9 * 1 + 0.1 * 11
    assert torch.equal(teacher.model[0].bias, torch.full((2,), 1.0))  # unchanged weights stay
    assert torch.equal(teacher.model[1].weight, torch.full((1, 2), 1.0))
    teacher.update(online)
    assert torch.allclose(teacher.model[0].weight, torch.full((2, 2), 2.9))  # 0.9 * 2 + 0.1 * 11
    assert not any(p.requires_grad for p in teacher.model.parameters()) and not teacher.model.training


def test_teacher_state_holds_the_moving_weights_and_loads_back():
    online = _net()
    teacher = EmaTeacher(online, decay=0.5)
    with torch.no_grad():
        online[0].weight.fill_(3.0)
    teacher.update(online)
    state = teacher.state_dict(online)
    assert sorted(state) == ["0.bias", "0.weight"]  # the frozen layer's weights equal the loaded model's
    fresh = EmaTeacher(_net(), decay=0.5)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.model[0].weight, torch.full((2, 2), 2.0))
    with pytest.raises(ValueError, match="lacks"):
        fresh.load_state_dict({"2.weight": torch.zeros(1)})


def test_decay_out_of_range_is_refused():
    with pytest.raises(ValueError, match="method.ema_decay=1.0"):
        EmaTeacher(_net(), decay=1.0)
