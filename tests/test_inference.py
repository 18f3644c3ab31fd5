"""Serving wrappers (ithp_fast/serving/): buckets, padding, graphs, compile, ITHP-DeBERTa logits."""

import pytest
import torch
from helpers import TOLERANCES, small_config
from test_encode import identity_second_level_model, skip_unless_triton_runs
from transformers import DebertaV2Config

import ithp_fast
from ithp_fast import ITHPConfig, ITHPDeberta
from ithp_fast.encode import encode
from ithp_fast.serving.deberta import ServingDeberta, deberta_logits
from ithp_fast.serving.encoder import ServingEncoder
from ithp_fast.serving.logits import backbone_states, prebuilt_relative_positions

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def compiled_graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def ithp(device="cpu", backend=None, cfg=None, dtype=torch.float32):
    skip_unless_triton_runs(device, backend)
    torch.manual_seed(0)
    return ithp_fast.ITHP(cfg or small_config(), backend=backend).to(device=device, dtype=dtype).eval()


# --- ServingEncoder -------------------------------------------------------------------------


@pytest.mark.parametrize("lead", [(), (1,), (2, 3), (3, 2, 2), (0, 4)])
def test_cpu_torch_backend_runs_the_prepacked_onednn_chain(lead):
    model = ithp()
    server = ServingEncoder(model, runtime="torch")
    assert server.bucket_rows == () and server.path == "onednn"
    x = torch.randn(*lead, model.config.X0_dim)
    with torch.no_grad():
        got = server(x)
        assert got.shape == lead + (model.config.B1_dim,)
        torch.testing.assert_close(got, encode(model, x), **TOLERANCES[torch.float32])


def test_cpu_default_without_the_prepacked_chain_calls_encode():
    model = ithp()
    for server in (ServingEncoder(model, sample=True), ServingEncoder(ithp(dtype=torch.bfloat16))):
        assert server.path == "encode"
    x = torch.randn(2, 3, model.config.X0_dim)
    with torch.no_grad():
        torch.testing.assert_close(ServingEncoder(ithp(dtype=torch.float64)).__call__(x.double()),
                                   encode(ithp(dtype=torch.float64), x.double()), rtol=0, atol=0)


def test_prepacked_chain_sees_weight_updates_and_keeps_non_finite_values():
    model = ithp()
    server = ServingEncoder(model, runtime="torch")
    assert server.path == "onednn"
    x = torch.randn(5, model.config.X0_dim)
    server(x)  # packs
    torch.manual_seed(9)
    other = ithp_fast.ITHP(model.config).eval()
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(server(x), encode(other, x), **TOLERANCES[torch.float32])
        model.encoder2[0].weight.mul_(2)  # an in-place update
        torch.testing.assert_close(server(x), encode(model, x), **TOLERANCES[torch.float32])
    x[1, 3], x[3, 0] = float("nan"), float("inf")
    with torch.no_grad():
        want = encode(model, x)
        got = server(x)
    torch.testing.assert_close(got.isnan(), want.isnan())
    assert got[1].isnan().all() and got[3].isnan().all()


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_padding_to_a_bucket_gives_the_unpadded_answer(backend):
    model = ithp(backend=backend)
    server = ServingEncoder(model, batch_sizes=(1, 4), tokens=3, pad_to_buckets=True)
    assert server.bucket_rows == (3, 12)
    d = model.config.X0_dim
    with torch.no_grad():
        for lead in [(3,), (1, 3), (2, 3), (5,), (4, 3), (13,), (2, 9)]:  # the last two: beyond the buckets
            x = torch.randn(*lead, d)
            got = server(x)
            assert got.shape == lead + (model.config.B1_dim,)
            torch.testing.assert_close(got, encode(model, x), **TOLERANCES[torch.float32])


def test_outputs_are_fresh_unless_asked_otherwise():
    model = ithp()
    x = torch.randn(2, model.config.X0_dim)
    server = ServingEncoder(model, batch_sizes=(1,), tokens=2, pad_to_buckets=True)
    first = server(x)
    server(torch.randn_like(x))
    with torch.no_grad():
        torch.testing.assert_close(first, encode(model, x))
    shared = ServingEncoder(model, batch_sizes=(1,), tokens=2, pad_to_buckets=True, clone_output=False)
    with torch.no_grad():
        torch.testing.assert_close(shared(x), encode(model, x))


def test_weights_updated_in_place_are_seen():
    model = ithp()
    server = ServingEncoder(model, batch_sizes=(1,), tokens=4, pad_to_buckets=True)
    x = torch.randn(4, model.config.X0_dim)
    torch.manual_seed(9)
    other = ithp_fast.ITHP(model.config)
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(server(x), encode(other.eval(), x))


def test_sampling_draws_fresh_noise_with_the_posterior_statistics():
    model = identity_second_level_model("triton")
    server = ServingEncoder(model, batch_sizes=(1,), tokens=400, sample=True, pad_to_buckets=True)
    x = torch.randn(1, model.config.X0_dim).expand(400, -1).contiguous()
    first, second = server(x), server(x)
    assert not torch.equal(first, second)
    with torch.no_grad():
        mu0, logvar0 = model.encoder1(x[:1]).chunk(2, dim=-1)
    z = (torch.cat([first, second]) - mu0) / torch.exp(logvar0 / 2)
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05


def test_compiled_buckets_never_recompile_after_warm_up():
    torch._dynamo.reset()
    model = ithp(cfg=small_config(X0_dim=16, inter_dim=16, B0_dim=8, B1_dim=8))
    server = ServingEncoder(model, batch_sizes=(1, 2), tokens=2, compile_mode="auto")  # eager vs "default"
    assert server.bucket_rows == (2, 4)
    assert set(server.chosen_modes) == {2, 4} and set(server.chosen_modes.values()) <= {None, "default"}
    after_warmup = compiled_graphs()
    assert after_warmup >= 2  # one graph per bucket
    with torch.no_grad():
        for rows in (1, 2, 3, 4, 7):  # 7 rows: beyond the buckets, eager
            x = torch.randn(rows, 16)
            torch.testing.assert_close(server(x), encode(model, x), **TOLERANCES[torch.float32])
    assert compiled_graphs() == after_warmup


def test_bad_arguments_are_named():
    model = ithp()
    with pytest.raises(ValueError, match="compile_mode"):
        ServingEncoder(model, compile_mode="fastest")
    with pytest.raises(ValueError, match="cuda_graphs"):
        ServingEncoder(model, cuda_graphs=True)
    with pytest.raises(ValueError, match="batch_sizes"):
        ServingEncoder(model, batch_sizes=(0, 2))
    with pytest.raises(ValueError, match="precision"):
        ServingEncoder(model, precision="bf16")
    with pytest.raises(ValueError, match="eval mode"):
        ServingEncoder(model.train())
    with pytest.raises(ValueError, match="x: expected last dimension"):
        ServingEncoder(model.eval(), runtime="torch")(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"^runtime: expected one of \('auto', 'torch', 'onnxruntime'\), got 'ort'$"):
        ServingEncoder(model, runtime="ort")
    with pytest.raises(ValueError, match=r"^backend: expected one of \('auto', 'torch', 'onnxruntime'\), got 'ort'$"):
        ServingEncoder(model, backend="ort")  # the old name of runtime=
    with pytest.raises(ValueError, match="runtime: backend= is its old name; give one of the two"):
        ServingEncoder(model, runtime="torch", backend="onnxruntime")
    with pytest.raises(ValueError, match="runtime: 'onnxruntime' serves the float32 posterior mean on the CPU"):
        ServingEncoder(model, runtime="onnxruntime", sample=True)


def test_the_old_name_of_runtime_still_works():
    model = ithp()
    for server in (ServingEncoder(model, backend="torch"), ServingEncoder(model, runtime="torch", backend="torch")):
        assert server.path == "onednn" and server.runtime == "torch"


# --- ITHP-DeBERTa ----------------------------------------------------------------------------

HIDDEN = 32


def tiny_backbone():
    """DeBERTa-v3's layout (relative attention with log-bucketed positions, c2p + p2c), tiny."""
    return DebertaV2Config(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                           vocab_size=100, max_position_embeddings=64, relative_attention=True,
                           position_buckets=8, pos_att_type=["p2c", "c2p"], share_att_key=True,
                           norm_rel_ebd="layer_norm", position_biased_input=False)


def tiny_deberta(ithp_cls=ithp_fast.ITHP, eval_sampling="sample", pass_attention_mask=True, dtype=torch.float32):
    torch.manual_seed(0)
    cfg = ITHPConfig(X0_dim=HIDDEN, X1_dim=7, X2_dim=5, inter_dim=16, B0_dim=8, B1_dim=6)
    model = ITHPDeberta(tiny_backbone(), cfg, ithp_cls=ithp_cls, eval_sampling=eval_sampling,
                        pass_attention_mask=pass_attention_mask)
    return model.to(dtype).eval()


def requests(b, t, seed=0, pad_from=None):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    if pad_from is not None:
        mask[0, pad_from:] = 0
    return ids, mask


@pytest.mark.parametrize("ithp_cls", [ithp_fast.ITHP, ithp_fast.reference.ITHP])
@pytest.mark.parametrize("eval_sampling", ["sample", "mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_logits_equal_the_forward_logits(ithp_cls, eval_sampling, dtype):
    model = tiny_deberta(ithp_cls, eval_sampling, dtype=dtype)
    ids, mask = requests(3, 9, pad_from=6)
    visual, acoustic = torch.rand(3, 9, 5, dtype=dtype), torch.rand(3, 9, 7, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    noise = tuple(torch.randn(3, 9, d, generator=g).to(dtype) for d in (8, 6))
    with torch.no_grad():
        want = model(ids, visual, acoustic, mask, noise=noise).logits
        got = deberta_logits(model, ids, mask, noise=noise)
    torch.testing.assert_close(got, want, **TOLERANCES[dtype])
    if eval_sampling == "sample":
        with torch.no_grad():
            assert not torch.equal(deberta_logits(model, ids, mask), deberta_logits(model, ids, mask))


def test_prebuilt_relative_positions_give_the_backbone_output():
    backbone = tiny_deberta().dberta.model
    ids, mask = requests(2, 11, pad_from=7)
    relative_pos = prebuilt_relative_positions(backbone, 11, torch.device("cpu"))
    assert relative_pos is not None
    with torch.no_grad():
        want = backbone(ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(backbone_states(backbone, ids, mask, relative_pos), want, rtol=0, atol=0)


def test_served_deberta_pads_tokens_and_batch_exactly():
    model = tiny_deberta(eval_sampling="mean")
    server = ServingDeberta(model, batch_sizes=(1, 4), tokens=(8, 12), pad_to_buckets=True)
    with torch.no_grad():
        for b, t, pad_from in [(1, 8, None), (1, 5, None), (3, 10, 7), (4, 12, None), (6, 8, None), (2, 20, None)]:
            ids, mask = requests(b, t, pad_from=pad_from)
            got = server(ids, mask)
            assert got.shape == (b, 1)
            torch.testing.assert_close(got, deberta_logits(model, ids, mask), **TOLERANCES[torch.float32])
        ids, _ = requests(2, 6)
        torch.testing.assert_close(server(ids), deberta_logits(model, ids), **TOLERANCES[torch.float32])


def test_without_the_mask_only_exact_token_buckets_are_used():
    model = tiny_deberta(eval_sampling="mean", pass_attention_mask=False)
    server = ServingDeberta(model, batch_sizes=(2,), tokens=8, pad_to_buckets=True)
    assert server._bucket_for(1, 8) == (2, 8) and server._bucket_for(1, 5) is None
    with torch.no_grad():
        for t in (5, 8):
            ids, _ = requests(1, t)
            torch.testing.assert_close(server(ids), deberta_logits(model, ids), **TOLERANCES[torch.float32])


def test_served_deberta_checks_its_inputs():
    server = ServingDeberta(tiny_deberta())
    with pytest.raises(ValueError, match="input_ids"):
        server(torch.rand(2, 3))
    with pytest.raises(ValueError, match="attention_mask"):
        server(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 4))


# --- CUDA only: captured graphs, compile modes ----------------------------------------------


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_buckets_equal_eager(dtype):
    model = ithp("cuda", cfg=ITHPConfig(), dtype=dtype)
    server = ServingEncoder(model)  # buckets 1, 8, 32, 128 x 50 tokens, graphs
    tol = TOLERANCES[torch.float32] if dtype == torch.float32 else dict(rtol=5e-2, atol=5e-2)
    with torch.no_grad():
        for lead in [(1, 50), (8, 50), (32, 50), (128, 50), (1, 7), (3, 50), (129, 50), ()]:
            x = torch.randn(*lead, 768, device="cuda", dtype=dtype)
            torch.testing.assert_close(server(x), encode(model, x), **tol)


@cuda
def test_cuda_graph_sampling_fresh_per_replay():
    model = identity_second_level_model("triton", device="cuda")
    server = ServingEncoder(model, batch_sizes=(1,), tokens=2000, sample=True)
    x = torch.randn(1, model.config.X0_dim, device="cuda").expand(2000, -1).contiguous()
    first, second = server(x), server(x)
    assert not torch.equal(first, second)
    with torch.no_grad():
        mu0, logvar0 = model.encoder1(x[:1]).chunk(2, dim=-1)
    z = (torch.cat([first, second]) - mu0) / torch.exp(logvar0 / 2)
    assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1) < 0.03


@cuda
@pytest.mark.parametrize("mode", ["max-autotune-no-cudagraphs", "reduce-overhead"])
def test_cuda_compile_modes_never_recompile(mode):
    torch._dynamo.reset()
    model = ithp("cuda", cfg=ITHPConfig())
    server = ServingEncoder(model, batch_sizes=(1, 8), compile_mode=mode)
    after_warmup = compiled_graphs()
    with torch.no_grad():
        for b in (1, 3, 8, 9):
            x = torch.randn(b, 50, 768, device="cuda")
            torch.testing.assert_close(server(x), encode(model, x), **TOLERANCES[torch.float32])
    assert compiled_graphs() == after_warmup


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_served_deberta_equals_eager(dtype):
    model = tiny_deberta(eval_sampling="mean").to("cuda", dtype)
    server = ServingDeberta(model, batch_sizes=(1, 8, 32), tokens=50)
    # Padding a request to its bucket changes the GEMM shapes, hence cuBLAS's reduction order:
    # float32 through the backbone then differs at ~1e-5 (2.4e-5 seen on an H100).
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else TOLERANCES[dtype]
    with torch.no_grad():
        for b, t in [(1, 50), (5, 50), (32, 50), (2, 30), (40, 50)]:
            ids, mask = requests(b, t)
            ids, mask = ids.cuda(), mask.cuda()
            torch.testing.assert_close(server(ids, mask), deberta_logits(model, ids, mask), **tol)


@cuda
def test_cuda_served_deberta_samples_fresh_per_replay():
    model = tiny_deberta(eval_sampling="sample").cuda()
    server = ServingDeberta(model, batch_sizes=(4,), tokens=50)
    ids, mask = (t.cuda() for t in requests(4, 50))
    assert not torch.equal(server(ids, mask), server(ids, mask))


# --- Many threads: every caller gets its own answer ------------------------------------------


def answers_from_threads(serve, requests_, threads=4, rounds=5):
    """``serve(*r)`` for every request, ``rounds`` times over, from ``threads`` threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    work = [r for _ in range(rounds) for r in requests_]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda r: serve(*r), work)), work


@pytest.mark.parametrize("how", [dict(pad_to_buckets=True), dict(runtime="torch")])  # buckets; the oneDNN chain
def test_served_encoder_answers_each_thread_its_own_request(how):
    model = ithp()
    server = ServingEncoder(model, batch_sizes=(1, 4), tokens=3, **how)
    g = torch.Generator().manual_seed(0)
    reqs = [(torch.randn(rows, model.config.X0_dim, generator=g),) for rows in (1, 2, 3, 5, 7, 12, 4, 9) * 4]
    serial = {id(r[0]): server(*r) for r in reqs}
    got, work = answers_from_threads(server, reqs)
    wrong = sum(not torch.equal(out, serial[id(r[0])]) for out, r in zip(got, work))
    assert wrong == 0, f"{wrong} of {len(work)} answers differ from the serial ones"


def test_served_deberta_answers_each_thread_its_own_request():
    model = tiny_deberta(eval_sampling="mean")
    server = ServingDeberta(model, batch_sizes=(1, 4), tokens=8, pad_to_buckets=True)
    reqs = [requests(b, t, seed=i, pad_from=t - 2 if i % 3 == 0 else None)
            for i, (b, t) in enumerate([(1, 8), (2, 6), (3, 8), (4, 5), (1, 3), (4, 8)] * 3)]
    serial = {id(r[0]): server(*r) for r in reqs}
    got, work = answers_from_threads(server, reqs)
    wrong = sum(not torch.equal(out, serial[id(r[0])]) for out, r in zip(got, work))
    assert wrong == 0, f"{wrong} of {len(work)} answers differ from the serial ones"


@pytest.mark.parametrize("levels", [1, 3])
def test_cpu_paths_serve_any_level_count(levels):
    from helpers import level_config

    model = ithp(cfg=level_config(levels))
    x = torch.randn(2, 5, model.config.X0_dim)
    with torch.no_grad():
        want = encode(model, x)
        for server in (ServingEncoder(model, runtime="torch"), ServingEncoder(model, pad_to_buckets=True, tokens=5)):
            torch.testing.assert_close(server(x), want, **TOLERANCES[torch.float32])
