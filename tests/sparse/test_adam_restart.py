"""The Adam restart of single entries (g2g.sparse.dst.adam_restart) against torch.optim.Adam:
a restarted entry steps as a fresh parameter under a fresh torch.optim.Adam fed the same
gradients (moments, bias correction and value), every other entry as under an Adam that
never restarted anything.

What "step" means per entry: an entry restarted when its tensor had taken ``r`` optimizer
steps has taken ``s = t - r`` steps of its own after the tensor's ``t``-th; its first step
after the restart is a fresh parameter's first (``s = 1``)."""

import pytest
import torch

from g2g.sparse.dst import AdamRestart
from g2g.sparse.dst.adam_restart import step_count

SHAPE = (12, 10)
EPS32 = torch.finfo(torch.float32).eps
OPTIMIZERS = {
    "adam": (torch.optim.Adam, {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8}),
    "adam_l2": (torch.optim.Adam, {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-8, "weight_decay": 1e-2}),
    "adamw": (torch.optim.AdamW, {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 1e-1}),
}


def _fresh(values: torch.Tensor, kind: str) -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
    """A fresh parameter holding ``values`` under a fresh optimizer of ``kind``."""
    optimizer_class, hyper = OPTIMIZERS[kind]
    parameter = torch.nn.Parameter(values.detach().clone())
    return parameter, optimizer_class([parameter], **hyper)


def _entries(parameter: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return parameter.detach().reshape(-1)[indices]


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_restarted_entries_step_as_a_fresh_adam_parameter_and_the_others_as_plain_adam(kind):
    generator = torch.Generator().manual_seed(7)
    optimizer_class, hyper = OPTIMIZERS[kind]
    weight = torch.nn.Parameter(torch.randn(SHAPE, generator=generator))
    optimizer = optimizer_class([weight], **hyper)
    restart = AdamRestart(optimizer, {"w": weight})
    state = optimizer.state[weight]
    plain, plain_optimizer = _fresh(weight, kind)  # the same tensor under an Adam that never restarts
    trained = 40
    for _ in range(trained):
        gradient = torch.randn(SHAPE, generator=generator)
        weight.grad, plain.grad = gradient.clone(), gradient.clone()
        restart.step()
        plain_optimizer.step()
    assert torch.equal(weight, plain), "nothing restarted: torch's own update, bit for bit"

    # entries a regrow after step 40, entries b after step 43; b's first 10 are a's last 10
    # (restarted twice: their count starts again at 43)
    order = torch.randperm(weight.numel(), generator=generator)
    a, b = order[:30], order[20:50]
    fresh = {}  # regrowth -> (its entries, a fresh parameter of their values, its fresh optimizer)
    followers = []  # (entries, regrowth whose fresh parameter they follow, their positions in it, restart step)

    def regrow(name: str, entries: torch.Tensor) -> None:
        with torch.no_grad():
            weight.view(-1)[entries] = 0.1 * torch.randn(len(entries), generator=generator)
        restart.restart({"w": entries})
        assert not state["exp_avg"].view(-1)[entries].any() and not state["exp_avg_sq"].view(-1)[entries].any()
        fresh[name] = (entries, *_fresh(_entries(weight, entries), kind))
        restarted_at = step_count(state["step"])
        followers[:] = [(e[~torch.isin(e, entries)], n, p[~torch.isin(e, entries)], r) for e, n, p, r in followers]
        followers.append((entries, name, torch.arange(len(entries)), restarted_at))

    regrow("a", a)
    untouched = torch.ones(weight.numel(), dtype=torch.bool)
    untouched[order[:50]] = False
    exact_moments = hyper.get("weight_decay", 0) == 0 or optimizer_class is torch.optim.AdamW
    for tensor_step in range(trained + 1, trained + 11):
        gradient = torch.randn(SHAPE, generator=generator)
        for entries, parameter, fresh_optimizer in fresh.values():
            parameter.grad = gradient.reshape(-1)[entries].clone()
            fresh_optimizer.step()
        weight.grad, plain.grad = gradient.clone(), gradient.clone()
        restart.step()
        plain_optimizer.step()
        assert step_count(state["step"]) == tensor_step

        for entries, name, positions, restarted_at in followers:
            _, parameter, fresh_optimizer = fresh[name]
            fresh_state = fresh_optimizer.state[parameter]
            # the entries' own step count s = t - r is the fresh parameter's step count
            assert (restart.restart_steps["w"].view(-1)[entries] == restarted_at).all()
            assert tensor_step - restarted_at == step_count(fresh_state["step"])
            for key in ("exp_avg", "exp_avg_sq"):
                got, expected = _entries(state[key], entries), fresh_state[key][positions]
                if exact_moments or tensor_step - restarted_at == 1:
                    # elementwise from the same gradients (with L2 decay: and the same first value)
                    assert torch.equal(got, expected), (key, tensor_step)
                else:  # L2 decay puts the value into the gradient, and with it the value's rounding
                    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)
            # the value, bias correction included: equal to rounding (the update's last operations
            # are ordered differently from torch's addcdiv_), a few float32 ulps of the weights
            tolerance = 8 * EPS32 * float(parameter.detach().abs().max())
            torch.testing.assert_close(_entries(weight, entries), parameter.detach()[positions], rtol=0, atol=tolerance)

        # every other entry: plain Adam's value and moments, bit for bit
        assert torch.equal(weight.detach().view(-1)[untouched], plain.detach().view(-1)[untouched])
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(state[key].view(-1)[untouched], plain_optimizer.state[plain][key].view(-1)[untouched])
        if tensor_step == trained + 3:
            regrow("b", b)
    assert [(len(entries), name, restarted_at) for entries, name, _, restarted_at in followers] == [
        (20, "a", 40), (30, "b", 43)]
    assert restart.restarted_entries() == 50


def test_zeroed_moments_without_the_own_step_count_would_not_pass():
    """The check above is sharp: only zeroing the moments (the tensor's bias correction)
    makes a regrown weight's first step about 3x a fresh parameter's."""
    generator = torch.Generator().manual_seed(3)
    weight = torch.nn.Parameter(torch.randn(SHAPE, generator=generator))
    optimizer = torch.optim.Adam([weight], lr=1e-2)
    for _ in range(3000):
        weight.grad = torch.randn(SHAPE, generator=generator)
        optimizer.step()
    entries = torch.arange(0, weight.numel(), 7)
    for value in optimizer.state[weight].values():
        if value.shape == weight.shape:
            value.view(-1)[entries] = 0
    fresh, fresh_optimizer = _fresh(_entries(weight, entries), "adam")
    before = _entries(weight, entries)
    weight.grad = torch.randn(SHAPE, generator=generator)
    fresh.grad = weight.grad.view(-1)[entries].clone()
    optimizer.step()
    fresh_optimizer.step()
    ratio = ((_entries(weight, entries) - before).abs() / (fresh.detach() - before).abs()).median().item()
    assert ratio == pytest.approx(0.1 / (0.001 / (1 - 0.999 ** 3001)) ** 0.5, rel=1e-3)  # about 3.08


def test_restart_before_any_step_is_never_restarted_and_the_state_round_trips():
    weight = torch.nn.Parameter(torch.ones(SHAPE))
    restart = AdamRestart(torch.optim.Adam([weight]), {"w": weight})
    restart.restart({"w": torch.tensor([1, 2])})  # no optimizer state yet: step 0
    assert restart.restarted_entries() == 0 and not restart.restart_steps["w"].any()
    weight.grad = torch.ones(SHAPE)
    restart.step()
    restart.restart({"w": torch.tensor([3, 4, 5])})
    saved = {name: steps.clone() for name, steps in restart.state_dict().items()}
    other = AdamRestart(torch.optim.Adam([weight]), {"w": weight})
    other.load_state_dict(saved)
    assert other.restarted_entries() == 3 and torch.equal(other.restart_steps["w"], saved["w"])
    other.load_state_dict({})  # a checkpoint written before restart steps were recorded
    assert other.restarted_entries() == 0
