"""A short curated list of base models a new user can fetch in one click, and look-ups that turn a
file name a workflow mentions (or a file's sha256) into a source `download()` accepts.

Sizes are approximate (to the MB) sizes of the files on the Hub, for a size shown before a
download starts; the download itself checks the exact Content-Length. Flux
and SD 3.5 single files hold only the diffusion model: `needs` names the starters that supply
their text encoders and VAE.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

import httpx

from app.library import sources


@dataclass(frozen=True)
class Starter:
    """One downloadable model: what it is, where it comes from, under which licence."""

    name: str
    title: str
    source: str
    kind: str
    family: str
    licence: str
    size_bytes: int
    gated: bool
    needs: tuple[str, ...] = ()
    note: str = ""

    @property
    def filename(self) -> str:
        return PurePosixPath(self.source).name


STARTERS: tuple[Starter, ...] = (
    Starter("sd15", "Stable Diffusion 1.5",
            "hf:stable-diffusion-v1-5/stable-diffusion-v1-5/v1-5-pruned-emaonly.safetensors",
            "checkpoint", "sd1", "CreativeML OpenRAIL-M", 4_265_000_000, False),
    Starter("sdxl-base", "Stable Diffusion XL base 1.0",
            "hf:stabilityai/stable-diffusion-xl-base-1.0/sd_xl_base_1.0.safetensors",
            "checkpoint", "sdxl", "CreativeML OpenRAIL++-M", 6_938_000_000, False),
    Starter("flux-schnell", "Flux.1 schnell",
            "hf:black-forest-labs/FLUX.1-schnell/flux1-schnell.safetensors",
            "checkpoint", "flux", "Apache-2.0", 23_783_000_000, False,
            needs=("flux-ae", "clip-l", "t5xxl-fp8"),
            note="the diffusion model only: it also needs the Flux VAE (ae) and the CLIP-L and T5-XXL text encoders"),
    Starter("flux-ae", "Flux.1 VAE (ae)", "hf:black-forest-labs/FLUX.1-schnell/ae.safetensors",
            "vae", "flux", "Apache-2.0", 335_000_000, False),
    Starter("clip-l", "CLIP-L text encoder (Flux, SD 3.5)",
            "hf:comfyanonymous/flux_text_encoders/clip_l.safetensors",
            "text_encoder", "flux", "MIT", 246_000_000, False),
    Starter("t5xxl-fp8", "T5-XXL text encoder, fp8 (Flux, SD 3.5)",
            "hf:comfyanonymous/flux_text_encoders/t5xxl_fp8_e4m3fn.safetensors",
            "text_encoder", "flux", "Apache-2.0", 4_894_000_000, False),
    Starter("sd35-medium", "Stable Diffusion 3.5 medium",
            "hf:stabilityai/stable-diffusion-3.5-medium/sd3.5_medium.safetensors",
            "checkpoint", "sd3", "Stability AI Community Licence", 5_107_000_000, True,
            needs=("clip-l", "clip-g-sd35", "t5xxl-fp8"),
            note="gated: accept the licence on huggingface.co first; the file holds no text encoders"),
    Starter("clip-g-sd35", "CLIP-G text encoder (SD 3.5)",
            "hf:stabilityai/stable-diffusion-3.5-medium/text_encoders/clip_g.safetensors",
            "text_encoder", "sd3", "Stability AI Community Licence", 1_389_000_000, True),
)


def starter(name: str) -> Starter | None:
    """The starter called `name` ("sd15", "flux-schnell", ...)."""
    return next((s for s in STARTERS if s.name == name), None)


def starter_for(filename: str) -> Starter | None:
    """The starter whose file is `filename` (any folder, any case), so a workflow that names
    v1-5-pruned-emaonly.safetensors can offer a one-click download."""
    base = PurePosixPath(filename.replace("\\", "/")).name.lower()
    return next((s for s in STARTERS if s.filename.lower() == base), None)


def civitai_by_hash(sha256: str, token: str | None = None) -> str | None:
    """"civitai:VID" for the Civitai model version that has a file with this sha256 (or its first 10
    digits, AutoV2, which our PNGs' provenance records); None if none.

    Raises DownloadError (one line) when Civitai cannot be asked.
    """
    from app.library.download import DownloadError

    digest = sha256.strip().lower()
    if len(digest) not in (10, 64) or any(c not in "0123456789abcdef" for c in digest):
        raise DownloadError(f"{sha256!r} is not a sha256 (64 hex digits, or its first 10: A1111's AutoV2)")
    token = token if token is not None else sources.civitai_token()
    url = f"{sources.civitai_api()}/api/v1/model-versions/by-hash/{digest}"
    try:
        with httpx.Client(timeout=httpx.Timeout(20.0, connect=10.0), follow_redirects=True) as client:
            r = client.get(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    except httpx.HTTPError as exc:
        raise DownloadError(f"cannot reach Civitai ({type(exc).__name__}); check the connection") from None
    if r.status_code == 404:
        return None
    if r.status_code >= 400:
        raise DownloadError(f"Civitai answered HTTP {r.status_code} to a look-up by hash")
    try:
        vid = r.json().get("id")
    except (ValueError, AttributeError):
        vid = None
    if not isinstance(vid, int):
        raise DownloadError("Civitai answered a look-up by hash without a model version id")
    return f"civitai:{vid}"
