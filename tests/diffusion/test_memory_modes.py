"""Memory modes for big denoisers: the planner against mocked budgets, fp8 layerwise casting and
GGUF loading on a tiny random-weight Flux transformer, and the CUDA-only modes' refusals on CPU.

Measured here (seed 1234; seeds 0-3 while choosing the bounds): fp8 storage with bf16 compute is
2.3% off the fp32 output (1.7-3.6% over seeds; bf16 alone 0.6%; bound 6%); cast Linear weights take
exactly 0.5 of bf16, the whole tiny model 0.633 (norms, modulation and proj_out stay bf16; real
Flux.1 0.636). GGUF Q8_0 is 0.50% off (0.76% at seed 0; bound 2%), Q4_0 8.0% (9.4%; bound 15%);
quantized weights take 0.531 (Q8_0) and 0.281 (Q4_0) of bf16.
gguf 0.19 cannot quantize K-quants (dequantize only), so the Q4_K case writes random Q4_K blocks
and checks diffusers' dequantization against gguf's reference.
"""

from __future__ import annotations

import copy
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from app.engine import memory_modes as mm
from app.engine.memory_modes import (
    MODES,
    apply_mode,
    compile_denoiser,
    fp8_storage_ratio,
    gguf_info,
    is_gguf,
    load_gguf_denoiser,
    next_cheaper,
    nf4_quantization_config,
    plan_memory,
    resident_weight_bytes,
)

G = 10**9
FLUX_DEV = ("Flux.1 dev", int(23.8 * G), int(9.8 * G))
TINY_FLUX = dict(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
                 num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])
FP8_TOL = 0.06
Q8_TOL = 0.02
Q4_TOL = 0.15


# ------------------------------------------------------------------------------------ planner


@pytest.mark.parametrize(("device", "free", "host", "mode", "offload", "words"), [
    ("cuda", 22.1, 64, "fp8", True, "fp8 weights (15.1 GB) with the text encoders offloaded"),  # 24 GB card
    ("cuda", 79.0, 128, "full", False, "everything on the device"),  # H100 80 GB
    ("cuda", 30.0, 64, "model_offload", True, "bf16 weights with the text encoders offloaded"),
    ("cuda", 11.5, 64, "group_offload", True, "group offload"),  # 12 GB card
    ("cuda", 2.0, 64, "sequential_offload", True, "sequential offload"),
    ("cpu", 64.0, 64, "full", False, "CPU RAM is the memory"),
    ("mps", 20.0, 64, "sequential_offload", True, "sequential offload"),  # no fp8 or group offload on MPS
])
def test_plan_by_budget(device, free, host, mode, offload, words):
    plan = plan_memory(*FLUX_DEV, device, int(free * G), host * G, fp8_ratio=FLUX_FP8_RATIO)
    assert (plan.mode, plan.offload_encoders) == (mode, offload), plan.reason
    assert words in plan.reason
    assert plan.reason.startswith(f"Flux.1 dev bf16 needs 23.8 GB + 9.8 GB text encoders, {free:.1f} GB free: ")
    assert "\n" not in plan.reason and plan.resident_bytes < plan.peak_bytes


FLUX_FP8_RATIO = 0.636  # fp8_storage_ratio of the real-geometry Flux.1 transformer (meta device)


def test_plan_reason_reads_like_the_log_line():
    plan = plan_memory(*FLUX_DEV, "cuda", int(22.1 * G), 64 * G, fp8_ratio=0.5)
    assert plan.reason == ("Flux.1 dev bf16 needs 23.8 GB + 9.8 GB text encoders, 22.1 GB free: "
                           "fp8 weights (11.9 GB) with the text encoders offloaded")
    assert plan.fits and not plan.forced


def test_plan_gguf_file_and_group_offload_streams():
    plan = plan_memory("Flux.1 dev Q8_0", int(12.7 * G), int(9.8 * G), "cuda", int(22.1 * G), 64 * G, gguf=True)
    assert (plan.mode, plan.offload_encoders) == ("gguf", True)
    assert "GGUF weights (12.7 GB)" in plan.reason
    roomy = plan_memory(*FLUX_DEV, "cuda", int(11.5 * G), 128 * G)
    assert roomy.stream and not roomy.low_cpu_mem_usage
    short = plan_memory(*FLUX_DEV, "cuda", int(11.5 * G), 40 * G)
    assert short.stream and short.low_cpu_mem_usage and "host RAM" in short.reason


def test_forced_modes():
    plan = plan_memory(*FLUX_DEV, "cuda", int(79 * G), 128 * G, forced="fp8")
    assert plan.mode == "fp8" and plan.forced and plan.reason.endswith("(forced)")
    assert not plan.offload_encoders  # it fits with everything resident
    tight = plan_memory(*FLUX_DEV, "cuda", int(8 * G), 64 * G, forced="fp8")
    assert tight.mode == "fp8" and not tight.fits and "may not fit" in tight.reason
    assert plan_memory(*FLUX_DEV, "cpu", 64 * G, 64 * G, forced="fp8").mode == "fp8"  # fp8 runs on CPU
    with pytest.raises(ValueError, match=r"nf4.*cpu"):
        plan_memory(*FLUX_DEV, "cpu", 64 * G, 64 * G, forced="nf4")
    with pytest.raises(ValueError, match=r"group_offload.*mps"):
        plan_memory(*FLUX_DEV, "mps", 64 * G, 64 * G, forced="group_offload")
    with pytest.raises(ValueError, match="GGUF file"):
        plan_memory(*FLUX_DEV, "cuda", 64 * G, 64 * G, forced="fp8", gguf=True)
    with pytest.raises(ValueError, match=r"\.gguf"):
        plan_memory(*FLUX_DEV, "cuda", 64 * G, 64 * G, forced="gguf")
    with pytest.raises(ValueError, match="unknown memory mode"):
        plan_memory(*FLUX_DEV, "cuda", 64 * G, 64 * G, forced="int2")


def test_next_cheaper_walks_the_order():
    walk, mode = [], "full"
    while mode is not None:
        walk.append(mode)
        mode = next_cheaper(mode, "cuda:0", bitsandbytes=True)
    assert walk == [m for m in MODES if m != "gguf"]
    assert next_cheaper("fp8", "cuda", bitsandbytes=False) == "model_offload"
    assert next_cheaper("gguf", "cuda", bitsandbytes=True) == "model_offload"
    assert [next_cheaper("full", "cpu"), next_cheaper("fp8", "cpu")] == ["fp8", None]
    assert next_cheaper("full", "mps") == "model_offload"
    assert next_cheaper("sequential_offload", "cuda") is None


def test_importing_the_module_does_not_import_torch():
    code = "import sys, app.engine.memory_modes; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


# ------------------------------------------------------------------------------ tiny transformer


def tiny_flux():
    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(1234)
    return FluxTransformer2DModel(**TINY_FLUX).eval()


def tiny_inputs(dtype=None):
    import torch

    g = torch.Generator().manual_seed(1)
    x = dict(hidden_states=torch.randn(1, 16, 4, generator=g), encoder_hidden_states=torch.randn(1, 8, 32, generator=g),
             pooled_projections=torch.randn(1, 32, generator=g), timestep=torch.tensor([0.5]))
    if dtype is not None:
        x = {k: v.to(dtype) for k, v in x.items()}
    return {**x, "img_ids": torch.randn(16, 3, generator=g), "txt_ids": torch.zeros(8, 3)}


def forward(model, dtype=None):
    import torch

    with torch.no_grad():
        return model(**tiny_inputs(dtype)).sample.float()


def rel_err(a, b) -> float:
    return float((a - b).norm() / b.norm())


class FakePipe:
    """The parts of a DiffusionPipeline apply_mode uses, recording the offload calls."""

    def __init__(self, transformer):
        self.transformer = transformer
        self.calls: list[tuple[str, dict]] = []

    def to(self, device):
        self.transformer.to(device)
        self.calls.append(("to", {"device": device}))
        return self

    def __getattr__(self, name):
        if name.startswith("enable_"):
            return lambda *a, **kw: self.calls.append((name, kw))
        raise AttributeError(name)


def cpu_plan(mode: str):
    return plan_memory("tiny", 10**6, 10**6, "cpu", 10**12, 10**12, forced=mode)


def test_fp8_layerwise_casting_on_cpu():
    import torch

    base = tiny_flux()
    ref = forward(base)
    bf16 = copy.deepcopy(base).to(torch.bfloat16)
    out_bf16 = forward(bf16, torch.bfloat16)
    pipe = FakePipe(copy.deepcopy(bf16))
    text = apply_mode(pipe, cpu_plan("fp8"), "cpu", "transformer", torch.bfloat16)
    assert text == "fp8 weights, bf16 compute, all on cpu"
    fp8 = pipe.transformer
    out = forward(fp8, torch.bfloat16)
    assert not torch.equal(out, out_bf16)
    assert rel_err(out, ref) < FP8_TOL, rel_err(out, ref)  # measured 0.023 (bf16 alone: 0.006)
    assert fp8.transformer_blocks[0].attn.to_q.weight.dtype == torch.float8_e4m3fn
    assert fp8.transformer_blocks[0].norm1.linear.weight.dtype == torch.float8_e4m3fn  # modulation too, as ComfyUI
    assert fp8.proj_out.weight.dtype == torch.bfloat16
    assert fp8.time_text_embed.timestep_embedder.linear_1.weight.dtype == torch.bfloat16
    assert fp8.dtype == torch.bfloat16  # the pipeline sees the compute dtype

    linears = [m for m in fp8.modules() if isinstance(m, torch.nn.Linear)]
    cast = [m for m in linears if m.weight.dtype == torch.float8_e4m3fn]
    cast_bytes = sum(m.weight.numel() * m.weight.element_size() for m in cast)
    assert cast_bytes / sum(2 * m.weight.numel() for m in cast) <= 0.55  # 0.500
    whole = resident_weight_bytes(fp8) / resident_weight_bytes(bf16)
    assert whole == pytest.approx(fp8_storage_ratio(base), abs=1e-3)
    assert whole <= 0.6, whole  # the tiny model's embedders are a large share (full Flux.1: ~0.50)

    apply_mode(pipe, cpu_plan("fp8"), "cpu", "transformer", torch.bfloat16)  # a second apply adds no hooks
    assert torch.equal(forward(fp8, torch.bfloat16), out)


def test_resident_bytes_counts_shared_and_skips_meta():
    import torch

    lin = torch.nn.Linear(4, 4)
    seq = torch.nn.Sequential(lin, lin)
    assert resident_weight_bytes(seq) == (16 + 4) * 4
    assert resident_weight_bytes(torch.nn.Linear(4, 4, device="meta")) == 0


# ------------------------------------------------------------------------------------------ GGUF


def write_gguf(path: Path, state: dict, qtype_name: str, k_quant_key: str | None = None) -> dict:
    """A diffusers-key GGUF as real files are made: 2-D weights quantized where the last dim allows
    (multiples of 32), others F16, 1-D tensors (biases, norms) F32. Returns the weights as stored,
    dequantized (the reference a loader must reproduce)."""
    import gguf
    import numpy as np
    import torch

    qtype = gguf.GGMLQuantizationType[qtype_name]
    writer = gguf.GGUFWriter(str(path), arch="flux")
    stored = {}
    rng = np.random.default_rng(0)
    for key, value in state.items():
        a = value.float().numpy()
        if key == k_quant_key:  # gguf cannot quantize K-quants: random Q4_K blocks with small scales
            q4k = gguf.GGMLQuantizationType.Q4_K
            _block, type_size = gguf.GGML_QUANT_SIZES[q4k]
            raw = rng.integers(0, 256, size=(a.shape[0], a.shape[1] // 256 * type_size), dtype=np.uint8)
            blocks = raw.reshape(-1, type_size)
            blocks[:, 0:4] = np.array([2e-4, 1e-3], dtype=np.float16).view(np.uint8)  # d, dmin
            writer.add_tensor(key, raw, raw_dtype=q4k)
            stored[key] = gguf.quants.dequantize(raw, q4k)
        elif a.ndim >= 2 and a.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(a, qtype)
            writer.add_tensor(key, q, raw_dtype=qtype)
            stored[key] = gguf.quants.dequantize(q, qtype)
        elif a.ndim >= 2:
            writer.add_tensor(key, a.astype(np.float16))
            stored[key] = a.astype(np.float16).astype(np.float32)
        else:
            writer.add_tensor(key, a.astype(np.float32))
            stored[key] = a
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {k: torch.from_numpy(np.ascontiguousarray(v)).reshape(state[k].shape) for k, v in stored.items()}


@pytest.fixture(scope="module")
def gguf_setup(tmp_path_factory):
    base = tiny_flux()
    folder = tmp_path_factory.mktemp("gguf")
    base.save_config(folder / "config" / "transformer")
    return base, forward(base), folder


@pytest.mark.parametrize(("qtype", "tol", "ratio"), [("Q8_0", Q8_TOL, 0.55), ("Q4_0", Q4_TOL, 0.30)])
def test_gguf_load_on_cpu(gguf_setup, qtype, tol, ratio):
    import torch
    from diffusers import FluxTransformer2DModel

    base, ref, folder = gguf_setup
    path = folder / f"tiny_{qtype}.gguf"
    stored = write_gguf(path, base.state_dict(), qtype)
    assert is_gguf(path)
    info = gguf_info(path)
    assert info["types"][qtype] >= 20 and info["types"]["F32"] > 0 and info["architecture"] == "flux"
    assert info["tensors"] == len(base.state_dict())

    model = load_gguf_denoiser(path, FluxTransformer2DModel, folder / "config", "transformer", torch.float32)
    assert type(model.transformer_blocks[0].attn.to_q).__name__ == "GGUFLinear"
    out = forward(model)
    assert rel_err(out, ref) < tol, rel_err(out, ref)  # measured Q8_0 0.005, Q4_0 0.080
    exact = copy.deepcopy(base)
    exact.load_state_dict(stored)
    assert rel_err(out, forward(exact)) < 1e-3  # the file's own values (measured 2e-4: diffusers dequantizes in fp16)

    quant = [p for p in model.parameters() if getattr(p, "quant_type", None) is not None]
    qbytes = sum(p.numel() * p.element_size() for p in quant)
    bf16 = sum(2 * int(torch.Size(p.quant_shape).numel()) for p in quant)
    assert qbytes / bf16 <= ratio  # Q8_0: 34 bytes a 32 weights = 0.531; Q4_0: 18 = 0.281
    assert resident_weight_bytes(model) < resident_weight_bytes(base) / 2 * ratio / 0.45

    pipe = FakePipe(model)
    plan = plan_memory("tiny", info["bytes"], 10**6, "cpu", 10**12, 10**12, gguf=True)
    assert plan.mode == "gguf"
    assert apply_mode(pipe, plan, "cpu", "transformer", torch.float32) == (
        f"GGUF {qtype} weights, fp32 compute, all on cpu")


def test_gguf_k_quant_blocks(gguf_setup):
    import torch
    from diffusers import FluxTransformer2DModel

    base, _ref, folder = gguf_setup
    key = "time_text_embed.timestep_embedder.linear_1.weight"  # (32, 256): the one tensor K-quants fit
    path = folder / "tiny_q4k.gguf"
    stored = write_gguf(path, base.state_dict(), "Q8_0", k_quant_key=key)
    assert gguf_info(path)["types"]["Q4_K"] == 1
    model = load_gguf_denoiser(path, FluxTransformer2DModel, folder / "config", "transformer", torch.float32)
    from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

    weight = model.time_text_embed.timestep_embedder.linear_1.weight
    assert weight.quant_type.name == "Q4_K"
    assert rel_err(dequantize_gguf_tensor(weight).float(), stored[key]) < 1e-3  # diffusers' torch vs gguf's numpy
    exact = copy.deepcopy(base)
    exact.load_state_dict(stored)
    assert rel_err(forward(model), forward(exact)) < 1e-3


def test_is_gguf_and_load_refusals(tmp_path):
    import torch
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    st = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(st))
    disguised = tmp_path / "model.gguf"
    disguised.write_bytes(st.read_bytes())
    assert not is_gguf(st) and not is_gguf(disguised) and not is_gguf(tmp_path / "missing.gguf")
    assert not is_gguf(tmp_path)
    with pytest.raises(ValueError, match="not a GGUF file"):
        load_gguf_denoiser(disguised, FluxTransformer2DModel, tmp_path, "transformer", torch.float32)
    with pytest.raises(ValueError, match="not loaded from a GGUF file"):
        apply_mode(FakePipe(tiny_flux()), plan_memory("tiny", 1, 1, "cpu", 10**9, 10**9, gguf=True), "cpu",
                   "transformer", torch.float32)


# ------------------------------------------------------------- a real tiny FluxPipeline in fp8 and GGUF


def tiny_flux_pipeline(tmp: Path, transformer):
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline
    from transformers import CLIPTextModel, T5Config, T5EncoderModel, T5Tokenizer

    from tests.tiny_models import _text_config, make_tokenizer

    torch.manual_seed(7)
    tok = make_tokenizer(tmp / "clip_tok")
    t5_tok = T5Tokenizer()  # the built-in vocabulary: offline, every word maps to <unk>
    t5 = T5EncoderModel(T5Config(d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=2,
                                 relative_attention_num_buckets=8, vocab_size=len(t5_tok),
                                 is_encoder_decoder=False)).eval()
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                        latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
                        shift_factor=0.0609, scaling_factor=1.5035)
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
                        text_encoder=CLIPTextModel(_text_config(len(tok))).eval(), tokenizer=tok,
                        text_encoder_2=t5, tokenizer_2=t5_tok, transformer=transformer)


def render(pipe):
    import torch

    return pipe("a red house", num_inference_steps=2, guidance_scale=5.0, height=8, width=8, max_sequence_length=48,
                generator=torch.Generator().manual_seed(0), output_type="np").images


def test_fp8_and_gguf_in_a_real_tiny_flux_pipeline(gguf_setup, tmp_path):
    import numpy as np
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel

    base, _ref, folder = gguf_setup
    pipe = tiny_flux_pipeline(tmp_path, copy.deepcopy(base))
    ref = render(pipe)
    fp8 = FluxPipeline(**{**pipe.components, "transformer": copy.deepcopy(base)})
    assert apply_mode(fp8, cpu_plan("fp8"), "cpu", "transformer", torch.float32).startswith("fp8 weights")
    out = render(fp8)
    assert out.shape == (1, 8, 8, 3) and not np.array_equal(out, ref)
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < FP8_TOL  # measured 0.003 (the VAE damps it)

    path = folder / "pipe_Q8_0.gguf"
    write_gguf(path, base.state_dict(), "Q8_0")
    model = load_gguf_denoiser(path, FluxTransformer2DModel, folder / "config", "transformer", torch.float32)
    gp = FluxPipeline(**{**pipe.components, "transformer": model})
    plan = plan_memory("tiny", gguf_info(path)["bytes"], 10**6, "cpu", 10**12, 10**12, gguf=True)
    assert "GGUF Q8_0" in apply_mode(gp, plan, "cpu", "transformer", torch.float32)
    out = render(gp)
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < Q8_TOL


# ------------------------------------------------------------------- CUDA-only modes, compile, nf4


def test_offload_modes_call_diffusers_with_its_signatures():
    """apply_mode on 'cuda' with a recording pipeline: the offload calls bind to diffusers 0.42's
    signatures (nothing runs on a GPU; torch.device('cuda') is only a name here)."""
    import torch
    from diffusers import DiffusionPipeline

    gb = 10**9
    for mode, method in [("model_offload", "enable_model_cpu_offload"), ("group_offload", "enable_group_offload"),
                         ("sequential_offload", "enable_sequential_cpu_offload")]:
        pipe = FakePipe(torch.nn.Linear(2, 2))
        plan = plan_memory("tiny", 24 * gb, 10 * gb, "cuda", 12 * gb, 100 * gb, forced=mode)
        apply_mode(pipe, plan, "cuda", "transformer", torch.bfloat16)
        ((name, kwargs),) = pipe.calls
        assert name == method
        inspect.signature(getattr(DiffusionPipeline, method)).bind(pipe, **kwargs)
        if mode == "group_offload":
            assert kwargs["offload_type"] == "block_level" and kwargs["num_blocks_per_group"] == 1
            assert kwargs["use_stream"] is True and kwargs["onload_device"] == torch.device("cuda")
    fp8 = FakePipe(tiny_flux())  # fp8 with the encoders offloaded: cast first (here), then model offload
    plan = plan_memory(*FLUX_DEV, "cuda", int(22.1 * G), 64 * G)
    assert apply_mode(fp8, plan, "cuda", "transformer", torch.bfloat16).startswith("fp8 weights, bf16 compute")
    assert [c[0] for c in fp8.calls] == ["enable_model_cpu_offload"]
    for mode in ("model_offload", "group_offload", "sequential_offload"):
        plan = plan_memory("tiny", 24 * gb, 10 * gb, "cuda", 12 * gb, 100 * gb, forced=mode)
        with pytest.raises(ValueError, match=rf"{mode}.*cpu"):
            apply_mode(FakePipe(torch.nn.Linear(2, 2)), plan, "cpu", "transformer", torch.float32)


def test_compile_is_skipped_on_cpu_and_a_noop_the_second_time(monkeypatch):
    base = tiny_flux()
    pipe = FakePipe(base)
    before = forward(base)
    text = compile_denoiser(pipe, "transformer", "cpu")
    assert "skipped" in text and "cpu" in text
    assert pipe.transformer is base and not hasattr(pipe, "_imagebash_compiled")
    assert all(m._compiled_call_impl is None for m in base.modules())
    assert (forward(base) == before).all()

    calls = []
    monkeypatch.setattr(base, "compile_repeated_blocks", lambda **kw: calls.append(kw))
    assert "compiled" in compile_denoiser(pipe, "transformer", "cuda")  # recorded, not compiled
    assert compile_denoiser(pipe, "transformer", "cuda") == "transformer already compiled"
    assert calls == [{"fullgraph": False, "dynamic": False}]


def test_nf4_refusals_on_cpu(monkeypatch):
    import torch

    with pytest.raises(ValueError, match=r"nf4.*cuda.*cpu"):
        nf4_quantization_config(torch.bfloat16, device="cpu")
    with pytest.raises(ValueError, match=r"nf4.*cpu"):
        apply_mode(FakePipe(tiny_flux()), plan_memory(*FLUX_DEV, "cuda", 8 * G, 64 * G, forced="nf4"), "cpu",
                   "transformer", torch.bfloat16)
    with pytest.raises(ValueError, match="not loaded in 4 bits"):  # checked before anything touches CUDA
        apply_mode(FakePipe(tiny_flux()), plan_memory(*FLUX_DEV, "cuda", 8 * G, 64 * G, forced="nf4"), "cuda",
                   "transformer", torch.bfloat16)
    monkeypatch.setattr(mm, "has_bitsandbytes", lambda: False)
    with pytest.raises(ImportError, match="pip install bitsandbytes"):
        nf4_quantization_config(torch.bfloat16, device="cuda")
