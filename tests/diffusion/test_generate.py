"""Text to Image, Image to Image, Inpaint and the latent nodes on the tiny model, through the engine."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from app.engine import NodeProgress
from app.engine.wire import decode_png
from tests.diffusion.conftest import direct_ctx, make_graph, run_ok, txt2img_graph


def test_txt2img_same_seed_same_pixels_other_seed_differs(engine, tiny_sd_dir):
    a = run_ok(engine, txt2img_graph(tiny_sd_dir, seed=5)).output("gen")
    engine.cache.clear()
    b = run_ok(engine, txt2img_graph(tiny_sd_dir, seed=5)).output("gen")
    c = run_ok(engine, txt2img_graph(tiny_sd_dir, seed=6)).output("gen")
    assert a.shape == (1, 64, 64, 3) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0 and a.std() > 0.01
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.01


def test_batch_image_i_uses_seed_plus_i(engine, tiny_sd_dir):
    batch = run_ok(engine, txt2img_graph(tiny_sd_dir, seed=3, batch_size=2)).output("gen")
    second = run_ok(engine, txt2img_graph(tiny_sd_dir, seed=4)).output("gen")
    assert batch.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(batch[1], second[0], atol=2e-3)


@pytest.mark.parametrize("scheduler", ["euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "unipc"])
def test_every_scheduler_runs(engine, tiny_sd_dir, scheduler):
    img = run_ok(engine, txt2img_graph(tiny_sd_dir, scheduler=scheduler)).output("gen")
    assert img.shape == (1, 64, 64, 3) and np.isfinite(img).all()


def _source(h: int = 64, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    return np.stack([xx, yy, 1 - xx], -1)[None].astype(np.float32)


def test_img2img_strength_controls_change(engine, tiny_sd_dir):
    from nodes.diffusion import generate

    src = _source()
    outs = {}
    for strength in (0.0, 0.3, 1.0):
        g = make_graph({"load": ("load_model", {"checkpoint": str(tiny_sd_dir)})}, [])
        entry_model = run_ok(engine, g).output("load")
        ctx = _Ctx(engine)
        outs[strength] = generate.img2img(entry_model, src, "oil painting", strength=strength, steps=4,
                                          scheduler="euler", seed=2, ctx=ctx)
    assert outs[0.3].shape == (1, 64, 64, 3)
    d0 = np.abs(outs[0.0] - src).mean()
    d3 = np.abs(outs[0.3] - src).mean()
    d10 = np.abs(outs[1.0] - src).mean()
    assert d0 < d10 and d3 < d10  # strength 0 is only the VAE round trip
    again = generate.img2img(entry_model, src, "oil painting", strength=0.3, steps=4, scheduler="euler",
                             seed=2, ctx=_Ctx(engine))
    np.testing.assert_array_equal(again, outs[0.3])


def test_inpaint_keeps_pixels_outside_the_mask(engine, tiny_sd_dir):
    from nodes.diffusion import generate

    model = run_ok(engine, make_graph({"load": ("load_model", {"checkpoint": str(tiny_sd_dir)})}, [])).output("load")
    src = _source()
    mask = np.zeros((1, 64, 64), np.float32)
    mask[:, 16:48, 16:48] = 1.0
    out = generate.inpaint(model, src, mask, "a window", steps=3, scheduler="euler", seed=1, batch_size=2,
                           ctx=_Ctx(engine))
    assert out.shape == (2, 64, 64, 3)
    outside = mask[0] == 0
    np.testing.assert_allclose(out[:, outside], np.broadcast_to(src[0][outside], out[:, outside].shape),
                               atol=1e-6)
    assert np.abs(out[0, 16:48, 16:48] - src[0, 16:48, 16:48]).mean() > 0.02
    with pytest.raises(ValueError, match="mask is 32x32 but the image is 64x64"):
        generate.inpaint(model, src, mask[:, :32, :32], ctx=_Ctx(engine))


def _Ctx(engine, cancel=None):
    return direct_ctx(engine, cancel)


def test_progress_every_step_with_preview_and_cancel_within_one_step(engine, tiny_sd_dir):
    run_ok(engine, txt2img_graph(tiny_sd_dir))  # load first: the test is about sampling
    events = []
    engine.events.subscribe(
        lambda e: events.append(e) if isinstance(e, NodeProgress) and e.node_id == "gen" else None)
    run_ok(engine, txt2img_graph(tiny_sd_dir, steps=4, seed=11))
    steps = [e for e in events if e.text and e.text.startswith("step")]
    assert [e.text for e in steps] == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]
    assert steps[-1].fraction == 1.0
    preview = decode_png(steps[0].preview)  # a small PNG on the wire, never the tensor
    assert preview.shape == (8, 8, 3) and preview.dtype == np.uint8 and preview.max() > preview.min()

    events.clear()
    cancel = threading.Event()

    def on_event(e):
        if isinstance(e, NodeProgress) and e.node_id == "gen" and e.text == "step 2/50":
            cancel.set()

    engine.events.subscribe(on_event)
    result = engine.run(txt2img_graph(tiny_sd_dir, steps=50, seed=12), cancel=cancel)
    assert result.cancelled and result.status["gen"] == "cancelled"
    done = [e.text for e in events if e.text and e.text.startswith("step")]
    assert done == ["step 1/50", "step 2/50"]


def test_latent_nodes_two_prompts_blend(engine, tiny_sd_dir):
    nodes = {
        "load": ("load_model", {"checkpoint": str(tiny_sd_dir)}),
        "empty": ("empty_latent", {"width": 64, "height": 64}),
        "a": ("sample", {"prompt": "a cat", "steps": 2, "seed": 1, "scheduler": "euler"}),
        "b": ("sample", {"prompt": "a dog", "steps": 2, "seed": 1, "scheduler": "euler"}),
        "mix0": ("latent_blend", {"factor": 0.0}),
        "mix": ("latent_blend", {"factor": 0.5}),
        "dec_a": ("decode", {}), "dec0": ("decode", {}), "dec": ("decode", {}),
        "refine": ("sample", {"prompt": "a cat", "steps": 4, "denoise": 0.5, "seed": 3, "scheduler": "euler"}),
        "enc": ("encode", {}),
    }
    links = ["load.model>empty.model", "load.model>a.model", "load.model>b.model", "empty.latent>a.latent",
             "empty.latent>b.latent", "a.latent>mix0.a", "b.latent>mix0.b", "a.latent>mix.a", "b.latent>mix.b",
             "load.model>dec_a.model", "a.latent>dec_a.latent", "load.model>dec0.model", "mix0.latent>dec0.latent",
             "load.model>dec.model", "mix.latent>dec.latent", "load.model>refine.model", "mix.latent>refine.latent",
             "load.model>enc.model", "dec.image>enc.image"]
    r = run_ok(engine, make_graph(nodes, links), targets=["dec_a", "dec0", "dec", "refine", "enc"])
    np.testing.assert_array_equal(r.output("dec_a"), r.output("dec0"))
    assert np.abs(r.output("dec") - r.output("dec_a")).mean() > 1e-3
    assert r.output("refine").samples.shape == (1, 4, 8, 8)
    assert r.output("enc").samples.shape == (1, 4, 8, 8) and r.output("enc").family == "sd1"


def test_two_lora_styles_in_one_run_stay_separate(engine, tiny_sd_dir, tiny_lora_kohya, tiny_lora_peft):
    """Two samplers on one base with different stacks: each sees only its own LoRA."""
    nodes = {
        "load": ("load_model", {"checkpoint": str(tiny_sd_dir)}),
        "la": ("lora", {"file": str(tiny_lora_kohya), "weight": 1.0}),
        "lb": ("lora", {"file": str(tiny_lora_peft), "weight": 1.0}),
        "empty": ("empty_latent", {"width": 64, "height": 64}),
        "a": ("sample", {"prompt": "a cat", "steps": 2, "seed": 1, "scheduler": "euler"}),
        "b": ("sample", {"prompt": "a cat", "steps": 2, "seed": 1, "scheduler": "euler"}),
        "mix": ("latent_blend", {"factor": 0.5}),
    }
    links = ["load.model>la.model", "load.model>lb.model", "load.model>empty.model", "la.model>a.model",
             "lb.model>b.model", "empty.latent>a.latent", "empty.latent>b.latent", "a.latent>mix.a",
             "b.latent>mix.b"]
    both = run_ok(engine, make_graph(nodes, links), targets=["a", "b", "mix"])
    engine.cache.clear()
    only_b = run_ok(engine, make_graph({k: v for k, v in nodes.items() if k in ("load", "lb", "empty", "b")},
                                       ["load.model>lb.model", "load.model>empty.model", "lb.model>b.model",
                                        "empty.latent>b.latent"]), targets=["b"])
    a, b = both.output("a").samples, both.output("b").samples
    assert (a - b).abs().mean() > 1e-3
    assert np.array_equal(b.numpy(), only_b.output("b").samples.numpy())
    assert np.allclose(both.output("mix").samples.numpy(), ((a + b) / 2).numpy(), atol=1e-6)
