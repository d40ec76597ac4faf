"""download(): Hub files and repos (through the real huggingface_hub client), Civitai versions and
plain URLs, each from a fake server on 127.0.0.1 that speaks the real protocol."""

from __future__ import annotations

import json
import logging
import threading
from collections import namedtuple
from pathlib import Path

import pytest

from app.library import sources
from app.library.download import DownloadError, DownloadProgress, download
from app.library.starters import STARTERS, civitai_by_hash, starter_for
from tests.library.fake_servers import FakeCivitai, FakeHub, FileServer, safetensors_bytes, serve, sha256

HF_TOKEN = "hf_FakeHubToken0123456789abcdefXYZ"
CIVITAI_TOKEN = "civitaiFakeKey0123456789abcdef"
CKPT = safetensors_bytes({"model.diffusion_model.input_blocks.0.0.weight": (4, 4)}, pad_to=300_000)
LORA = safetensors_bytes({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 8),
                          "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (8, 4)}, fill=7,
                         pad_to=200_000)
BIG = safetensors_bytes({"model.diffusion_model.out.2.weight": (8, 8)}, fill=3, pad_to=3 << 20)


@pytest.fixture
def models(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "models"
    monkeypatch.setenv("IMAGEBASH_MODELS", str(root))
    for var in ("HF_TOKEN", "IMAGEBASH_HUGGINGFACE_TOKEN", "IMAGEBASH_CIVITAI_TOKEN", "CIVITAI_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return root


@pytest.fixture
def hub(models, tmp_path, monkeypatch):
    from huggingface_hub import constants

    with serve(FakeHub(token=HF_TOKEN)) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.base)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once at import; conftest sets it
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        yield server


@pytest.fixture
def civitai(models, monkeypatch):
    with serve(FakeCivitai()) as server:
        monkeypatch.setenv("IMAGEBASH_CIVITAI_API", server.base)
        yield server


@pytest.fixture
def web(models):
    with serve(FileServer()) as server:
        yield server


# --- the Hub -------------------------------------------------------------------------------------

def test_hub_file_lands_in_checkpoints_and_hashes_right(hub, models):
    hub.add("acme/tiny-sd", {"tiny.safetensors": CKPT, "README.md": b"# tiny"})
    seen: list[DownloadProgress] = []
    path = download("hf:acme/tiny-sd/tiny.safetensors", "checkpoint", progress=seen.append)
    assert path == models / "checkpoints" / "tiny.safetensors"
    assert sha256(path.read_bytes()) == sha256(CKPT)
    assert not list(path.parent.glob("*.part"))
    assert seen and seen[-1].done == seen[-1].total == len(CKPT) and seen[-1].name == "tiny.safetensors"
    # it went through the Hub's LFS redirect, whose X-Linked-Etag is the sha256 that was checked
    assert hub.seen("GET", "/acme/tiny-sd/resolve/main/tiny.safetensors") and hub.seen("GET", "/_cdn/")


def test_hub_resolve_url_without_kind_is_sorted_by_its_header(hub, models):
    hub.add("acme/styles", {"loras/ink.safetensors": LORA})
    path = download(f"{hub.base}/acme/styles/resolve/main/loras/ink.safetensors")
    assert path == models / "loras" / "ink.safetensors"
    assert path.read_bytes() == LORA


def test_hub_etag_mismatch_removes_the_file(hub, models):
    hub.add("acme/tiny-sd", {"tiny.safetensors": CKPT})
    hub.files[f"/_cdn/{sha256(CKPT)}"] = CKPT[:-4] + b"XXXX"  # the CDN serves corrupt bytes
    with pytest.raises(DownloadError, match="sha256 mismatch") as err:
        download("hf:acme/tiny-sd/tiny.safetensors", "checkpoint")
    assert "removed" in str(err.value) and "\n" not in str(err.value)
    assert not list((models / "checkpoints").iterdir())


INDEX = json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
                    "vae": ["diffusers", "AutoencoderKL"], "tokenizer": ["transformers", "CLIPTokenizer"],
                    "text_encoder": ["transformers", "CLIPTextModel"], "safety_checker": [None, None]}).encode()


def test_whole_diffusers_repo_snapshot_skips_pickles(hub, models):
    fp16 = safetensors_bytes({"conv_in.weight": (4, 4)}, fill=1)
    files = {"model_index.json": INDEX, "README.md": b"# card", "v1-5-single-file.safetensors": BIG,
             "unet/config.json": b"{}", "unet/diffusion_pytorch_model.safetensors": CKPT,
             "unet/diffusion_pytorch_model.fp16.safetensors": fp16,
             "unet/diffusion_pytorch_model.bin": b"PICKLE" * 100,
             "vae/config.json": b"{}", "vae/diffusion_pytorch_model.safetensors": LORA,
             "tokenizer/vocab.json": b"{}", "tokenizer/merges.txt": b"#version: 0.2\n",
             "text_encoder/config.json": b"{}", "text_encoder/model.safetensors": CKPT,
             "text_encoder/pytorch_model.bin": b"PICKLE" * 100}
    hub.add("acme/tiny-pipe", files)
    seen: list[DownloadProgress] = []
    folder = download("hf:acme/tiny-pipe", progress=seen.append)
    assert folder == models / "checkpoints" / "tiny-pipe"
    got = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts}
    # one weight variant (the plain one: the VAE has no fp16), no pickles, no root single-file checkpoint
    assert got == {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                   "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "tokenizer/vocab.json",
                   "tokenizer/merges.txt", "text_encoder/config.json", "text_encoder/model.safetensors"}
    assert (folder / "unet/diffusion_pytorch_model.safetensors").read_bytes() == CKPT
    assert not hub.seen(path_part=".bin") and not hub.seen(path_part="single-file")
    assert seen and seen[-1].done == seen[-1].total


def test_a_depth_anything_repo_lands_where_the_depth_node_looks(hub, models):
    """`--kind depth`: what the Depth preprocessor's missing-model line tells the user to run."""
    hub.add("depth-anything/Depth-Anything-V2-Small-hf", {
        "config.json": b"{}", "preprocessor_config.json": b"{}", "model.safetensors": CKPT,
        "pytorch_model.bin": b"PICKLE" * 100})
    folder = download("hf:depth-anything/Depth-Anything-V2-Small-hf", kind="depth")
    assert folder == models / "depth" / "Depth-Anything-V2-Small-hf"
    assert {p.name for p in folder.iterdir() if p.is_file()} == {"config.json", "preprocessor_config.json",
                                                                  "model.safetensors"}
    from nodes.guidance.preprocess import list_depth_models

    assert "Depth-Anything-V2-Small-hf" in list_depth_models()


def test_cancelled_snapshot_resumes_on_the_next_call(hub, models):
    unet = safetensors_bytes({"conv_in.weight": (8, 8)}, fill=5, pad_to=3 << 20)
    vae = safetensors_bytes({"decoder.conv_in.weight": (8, 8)}, fill=9, pad_to=3 << 20)
    hub.add("acme/pipe", {"model_index.json": INDEX, "unet/diffusion_pytorch_model.safetensors": unet,
                          "vae/diffusion_pytorch_model.safetensors": vae})
    hub.delay = 0.005  # a slow link: 64 KiB per 5 ms
    cancel = threading.Event()
    seen: list[DownloadProgress] = []

    def on_progress(p: DownloadProgress) -> None:
        seen.append(p)
        if p.done > len(unet):  # the unet is done (files go in order), the vae is under way
            cancel.set()

    with pytest.raises(DownloadError, match="cancelled; run it again to resume"):
        download("hf:acme/pipe", progress=on_progress, cancel=cancel)
    assert {p.total for p in seen} == {len(INDEX) + len(unet) + len(vae)}  # one total for the whole repo
    pipe = models / "checkpoints" / "pipe"
    assert (pipe / "unet/diffusion_pytorch_model.safetensors").read_bytes() == unet
    assert (pipe / "vae/diffusion_pytorch_model.safetensors.part").stat().st_size > 0
    hub.delay = 0
    before = len(hub.requests)
    folder = download("hf:acme/pipe")

    assert any("range" in r.headers for r in hub.requests[before:] if "/_cdn/" in r.path)  # resumed
    assert (folder / "unet/diffusion_pytorch_model.safetensors").read_bytes() == unet
    assert (folder / "vae/diffusion_pytorch_model.safetensors").read_bytes() == vae


def test_gated_repo_says_how_to_add_a_token_and_never_shows_it(hub, models, caplog, memory_keyring):
    hub.add("acme/gated", {"g.safetensors": CKPT}, gated=True)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DownloadError, match="is gated") as no_token:
        download("hf:acme/gated/g.safetensors", "checkpoint")
    assert "Settings ▸ Accounts" in str(no_token.value) and "--token-from-keyring" in str(no_token.value)
    wrong = "hf_WrongToken0123456789abcdefXYZ"
    with pytest.raises(DownloadError, match=r"is gated \(HTTP 403\)") as bad:
        download("hf:acme/gated/g.safetensors", "checkpoint", token=wrong)
    with pytest.raises(DownloadError, match="is gated"):
        download("hf:acme/gated", token=wrong)  # the snapshot path says the same
    assert wrong not in str(bad.value)
    # the token stored in the keyring (as Settings ▸ Accounts does) is used, and still never printed
    memory_keyring.set_password("imagebash", sources.HF_TOKEN_NAME, HF_TOKEN)
    path = download("hf:acme/gated/g.safetensors", "checkpoint")
    assert path.read_bytes() == CKPT
    assert hub.seen("GET", "/acme/gated/resolve")[-1].headers["authorization"] == f"Bearer {HF_TOKEN}"
    assert "authorization" not in hub.seen("GET", "/_cdn/")[-1].headers  # the token stays on the Hub
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert HF_TOKEN not in logged and wrong not in logged


def test_missing_repo_and_file_are_not_found(hub, models):
    hub.add("acme/tiny-sd", {"tiny.safetensors": CKPT})
    with pytest.raises(DownloadError, match="not found"):
        download("hf:acme/tiny-sd/nope.safetensors", "checkpoint")
    with pytest.raises(DownloadError, match="not found"):
        download("hf:acme/no-such-repo/x.safetensors", "checkpoint")
    with pytest.raises(DownloadError, match="not found"):
        download("hf:acme/no-such-repo")


# --- Civitai -------------------------------------------------------------------------------------

def test_civitai_lora_lands_in_loras_with_its_trigger_words(civitai, models):
    pickle = {"id": 1, "name": "ink.pt", "type": "Model", "primary": False,
              "metadata": {"format": "PickleTensor"}, "hashes": {}, "downloadUrl": civitai.base + "/nope"}
    civitai.add_version(4321, 99, "inkStyle_v1.safetensors", LORA, words=["inkstyle", "sketch"],
                        extra_files=[pickle])
    for source in ("civitai:4321", f"{civitai.base}/models/99?modelVersionId=4321",
                   f"{civitai.base}/api/download/models/4321", f"{civitai.base}/models/99"):
        path = download(source)
        assert path == models / "loras" / "inkStyle_v1.safetensors"
        assert path.read_bytes() == LORA
    sidecar = json.loads((models / "loras" / "inkStyle_v1.civitai.json").read_text())
    assert sidecar["trainedWords"] == ["inkstyle", "sketch"] and sidecar["source"] == "civitai:4321"
    assert sidecar["sha256"] == sha256(LORA)


def test_civitai_types_choose_the_folder(civitai, models):
    civitai.add_version(11, 1, "real.safetensors", CKPT, mtype="Checkpoint")
    civitai.add_version(12, 2, "emb.safetensors", LORA, mtype="TextualInversion")
    assert download("civitai:11") == models / "checkpoints" / "real.safetensors"
    assert download("civitai:12") == models / "embeddings" / "emb.safetensors"


def test_civitai_hash_mismatch_and_login_and_not_found(civitai, models, caplog):
    civitai.add_version(5, 1, "bad.safetensors", LORA, sha="0" * 64)
    with pytest.raises(DownloadError, match=r"sha256 mismatch \(expected 0{64}, got [0-9a-f]{64}\)"):
        download("civitai:5")
    assert not (models / "loras" / "bad.safetensors").exists()
    assert not list((models / "loras").glob("*.part"))
    civitai.add_version(6, 1, "locked.safetensors", LORA)
    civitai.token = CIVITAI_TOKEN
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DownloadError, match="Civitai API key") as err:
        download("civitai:6", token="civitaiWrong0123456789abcdef")
    assert "civitaiWrong" not in str(err.value)
    assert download("civitai:6", token=CIVITAI_TOKEN).read_bytes() == LORA
    assert CIVITAI_TOKEN not in "\n".join(r.getMessage() for r in caplog.records)
    with pytest.raises(DownloadError, match="civitai:777 not found"):
        download("civitai:777")


def test_civitai_by_hash(civitai):
    civitai.add_version(4321, 99, "ink.safetensors", LORA)
    assert civitai_by_hash(sha256(LORA)) == "civitai:4321"
    assert civitai_by_hash(sha256(LORA).upper()) == "civitai:4321"
    assert civitai_by_hash(sha256(LORA)[:10]) == "civitai:4321"  # AutoV2: what our PNGs record
    assert civitai_by_hash("ab" * 32) is None
    with pytest.raises(DownloadError, match="not a sha256"):
        civitai_by_hash("xyz")


# --- plain URLs: resume, cancel, refusals --------------------------------------------------------

def test_interrupted_download_resumes_with_a_range_request(web, models):
    web.files["/big.safetensors"] = BIG
    web.drop_after = 1 << 20  # the first answer closes the connection after 1 MiB
    path = download(web.url("/big.safetensors"), "checkpoint", expected_sha256=sha256(BIG))
    assert path.read_bytes() == BIG
    gets = web.seen("GET", "/big.safetensors")
    assert len(gets) == 2 and "range" not in gets[0].headers
    assert gets[1].headers["range"] == f"bytes={1 << 20}-"


def test_server_that_ignores_range_restarts_cleanly(web, models):
    web.files["/big.safetensors"] = BIG
    web.drop_after = 1 << 20
    web.ignore_range = True
    path = download(web.url("/big.safetensors"), "checkpoint")
    assert path.read_bytes() == BIG


def test_cancel_keeps_the_part_and_a_second_call_resumes(web, models):
    web.files["/big.safetensors"] = BIG
    web.delay = 0.005  # a slow link: 64 KiB per 5 ms
    cancel = threading.Event()
    seen: list[DownloadProgress] = []

    def on_progress(p: DownloadProgress) -> None:
        seen.append(p)
        if p.done >= 256 << 10:
            cancel.set()

    with pytest.raises(DownloadError, match="cancelled; run it again to resume"):
        download(web.url("/big.safetensors"), "checkpoint", progress=on_progress, cancel=cancel)
    part = models / "checkpoints" / "big.safetensors.part"
    kept = part.stat().st_size
    assert 0 < kept < len(BIG) and not (models / "checkpoints" / "big.safetensors").exists()
    assert seen[0].total == len(BIG)
    web.delay = 0
    path = download(web.url("/big.safetensors"), "checkpoint", expected_sha256=sha256(BIG))
    assert path.read_bytes() == BIG and not part.exists()
    assert web.seen("GET")[-1].headers["range"] == f"bytes={kept}-"


def test_pickles_are_refused_before_any_request(web, models):
    for name in ("model.ckpt", "model.pt", "model.pth", "pytorch_model.bin"):
        with pytest.raises(DownloadError, match=r"is a pickle .*never unpickles"):
            download(web.url(f"/{name}"))
    with pytest.raises(DownloadError, match="is a pickle"):
        download("hf:acme/old/sd-v1-4.ckpt")
    assert web.requests == []


def test_html_page_and_non_model_bytes_are_refused(web, models):
    web.files["/page.safetensors"] = b"<!doctype html><html>log in</html>"
    web.content_type = "text/html; charset=utf-8"
    with pytest.raises(DownloadError, match="web page"):
        download(web.url("/page.safetensors"), "checkpoint")
    web.content_type = "application/octet-stream"
    web.files["/junk.safetensors"] = b"PK\x03\x04 this is a zip file, not safetensors" * 10
    with pytest.raises(DownloadError, match="not a model file"):
        download(web.url("/junk.safetensors"), "checkpoint")
    assert not list((models / "checkpoints").iterdir())


def test_not_enough_disk_space(web, models, monkeypatch):
    import shutil

    web.files["/big.safetensors"] = BIG
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1_000_000, 1_000_000))
    with pytest.raises(DownloadError, match=r"not enough free space on .* \(needs 0\.0 GB, has 0\.0 GB\)"):
        download(web.url("/big.safetensors"), "checkpoint")
    assert not list((models / "checkpoints").iterdir())


def test_http_errors_are_one_line(web, models):
    web.fail["/secret.safetensors"] = 403
    web.fail["/broken.safetensors"] = 500
    with pytest.raises(DownloadError, match="refused access"):
        download(web.url("/secret.safetensors"), "checkpoint")
    with pytest.raises(DownloadError, match="not found"):
        download(web.url("/gone.safetensors"), "checkpoint")
    with pytest.raises(DownloadError, match="HTTP 500"):
        download(web.url("/broken.safetensors"), "checkpoint")
    with pytest.raises(DownloadError, match="cannot reach"):
        download("http://127.0.0.1:9/x.safetensors", "checkpoint")
    with pytest.raises(DownloadError, match="not a source"):
        download("just words")
    with pytest.raises(DownloadError, match="unknown model kind"):
        download(web.url("/x.safetensors"), "hypernetwork")


def test_source_forms():
    assert sources.parse("acme/pipe@v2") == sources.Source("hf-repo", "acme/pipe@v2", repo="acme/pipe",
                                                           revision="v2")
    f = sources.parse("https://huggingface.co/acme/x/blob/abc123/sub/m.safetensors")
    assert (f.kind, f.repo, f.revision, f.path) == ("hf-file", "acme/x", "abc123", "sub/m.safetensors")
    assert sources.parse("https://civitai.com/models/12?modelVersionId=34").version_id == "34"
    assert sources.parse("https://example.org/files/m.safetensors?sig=1").filename == "m.safetensors"
    with pytest.raises(sources.SourceError, match="civitai:VERSION_ID"):
        sources.parse("civitai:abc")


# --- starters ------------------------------------------------------------------------------------

def test_starter_for_finds_a_workflow_file():
    sd15 = starter_for("v1-5-pruned-emaonly.safetensors")
    assert sd15 is not None and sd15.family == "sd1" and sd15.kind == "checkpoint" and not sd15.gated
    assert starter_for(r"C:\models\SD_XL_BASE_1.0.safetensors").name == "sdxl-base"
    assert starter_for("sd3.5_medium.safetensors").gated
    assert starter_for("unknown.safetensors") is None
    names = {s.name for s in STARTERS}
    for s in STARTERS:
        assert sources.parse(s.source).kind == "hf-file" and set(s.needs) <= names
