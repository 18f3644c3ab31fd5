"""CUDA-graph-captured forward / training step (CUDA only; on the CPU only the clear errors)."""

import pytest
import torch
from helpers import make_inputs, make_noise, small_config

import ithp_fast
from ithp_fast.serving.graphs import GraphedForward, GraphedTrainStep, _copy_in, graphed_autograd

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def model(cfg, train=True, **kwargs):
    torch.manual_seed(0)
    return ithp_fast.ITHP(cfg, **kwargs).cuda().train(train)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_needs_cuda():
    cfg = small_config()
    with pytest.raises(RuntimeError, match="CUDA graphs need a CUDA device"):
        GraphedForward(ithp_fast.ITHP(cfg), *make_inputs(cfg))


NAMES = ("x", "visual", "acoustic", "noise[0]", "noise[1]")


def test_copy_in_fills_the_static_buffers_in_place():
    """What a replay does before launching the graph, checked on the CPU."""
    static = [torch.zeros(2, 3), torch.zeros(2, 1), torch.zeros(2, 4), None, None]
    addresses = [t.data_ptr() for t in static[:3]]
    new = [torch.full((2, 3), 1.0), None, torch.full((2, 4), 3.0), None, None]
    _copy_in(static, new, NAMES)
    assert [t.data_ptr() for t in static[:3]] == addresses  # the graph reads these very buffers
    assert torch.equal(static[0], new[0]) and torch.equal(static[2], new[2])
    assert not static[1].any()  # an argument left out keeps the buffer's content
    _copy_in(static, static, NAMES)  # passing the buffers themselves copies nothing
    assert torch.equal(static[0], new[0])


def test_copy_in_refuses_other_shapes_and_missing_buffers():
    static = [torch.zeros(2, 3), torch.zeros(2, 1), torch.zeros(2, 4), None, None]
    with pytest.raises(ValueError, match=r"visual: the graph was captured for shape \(2, 1\), got \(3, 1\)"):
        _copy_in(static, [None, torch.zeros(3, 1), None, None, None], NAMES)
    with pytest.raises(ValueError, match=r"noise\[0\]: this graph was captured without it"):
        _copy_in(static, [None, None, None, torch.zeros(2, 5), None], NAMES)


@cuda
def test_needs_cuda_inputs_and_triton():
    cfg = small_config()
    with pytest.raises(ValueError, match="x: CUDA graphs need CUDA tensors"):
        GraphedForward(model(cfg), *make_inputs(cfg))
    with pytest.raises(ValueError, match="'triton' backend"):
        GraphedForward(model(cfg, backend="torch"), *make_inputs(cfg, device="cuda"))


@cuda
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_forward_replay_equals_eager(train):
    cfg = small_config(drop_prob=0.0)
    m = model(cfg, train)
    inputs = make_inputs(cfg, (4, 50), device="cuda")
    noise = make_noise(cfg, (4, 50), device="cuda")
    graphed = GraphedForward(m, *inputs, noise=noise)
    new_inputs = make_inputs(cfg, (4, 50), device="cuda", seed=3)
    new_noise = make_noise(cfg, (4, 50), device="cuda", seed=4)
    got = [o.clone() for o in graphed(*new_inputs, noise=new_noise)]
    with torch.no_grad():
        want = m(*new_inputs, noise=new_noise)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@cuda
def test_replays_draw_fresh_noise_and_manual_seed_reproduces():
    cfg = small_config(drop_prob=0.3)
    m = model(cfg)
    graphed = GraphedForward(m, *make_inputs(cfg, (4, 50), device="cuda"))
    torch.manual_seed(11)
    a = [o.clone() for o in graphed()]
    b = [o.clone() for o in graphed()]
    assert not torch.equal(a[0], b[0]) and not torch.equal(a[3], b[3])
    torch.manual_seed(11)
    c = [o.clone() for o in graphed()]
    for u, w in zip(a, c):
        assert torch.equal(u, w)


@cuda
def test_train_step_gradients_match_eager():
    cfg = small_config(drop_prob=0.0)
    inputs = make_inputs(cfg, (4, 50), device="cuda")
    noise = make_noise(cfg, (4, 50), device="cuda")
    eager = model(cfg)
    eager(*inputs, noise=noise)[1].backward()
    graphed_model = model(cfg)
    step = GraphedTrainStep(graphed_model, *inputs, noise=noise)
    for _ in range(2):  # gradients are overwritten, not accumulated, by every replay
        loss = step(*inputs, noise=noise)
    torch.testing.assert_close(loss, eager(*inputs, noise=noise)[1])
    for (name, p), q in zip(eager.named_parameters(), graphed_model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=lambda m: f"{name}: {m}")


@cuda
def test_train_step_with_optimizer_learns():
    cfg = small_config(drop_prob=0.3)
    m = model(cfg)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2, capturable=True)
    inputs = make_inputs(cfg, (8, 50), device="cuda")
    step = GraphedTrainStep(m, *inputs, optimizer=opt)
    first = step().item()
    for _ in range(200):
        last = step()
    assert last.item() < first


@cuda
def test_graphed_autograd_matches_eager():
    cfg = small_config(drop_prob=0.0)
    m = model(cfg, eval_sampling="mean")
    m.eval()  # b = mu: no noise, so eager and graphed agree exactly
    inputs = make_inputs(cfg, (4, 50), device="cuda")
    f = graphed_autograd(m, *inputs)
    m.zero_grad()
    f(*inputs)[1].backward()
    graphed_grads = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m(*inputs)[1].backward()
    for a, p in zip(graphed_grads, m.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_copy_in_takes_new_mask_values():
    """Masks are static inputs: new values land in the captured bool buffers."""
    names = NAMES + ("token_mask", "detector_mask")
    static = [torch.zeros(2, 3), None, None, None, None, torch.ones(2, 5, dtype=torch.bool),
              torch.ones(2, 2, dtype=torch.bool)]
    address = static[5].data_ptr()
    new_mask = torch.tensor([[True, True, False, False, False], [True] * 5])
    _copy_in(static, [None] * 5 + [new_mask, None], names)
    assert static[5].data_ptr() == address and torch.equal(static[5], new_mask) and static[6].all()
    with pytest.raises(ValueError, match="detector_mask: this graph was captured without it"):
        _copy_in(static[:6] + [None], [None] * 6 + [torch.ones(2, 2, dtype=torch.bool)], names)


def cuda_masks(batch, tokens, seed):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, tokens + 1, (batch,), generator=g)
    token_mask = torch.arange(tokens)[None, :] < lengths[:, None]
    return token_mask.cuda(), (torch.rand(batch, 2, generator=g) > 0.3).cuda()


@cuda
def test_masked_forward_replay_equals_eager():
    cfg = small_config(drop_prob=0.0)
    m = model(cfg, train=False)
    inputs = make_inputs(cfg, (4, 50), device="cuda")
    noise = make_noise(cfg, (4, 50), device="cuda")
    tokens, present = cuda_masks(4, 50, 0)
    graphed = GraphedForward(m, *inputs, noise=noise, token_mask=tokens, detector_mask=present)
    new_tokens, new_present = cuda_masks(4, 50, 1)
    got = [o.clone() for o in graphed(noise=noise, token_mask=new_tokens, detector_mask=new_present)]
    with torch.no_grad():
        want = m(*inputs, noise=noise, token_mask=new_tokens, detector_mask=new_present)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@cuda
def test_masked_train_step_gradients_match_eager():
    cfg = small_config(drop_prob=0.0)
    inputs = make_inputs(cfg, (4, 50), device="cuda")
    noise = make_noise(cfg, (4, 50), device="cuda")
    tokens, present = cuda_masks(4, 50, 2)
    eager = model(cfg)
    eager(*inputs, noise=noise, token_mask=tokens, detector_mask=present)[1].backward()
    graphed_model = model(cfg)
    step = GraphedTrainStep(graphed_model, *inputs, noise=noise, token_mask=torch.ones_like(tokens),
                            detector_mask=torch.ones_like(present))
    loss = step(token_mask=tokens, detector_mask=present)
    torch.testing.assert_close(loss, eager(*inputs, noise=noise, token_mask=tokens, detector_mask=present)[1])
    for (name, p), q in zip(eager.named_parameters(), graphed_model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=lambda m: f"{name}: {m}")


def test_replay_copies_new_masks_in_before_launching():
    """``_Captured.replay`` on the CPU (a stand-in graph): the masks travel with the other inputs."""
    from ithp_fast.serving.graphs import _Captured

    class Graph:
        replays = 0

        def replay(self):
            Graph.replays += 1

    captured = _Captured.__new__(_Captured)
    captured.graph = Graph()
    captured.static = [torch.zeros(2, 3), torch.zeros(2, 1), torch.zeros(2, 4), None, None,
                       torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool)]
    tokens = torch.tensor([[True] * 5, [True, False, False, False, False]])
    present = torch.tensor([[True, False], [False, True]])
    captured.replay(None, None, None, None, tokens, present)
    assert Graph.replays == 1 and torch.equal(captured.static[5], tokens) and torch.equal(captured.static[6], present)
    args, kwargs = captured.inputs()
    assert kwargs["token_mask"] is captured.static[5] and kwargs["detector_mask"] is captured.static[6]
