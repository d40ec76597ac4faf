"""Where a model comes from: one source string (what a user pastes or a starter names) parsed into a
`Source`, plus the endpoints and the tokens each service needs.

Accepted forms: `hf:owner/repo` or `owner/repo` (a whole diffusers repo), `hf:owner/repo/path/file`
(one file; `owner/repo@rev` pins a revision), Hub URLs (`…/owner/repo/resolve/REV/path`, `…/blob/…`
or a repo page), Civitai (`civitai:VID`, a model page with `?modelVersionId=VID`, a model page
alone, `…/api/download/models/VID`) and any other http(s) URL. Tokens come from the OS keyring
through app/secrets.py, never from a workflow.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import PurePosixPath

from app import secrets

HF_DEFAULT = "https://huggingface.co"
CIVITAI_DEFAULT = "https://civitai.com"
#: Keyring names (app/secrets.py service "imagebash"): Settings ▸ Accounts stores tokens under them.
HF_TOKEN_NAME = "huggingface"
CIVITAI_TOKEN_NAME = "civitai"
#: Formats that are unpickled to load: never downloaded.
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")

_REPO = r"[A-Za-z0-9][\w.\-]*/[\w.\-]+"


class SourceError(ValueError):
    """A source string imagebash cannot read; the message says what is accepted."""


@dataclass(frozen=True)
class Source:
    """A parsed source. kind is "hf-repo", "hf-file", "civitai" or "url"."""

    kind: str
    text: str
    repo: str | None = None
    path: str | None = None
    revision: str = "main"
    version_id: str | None = None
    model_id: str | None = None
    url: str | None = None

    @property
    def filename(self) -> str | None:
        """The file name the source names, when it names one (Civitai's comes from its API)."""
        if self.kind == "hf-file" and self.path:
            return PurePosixPath(self.path).name
        if self.kind == "url" and self.url:
            return PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(self.url).path)).name or None
        return None

    @property
    def label(self) -> str:
        """A short name for messages (never a URL query, which may carry a token)."""
        if self.kind == "hf-repo":
            return f"hf:{self.repo}"
        if self.kind == "hf-file":
            return f"hf:{self.repo}/{self.path}"
        if self.kind == "civitai":
            return f"civitai:{self.version_id}" if self.version_id else f"civitai model {self.model_id}"
        return self.filename or urllib.parse.urlsplit(self.url or "").netloc


def hf_endpoint() -> str:
    """The Hub's base URL (HF_ENDPOINT, read at call time so a mirror or a test server can be set)."""
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT).rstrip("/")


def civitai_api() -> str:
    """Civitai's base URL (IMAGEBASH_CIVITAI_API, default https://civitai.com)."""
    return (os.environ.get("IMAGEBASH_CIVITAI_API") or CIVITAI_DEFAULT).rstrip("/")


def hf_token() -> str | None:
    """The Hugging Face token: IMAGEBASH_HUGGINGFACE_TOKEN, the keyring, then HF_TOKEN."""
    token = secrets.get_token(HF_TOKEN_NAME)
    return token or secrets.remember((os.environ.get("HF_TOKEN") or "").strip() or None)


def civitai_token() -> str | None:
    """The Civitai API key: IMAGEBASH_CIVITAI_TOKEN, the keyring, then CIVITAI_API_TOKEN."""
    token = secrets.get_token(CIVITAI_TOKEN_NAME)
    return token or secrets.remember((os.environ.get("CIVITAI_API_TOKEN") or "").strip() or None)


def is_pickle(name: str) -> bool:
    """Whether a file name is a pickle-based format (loading one can run arbitrary code)."""
    return name.lower().endswith(PICKLE_SUFFIXES)


def pickle_message(name: str) -> str:
    """The one line that refuses a pickle download."""
    suffix = PurePosixPath(name).suffix or ".ckpt"
    return (f"{name} is a pickle ({suffix}): imagebash never unpickles downloaded files; download the "
            ".safetensors version or convert it with safetensors.torch.save_file on a machine you trust")


def _hosts(base: str) -> set[str]:
    return {urllib.parse.urlsplit(base).netloc.lower()}


def parse(text: str) -> Source:
    """Parse a source string; SourceError (one line) for anything unrecognised."""
    s = (text or "").strip()
    if not s:
        raise SourceError("no source given: use hf:owner/repo[/file], civitai:VERSION_ID or an https URL")
    low = s.lower()
    if low.startswith("civitai:"):
        vid = s.split(":", 1)[1].strip()
        if not vid.isdigit():
            raise SourceError(f"{s!r}: a Civitai source is civitai:VERSION_ID (digits)")
        return Source("civitai", s, version_id=vid)
    if low.startswith("hf:"):
        return _parse_hf_path(s, s[3:].strip().strip("/"))
    if low.startswith(("http://", "https://")):
        return _parse_url(s)
    if "://" in s:
        raise SourceError(f"{s!r}: only http(s) URLs, hf:… and civitai:… sources are supported")
    if re.fullmatch(_REPO + r"(@[\w.\-/]+)?", s):
        return _parse_hf_path(s, s)
    raise SourceError(f"{s!r} is not a source: use hf:owner/repo[/file], civitai:VERSION_ID or an https URL")


def _parse_hf_path(text: str, body: str) -> Source:
    parts = [p for p in body.split("/") if p]
    if len(parts) < 2:
        raise SourceError(f"{text!r}: a Hub source is hf:owner/repo or hf:owner/repo/path/file.safetensors")
    owner, name = parts[0], parts[1]
    revision = "main"
    if "@" in name:
        name, revision = name.split("@", 1)
    repo = f"{owner}/{name}"
    if not re.fullmatch(_REPO, repo) or not revision:
        raise SourceError(f"{text!r}: {repo!r} is not a Hub repo id (owner/name)")
    rest = "/".join(parts[2:])
    if rest:
        return Source("hf-file", text, repo=repo, path=rest, revision=revision)
    return Source("hf-repo", text, repo=repo, revision=revision)


def _parse_url(text: str) -> Source:
    u = urllib.parse.urlsplit(text)
    host = u.netloc.lower()
    parts = [urllib.parse.unquote(p) for p in u.path.split("/") if p]
    if host in _hosts(HF_DEFAULT) | _hosts(hf_endpoint()) | {"www.huggingface.co", "hf.co"}:
        if len(parts) >= 5 and parts[2] in ("resolve", "blob"):
            return Source("hf-file", text, repo=f"{parts[0]}/{parts[1]}", path="/".join(parts[4:]),
                          revision=parts[3])
        if len(parts) == 2 and parts[0] not in ("api", "datasets", "spaces"):
            return Source("hf-repo", text, repo=f"{parts[0]}/{parts[1]}")
        if len(parts) >= 4 and parts[2] == "tree":
            return Source("hf-repo", text, repo=f"{parts[0]}/{parts[1]}", revision=parts[3])
    if host in _hosts(CIVITAI_DEFAULT) | _hosts(civitai_api()) | {"www.civitai.com"}:
        query = urllib.parse.parse_qs(u.query)
        if len(parts) >= 4 and parts[:3] == ["api", "download", "models"] and parts[3].isdigit():
            return Source("civitai", text, version_id=parts[3])
        if len(parts) >= 2 and parts[0] == "models" and parts[1].isdigit():
            vid = (query.get("modelVersionId") or [""])[0]
            if vid.isdigit():
                return Source("civitai", text, version_id=vid, model_id=parts[1])
            return Source("civitai", text, model_id=parts[1])
    if not host:
        raise SourceError(f"{text!r} has no host name")
    return Source("url", text, url=text)
