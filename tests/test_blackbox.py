"""The black-box layer against ground truth: SPSA/FD vs autodiff, state across blocks, faults."""

from __future__ import annotations

import functools
import sys
import types

import numpy as np
import pytest
import torch

from afx_lightning.blackbox import BlackBoxLayer, FaultKind, FaultStats, FxWorkerPool, SlotGroup
from afx_lightning.registry import build_chain
from afx_lightning.testing import (
    TRIGGER_CRASH,
    TRIGGER_EXCEPTION,
    TRIGGER_HANG,
    TRIGGER_NAN,
    delay_chain,
    faulty_chain,
    reference_chain,
    reference_torch,
)

pytestmark = pytest.mark.timeout(300)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def _autodiff_grad(x, theta, weight):
    t = theta.detach().clone().requires_grad_()
    (reference_torch(x.double(), t.double()) * weight.double()).sum().backward()
    return t.grad.float()


def _layer_grad(layer, x, theta, weight, fresh=True):
    t = theta.detach().clone().requires_grad_()
    m = x.shape[0]
    y = layer(x, t, torch.arange(m), torch.full((m,), fresh))
    (y * weight).sum().backward()
    return y.detach(), t.grad


@pytest.fixture(scope="module")
def frames():
    g = torch.Generator().manual_seed(0)
    x = 0.5 * torch.randn(4, 1, 1024, generator=g)
    theta = 0.15 + 0.7 * torch.rand(4, 3, generator=g)  # away from the box edges
    weight = torch.randn(4, 1, 1024, generator=g)  # dL/dy of a linear loss
    return x, theta, weight


def test_spsa_gradient_matches_autodiff(frames):
    x, theta, weight = frames
    # K = 128: the norm of a K-pair estimate is off by about sqrt(2 / K); at K = 32 (±25 %) a 20 % tolerance held
    # for 85 % of seeds only, at 128 for every one of 20 seeds tried (ratio 0.90..1.08, cosine >= 0.98)
    layer = BlackBoxLayer(reference_chain, num_slots=4, num_eval_slots=1, num_perturbations=128, num_workers=2, seed=3)
    try:
        y, grad = _layer_grad(layer, x, theta, weight)
    finally:
        layer.close()
    assert torch.allclose(y, reference_torch(x, theta), atol=1e-5)  # forward renders the real effect
    truth = _autodiff_grad(x, theta, weight)
    assert _cos(grad, truth) >= 0.95
    # magnitudes agree too, not only directions
    assert grad.norm() == pytest.approx(truth.norm().item(), rel=0.2)


def test_finite_differences_match_autodiff(frames):
    x, theta, weight = frames
    layer = BlackBoxLayer(reference_chain, num_slots=4, num_eval_slots=1, gradient="fd", epsilon=1e-3, num_workers=2)
    try:
        _, grad = _layer_grad(layer, x, theta, weight)
    finally:
        layer.close()
    truth = _autodiff_grad(x, theta, weight)
    torch.testing.assert_close(grad, truth, rtol=2e-2, atol=1e-2 * truth.abs().max().item())


def test_orthogonal_directions_give_the_gradient_with_as_few_pairs_as_parameters(frames):
    """K = 4 Hadamard rows on P = 3 parameters: the estimate is the gradient (as finite differences give it, with
    2P renders), where 4 pairs of independent signs are off by about sqrt((P - 1) / K) of it."""
    x, theta, weight = frames
    truth = _autodiff_grad(x, theta, weight)
    errors = {}
    for perturbations in ("orthogonal", "random"):
        layer = BlackBoxLayer(
            reference_chain, num_slots=4, num_eval_slots=1, epsilon=1e-3, num_perturbations=4,
            perturbations=perturbations, num_workers=2, seed=3,
        )  # fmt: skip
        try:
            _, grad = _layer_grad(layer, x, theta, weight)
        finally:
            layer.close()
        errors[perturbations] = ((grad - truth).norm(dim=1) / truth.norm(dim=1)).max().item()
    assert errors["orthogonal"] < 0.03
    assert errors["random"] > 0.2


def test_orthogonal_directions_are_signs_whose_pairs_never_overlap():
    from afx_lightning.blackbox.gradients import GradientEstimator, orthogonal_directions, sylvester_hadamard

    g = torch.Generator().manual_seed(0)
    full = orthogonal_directions(5, 8, 6, g)  # K = 8 >= P = 6: a full design on every row
    assert full.shape == (5, 8, 6) and bool((full.abs() == 1).all())
    torch.testing.assert_close(full.transpose(1, 2) @ full, 8 * torch.eye(6).expand(5, 6, 6))
    few = orthogonal_directions(5, 4, 17, g)  # K < P: four distinct rows of the order-32 matrix on 17 columns
    overlap = (few @ few.transpose(1, 2)).abs() - 17 * torch.eye(4)
    assert overlap.max().item() < 17  # no direction repeated or negated within a slot (independent signs can)
    assert not torch.equal(few[0], few[1])  # rows, columns and signs are drawn per slot
    h = sylvester_hadamard(16)
    torch.testing.assert_close(h @ h.T, 16 * torch.eye(16))
    with pytest.raises(ValueError, match="power-of-two order, got 12"):
        sylvester_hadamard(12)
    with pytest.raises(ValueError, match="perturbations must be 'random' or 'orthogonal', got 'sobol'"):
        GradientEstimator(perturbations="sobol")  # type: ignore[arg-type]


def test_single_spsa_draws_are_unbiased(frames):
    """K=1 estimates are noisy, but their average over many steps converges to the true gradient."""
    x, theta, weight = frames
    layer = BlackBoxLayer(reference_chain, num_slots=4, num_eval_slots=1, num_workers=2, seed=7)
    try:
        grads = [_layer_grad(layer, x, theta, weight)[1] for _ in range(60)]
    finally:
        layer.close()
    truth = _autodiff_grad(x, theta, weight)
    assert _cos(grads[0], truth) < 0.99  # a single draw is not exact ...
    assert _cos(torch.stack(grads).mean(0), truth) > 0.95  # ... the mean is


def test_at_the_edges_of_the_box_the_estimates_are_the_one_sided_differences_of_the_clipped_function():
    """Every θ exactly at 0 or 1: one of θ ± εΔ is clipped back onto θ, so each pair is a one-sided difference
    over ε. The reference is that difference of the function itself (torch, inward from the edge). FD must equal
    it and SPSA (K = 128) match it in direction and size; the paper's divisor 2εΔ would halve it (norm ratio 0.5)."""
    g = torch.Generator().manual_seed(11)
    x = 0.5 * torch.randn(4, 1, 1024, generator=g)
    weight = torch.randn(4, 1, 1024, generator=g)
    theta = torch.randint(0, 2, (4, 3), generator=g).float()
    assert set(theta.unique().tolist()) == {0.0, 1.0}
    eps = 0.01

    def per_row(t):
        return (reference_torch(x.double(), t.double()) * weight.double()).sum(dim=(1, 2))

    reference = torch.zeros(4, 3)
    for i in range(3):
        inward = torch.where(theta[:, i] == 0, eps, -eps)
        moved = theta.clone()
        moved[:, i] += inward
        reference[:, i] = ((per_row(moved) - per_row(theta)) / inward.double()).float()
    spsa = BlackBoxLayer(reference_chain, num_slots=4, num_perturbations=128, epsilon=eps, num_workers=2, seed=5)
    fd = BlackBoxLayer(reference_chain, num_slots=4, gradient="fd", epsilon=eps, num_workers=2)
    try:
        g_spsa, g_fd = _layer_grad(spsa, x, theta, weight)[1], _layer_grad(fd, x, theta, weight)[1]
    finally:
        spsa.close()
        fd.close()
    torch.testing.assert_close(g_fd, reference, rtol=1e-3, atol=1e-3 * reference.abs().max().item())
    assert torch.isfinite(g_spsa).all()
    assert _cos(g_spsa, reference) >= 0.95
    assert g_spsa.norm() == pytest.approx(reference.norm().item(), rel=0.2)


def test_spsa_and_fd_agree_on_a_pedalboard_chain():
    g = torch.Generator().manual_seed(1)
    m = 3
    x = 0.8 * torch.randn(m, 1, 1024, generator=g)
    theta = 0.2 + 0.6 * torch.rand(m, 21, generator=g)
    target = 0.3 * torch.randn(m, 1, 1024, generator=g)

    def grad(layer):
        t = theta.clone().requires_grad_()
        y = layer(x, t, torch.arange(m), torch.ones(m, dtype=torch.bool))
        ((y - target) ** 2).mean().backward()
        return t.grad

    spsa = BlackBoxLayer("pb_mb_compressor", num_slots=m, num_perturbations=48, num_workers=2, seed=0)
    fd = BlackBoxLayer("pb_mb_compressor", num_slots=m, gradient="fd", num_workers=2)
    try:
        g_spsa, g_fd = grad(spsa), grad(fd)
    finally:
        spsa.close()
        fd.close()
    assert g_fd.abs().sum() > 0
    assert _cos(g_spsa, g_fd) > 0.6


def test_gradient_is_zero_where_a_parameter_has_no_effect():
    """FD on the mastering chain: EQ bands above 0.9 Nyquist are inactive, so their gradient is exactly 0."""
    layer = BlackBoxLayer("pb_mastering", num_slots=1, gradient="fd", num_workers=1)
    try:
        t = torch.full((1, 50), 0.5, requires_grad=True)
        y = layer(0.5 * torch.randn(1, 1, 1024), t, torch.tensor([0]), torch.tensor([True]))
        (y**2).sum().backward()
    finally:
        layer.close()
    names = layer.info.param_names
    inactive = [i for i, p in enumerate(layer.info.trainable_params) if "inactive" in p.description]
    assert inactive, "expected inactive EQ bands at 22050 Hz"
    assert torch.all(t.grad[0, inactive] == 0)
    assert t.grad[0, names.index("eq.g_out")] != 0


def _stream(layer, clip, theta, slot_fresh_every=None):
    """Render a [1, T] clip frame by frame through slot 0 of a layer in eval mode."""
    n = layer.block_size
    out = []
    for i, start in enumerate(range(0, clip.shape[-1], n)):
        fresh = i == 0 or (slot_fresh_every is not None and i % slot_fresh_every == 0)
        frame = clip[None, :, start : start + n]
        out.append(layer(frame, theta[None], torch.tensor([0]), torch.tensor([fresh]))[0])
    return torch.cat(out, dim=-1)


def test_frame_by_frame_through_a_slot_equals_one_call():
    sr, n, frames = 22050, 1024, 12
    g = torch.Generator().manual_seed(2)
    t = torch.arange(n * frames) / sr
    clip = (torch.sin(2 * np.pi * 220 * t) * torch.linspace(0.05, 1.0, n * frames)).float()[None]
    clip = clip + 0.05 * torch.randn(clip.shape, generator=g)
    theta = torch.rand(21, generator=g)
    layer = BlackBoxLayer("pb_mb_compressor", num_slots=1, num_eval_slots=1, num_workers=1).eval()
    try:
        streamed = _stream(layer, clip, theta)
        restarted = _stream(layer, clip, theta, slot_fresh_every=4)
    finally:
        layer.close()
    whole = build_chain("pb_mb_compressor", sample_rate=sr, block_size=n * frames)
    one_call = torch.from_numpy(whole.process(clip.numpy(), theta.numpy()))
    torch.testing.assert_close(streamed, one_call, atol=1e-5, rtol=0)
    # a fresh flag truly resets: frames 4.. of a restarted stream equal a stream started at frame 4
    layer2 = BlackBoxLayer("pb_mb_compressor", num_slots=1, num_eval_slots=1, num_workers=1).eval()
    try:
        from_frame4 = _stream(layer2, clip[:, 4 * n :], theta)
    finally:
        layer2.close()
    torch.testing.assert_close(restarted[:, 4 * n : 8 * n], from_frame4[:, : 4 * n], atol=1e-6, rtol=0)
    assert not torch.allclose(restarted[:, 4 * n : 8 * n], streamed[:, 4 * n : 8 * n], atol=1e-4)


def test_perturbed_instances_see_the_same_frames_as_the_forward_one():
    """Every instance of a slot (forward, +, -) must receive every frame, in order, once."""
    layer = BlackBoxLayer(delay_chain, num_slots=3, num_workers=2, num_perturbations=2, epsilon=0.1)
    g = torch.Generator().manual_seed(5)
    previous = None
    try:
        for step in range(6):
            x = torch.randn(3, 1, 1024, generator=g)
            theta = torch.rand(3, 1, generator=g).requires_grad_()
            layer(x, theta, torch.arange(3), torch.full((3,), step == 0))
            out = torch.from_numpy(layer.last_result.out)  # [M, 1 + 2K, C, N]
            params = layer.estimator.perturb(theta.detach(), torch.Generator())[0]  # only for shapes
            assert out.shape[1] == params.shape[1] == 5
            if previous is not None:
                gains = out.abs().amax(dim=(2, 3)) / previous.abs().amax(dim=(1, 2))[:, None]
                torch.testing.assert_close(out / gains[..., None, None], previous[:, None].expand_as(out))
            previous = x
    finally:
        layer.close()


def test_faults_inside_a_training_loop_are_survived_and_counted():
    m = 6
    plan = {3: TRIGGER_CRASH, 11: TRIGGER_HANG, 19: TRIGGER_NAN, 27: TRIGGER_EXCEPTION, 40: TRIGGER_CRASH}
    layer = BlackBoxLayer(faulty_chain, num_slots=m, num_workers=2, timeout_s=1.0, max_retries=0)
    g = torch.Generator().manual_seed(0)
    zeroed = []
    try:
        for step in range(50):
            x = 0.5 * torch.rand(m, 1, 1024, generator=g)
            if step in plan:
                x[step % m, 0, 0] = plan[step]
            theta = torch.rand(m, 1, generator=g).requires_grad_()
            y = layer(x, theta, torch.arange(m), torch.full((m,), step == 0))
            y.sum().backward()
            assert torch.isfinite(y).all()
            zeroed += [(step, r) for r in range(m) if theta.grad[r, 0] == 0]
            if step in plan:  # the faulty row comes back dry
                torch.testing.assert_close(y[step % m], x[step % m])
        stats = layer.fault_stats
    finally:
        layer.close()
    assert (stats.crash, stats.timeout, stats.nonfinite, stats.exception) == (2, 1, 1, 1)
    assert stats.rows_dropped == 5
    assert zeroed == sorted((s, s % m) for s in plan)  # exactly the faulty rows lost their gradient
    assert stats.worker_restarts == 3  # two crashes and one hang


def test_a_retry_on_fresh_instances_rescues_a_transient_fault():
    pool = FxWorkerPool(
        faulty_chain,
        {"train": SlotGroup(2, 1)},
        channels=1,
        block_size=16,
        num_params=1,
        sample_rate=22050,
        num_workers=1,
        timeout_s=5,
        max_retries=1,
    )
    try:
        audio = np.full((2, 1, 16), 0.25, np.float32)
        audio[1, 0, 0] = TRIGGER_EXCEPTION  # deterministic: fails again on retry
        result = pool.render("train", [0, 1], [True, True], audio, np.full((2, 1, 1), 0.5, np.float32))
        assert result.failed.tolist() == [False, True]
        assert pool.stats.exception == 2 and pool.stats.retries == 1 and pool.stats.rows_dropped == 1
        np.testing.assert_allclose(result.out[0, 0], 0.25 * 1.0)  # gain 0.5 * 2 = 1
    finally:
        pool.close()


def test_bad_inputs_get_clear_errors():
    layer = BlackBoxLayer(reference_chain, num_slots=2, num_eval_slots=1, num_workers=1)
    try:
        with pytest.raises(ValueError, match=r"theta must be shaped \(2, 3\)"):
            layer(torch.zeros(2, 1, 1024), torch.zeros(2, 4), torch.arange(2), torch.ones(2, dtype=torch.bool))
        with pytest.raises(ValueError, match="each slot may appear only once"):
            layer(torch.zeros(2, 1, 1024), torch.zeros(2, 3), torch.tensor([1, 1]), torch.ones(2, dtype=torch.bool))
        with pytest.raises(ValueError, match=r"slot ids must lie in \[0, 2\)"):
            layer(torch.zeros(1, 1, 1024), torch.zeros(1, 3), torch.tensor([5]), torch.ones(1, dtype=torch.bool))
        with pytest.raises(ValueError, match=r"audio must be shaped \(1, 1, 1024\)"):
            layer(torch.zeros(1, 1, 512), torch.zeros(1, 3), torch.tensor([0]), torch.ones(1, dtype=torch.bool))
    finally:
        layer.close()
    with pytest.raises(KeyError, match="unknown chain 'nope'; registered chains: .*pb_mb_compressor"):
        BlackBoxLayer("nope")


def test_a_factory_that_cannot_start_in_a_worker_fails_at_start_up(monkeypatch):
    # a module that exists only in this process: the worker cannot import the factory
    module = types.ModuleType("afx_ephemeral_chains")
    exec(
        "from afx_lightning.testing import reference_chain\ndef chain(**kw):\n    return reference_chain(**kw)",
        module.__dict__,
    )
    monkeypatch.setitem(sys.modules, "afx_ephemeral_chains", module)
    layer = BlackBoxLayer(module.chain, num_slots=1, num_workers=1)
    with pytest.raises(RuntimeError, match="fx worker 0 failed to start"):
        layer(torch.zeros(1, 1, 1024), torch.zeros(1, 3), torch.tensor([0]), torch.ones(1, dtype=torch.bool))


def test_an_unpicklable_factory_is_refused_with_a_clear_message():
    layer = BlackBoxLayer(lambda sample_rate, block_size: reference_chain(sample_rate, block_size), num_slots=1)
    with pytest.raises(TypeError, match="chain factory .* must be picklable"):
        layer(torch.zeros(1, 1, 1024), torch.zeros(1, 3), torch.tensor([0]), torch.ones(1, dtype=torch.bool))


# ------------------------------------------------------------------------------------ instance construction


def test_instance_construction_is_timed_apart_from_the_row_timeout():
    """Fresh rows build 1 + 2K = 3 instances at 0.4 s each (1.2 s): longer than the 0.5 s row timeout, well
    inside the build limit, so no row times out, every gradient survives, and the construction is counted."""
    from afx_lightning.testing import slow_to_build_chain

    m = 2
    layer = BlackBoxLayer(
        functools.partial(slow_to_build_chain, build_s=0.4),
        num_slots=m,
        num_eval_slots=1,
        num_workers=2,
        timeout_s=0.5,
        build_timeout_s=10.0,
        max_retries=0,
    )
    g = torch.Generator().manual_seed(0)
    try:
        for step in range(2):  # the second step reuses the instances: nothing is built
            theta = (0.2 + 0.6 * torch.rand(m, 1, generator=g)).requires_grad_()
            y = layer(0.5 * torch.rand(m, 1, 1024, generator=g), theta, torch.arange(m), torch.full((m,), step == 0))
            y.sum().backward()
            assert torch.all(theta.grad != 0), f"step {step}: gradients lost {theta.grad.tolist()}"
            assert layer.last_result.instances_built == (3 * m if step == 0 else 0)
        faults, built = layer.fault_stats, layer.build_stats
    finally:
        layer.close()
    assert faults.faults == 0 and faults.rows_dropped == 0, faults
    assert built.instances_built == 3 * m
    assert built.build_s >= 3 * m * 0.4 * 0.95  # summed over both workers, measured where the instances are built


def test_a_build_over_its_limit_or_failing_is_one_fault_that_names_the_build():
    from afx_lightning.testing import slow_to_build_chain

    def render(build_s: float):
        pool = FxWorkerPool(
            functools.partial(slow_to_build_chain, build_s=build_s),
            {"train": SlotGroup(1, 3)},
            channels=1,
            block_size=16,
            num_params=1,
            sample_rate=22050,
            num_workers=1,
            timeout_s=30.0,
            build_timeout_s=0.5,
            max_retries=0,
        )
        try:
            result = pool.render(
                "train", [0], [True], np.full((1, 1, 16), 0.25, np.float32), np.full((1, 3, 1), 0.5, np.float32)
            )
            return result, pool.stats
        finally:
            pool.close()

    result, stats = render(build_s=0.3)  # 3 x 0.3 s > 0.5 s: killed while building
    assert result.failed.tolist() == [True] and stats.build_timeout == 1 and stats.timeout == 0
    assert stats.worker_restarts == 1 and stats.rows_dropped == 1
    (event,) = result.events
    assert event.kind is FaultKind.BUILD_TIMEOUT and event.kind == "build_timeout"
    assert event.message == "building 3 plugin instance(s) exceeded build_timeout_s=0.5 s"
    np.testing.assert_array_equal(result.out[0], np.full((3, 1, 16), 0.25, np.float32))  # the row comes back dry

    result, stats = render(build_s=-1.0)  # the factory itself raises (time.sleep(-1))
    (event,) = result.events
    assert event.kind == "exception" and stats.exception == 1 and result.failed.tolist() == [True]
    assert event.message.startswith("building instances: ValueError") and "\n" not in event.message


def test_every_fault_kind_is_counted_under_its_own_name():
    """A fault kind added without its counter would be lost from the logged fault totals."""
    stats = FaultStats()
    for kind in FaultKind:
        stats.record(kind)
    assert stats.faults == len(FaultKind)
    assert {k: v for k, v in stats.as_dict().items() if v} == {kind.value: 1 for kind in FaultKind}


def test_a_slot_renders_consecutive_frames_in_one_call_as_frame_by_frame_and_a_fault_there_comes_back_dry():
    """``SlotGroup.frames``: a slot's rows in one call are its consecutive frames, in order (inference sends a
    chunk of frames per call). The block-delay chain's output is its previous input, so any reordering or lost
    state shows. A frame that raises comes back dry and unretried (its slot's later frames already rendered past
    it); the next frame starts on fresh instances (silence from the delay), the one after continues from it."""
    from afx_lightning.testing import TRIGGER_EXCEPTION, faulty_delay_chain

    n = 16
    rng = np.random.default_rng(0)
    frames = (0.1 * rng.standard_normal((6, 2, 1, n))).astype(np.float32)  # [frame, slot, C, N]
    params = np.full((12, 1, 1), 0.5, dtype=np.float32)  # gain 1.0
    pool = FxWorkerPool(
        delay_chain, {"process": SlotGroup(2, 1, frames=6)}, channels=1, block_size=n, num_params=1,
        sample_rate=22050, num_workers=2,
    )  # fmt: skip
    try:
        batched = pool.render("process", [0, 1] * 6, [True, True] + [False] * 10, frames.reshape(12, 1, n), params)
        with pytest.raises(ValueError, match="at most 6 time"):
            pool.render("process", [0] * 7, [False] * 7, frames.reshape(12, 1, n)[:7], params[:7])
    finally:
        pool.close()
    out = batched.out.reshape(6, 2, n)
    np.testing.assert_array_equal(out[0], 0.0)  # fresh instances: the delay starts silent
    np.testing.assert_array_equal(out[1:], frames[:-1, :, 0])  # each frame is its own slot's previous one
    assert not batched.failed.any()

    x = (0.1 * rng.standard_normal((4, 1, n))).astype(np.float32)
    x[1, 0, 0] = TRIGGER_EXCEPTION
    pool = FxWorkerPool(
        functools.partial(faulty_delay_chain, latency=n // 2), {"process": SlotGroup(1, 1, frames=4)}, channels=1,
        block_size=n, num_params=1, sample_rate=22050, num_workers=1, max_retries=1,
    )  # fmt: skip
    try:
        faulty = pool.render("process", [0] * 4, [True, False, False, False], x, np.full((4, 1, 1), 0.5, np.float32))
    finally:
        pool.close()
    assert faulty.failed.tolist() == [False, True, False, False] and pool.stats.retries == 0
    np.testing.assert_array_equal(faulty.out[1, 0], x[1])  # dry
    np.testing.assert_array_equal(faulty.out[2, 0, 0, : n // 2], 0.0)  # fresh after the fault
    np.testing.assert_array_equal(faulty.out[3, 0, 0, : n // 2], x[2, 0, n // 2 :])  # continues from frame 2
