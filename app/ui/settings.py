"""The user's settings: one typed store over QSettings (an .ini in `app.paths.config_dir()`).

Everything the settings dialog edits lives here and nowhere else; the engine gets its part as an
`EngineSettings`. The models folder is the exception: the headless side (the model catalog, the
CLI) reads it from `config_dir()/settings.json`, so it is kept there, and only there. Secrets
(the Replicate token, the remote engines' tokens) never pass through this store: they go to the
OS keyring via `app.secrets`. Remote engines are kept as a name and a URL; the remote jobs in
flight are kept so that a restarted window can follow them again.
"""

from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QSettings

from app import paths

MAX_RECENT = 10
#: The key of the in-process engine (a remote engine's key is its URL).
LOCAL = "local"


@dataclass(frozen=True)
class EngineEntry:
    """An engine a tab can run on: the local one (no URL) or an `imagebash serve` at `url`."""

    name: str
    url: str = ""

    @property
    def key(self) -> str:
        return self.url or LOCAL

    @property
    def is_local(self) -> bool:
        return not self.url


LOCAL_ENGINE = EngineEntry("local")


def normalize_url(url: str) -> str:
    """An engine URL as stored and as its keyring entry is named (ValueError when it is not one)."""
    from urllib.parse import urlsplit

    u = url.strip().rstrip("/")
    parts = urlsplit(u)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"'{url.strip()}' is not an engine address: use http://host:port or https://host")
    return u


@dataclass(frozen=True)
class Choice:
    """A setting with a fixed set of values (the dialog shows a combo box)."""

    key: str
    default: str
    values: tuple[str, ...]


DEVICE = Choice("engine/device", "auto", ("auto", "cuda", "mps", "cpu"))
PRECISION = Choice("engine/precision", "auto", ("auto", "fp32", "fp16", "bf16"))
ATTENTION_SLICING = Choice("engine/attention_slicing", "auto", ("off", "auto", "max"))
VAE_TILING = Choice("engine/vae_tiling", "auto", ("off", "auto", "on"))
MEMORY_MODE = Choice("engine/memory_mode", "auto", ("auto", "full", "fp8", "nf4", "model_offload", "group_offload",
                                                    "sequential_offload"))
THEME = Choice("ui/theme", "dark", ("dark", "light"))
#: A pooled run's Ray cluster: none, a Ray instance started on this machine, or the one at an address.
POOL_RAY = Choice("pool/ray", "off", ("off", "local", "address"))


class Settings:
    """Typed access to the settings file; every read goes to QSettings, so all windows agree."""

    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.q = qsettings or QSettings(str(paths.config_dir() / "imagebash.ini"), QSettings.Format.IniFormat)

    # generic ------------------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        return self.q.value(key, default)

    def set(self, key: str, value: Any) -> None:
        self.q.setValue(key, value)

    def sync(self) -> None:
        self.q.sync()

    def choice(self, c: Choice) -> str:
        v = str(self.q.value(c.key, c.default))
        return v if v in c.values else c.default

    def set_choice(self, c: Choice, value: str) -> None:
        if value not in c.values:
            raise ValueError(f"setting {c.key}: {value!r} is not one of {', '.join(c.values)}")
        self.q.setValue(c.key, value)

    def _bool(self, key: str, default: bool) -> bool:
        v = self.q.value(key, default)
        return v.lower() in ("true", "1", "yes") if isinstance(v, str) else bool(v)

    def _float(self, key: str, default: float) -> float:
        try:
            return float(self.q.value(key, default))
        except (TypeError, ValueError):
            return default

    # engine -------------------------------------------------------------------------------------
    @property
    def cpu_offload(self) -> bool:
        return self._bool("engine/cpu_offload", False)

    @cpu_offload.setter
    def cpu_offload(self, on: bool) -> None:
        self.q.setValue("engine/cpu_offload", bool(on))

    @property
    def compile_denoiser(self) -> bool:
        return self._bool("engine/compile_denoiser", False)

    @compile_denoiser.setter
    def compile_denoiser(self, on: bool) -> None:
        self.q.setValue("engine/compile_denoiser", bool(on))

    @property
    def cache_budget_gb(self) -> float:
        return max(0.1, self._float("engine/cache_budget_gb", 4.0))

    @cache_budget_gb.setter
    def cache_budget_gb(self, gb: float) -> None:
        self.q.setValue("engine/cache_budget_gb", float(gb))

    @property
    def models_dir(self) -> pathlib.Path:
        v = _shared().get("models_dir")
        return pathlib.Path(v).expanduser() if isinstance(v, str) and v else paths.data_dir() / "models"

    @models_dir.setter
    def models_dir(self, folder: str | pathlib.Path) -> None:
        _set_shared("models_dir", str(folder))

    @property
    def extra_model_roots(self) -> list[pathlib.Path]:
        """Another tool's models folders (ComfyUI's or A1111's `models/`) listed beside ours, nothing
        copied; kept in settings.json as "library/extra_roots" because the headless side
        (`app.paths.extra_model_roots`) reads them too."""
        v = _shared().get("library/extra_roots")
        items = v.split(os.pathsep) if isinstance(v, str) else (v if isinstance(v, list) else [])
        return [pathlib.Path(x).expanduser() for x in items if isinstance(x, str) and x.strip()]

    @extra_model_roots.setter
    def extra_model_roots(self, folders: list[str | pathlib.Path]) -> None:
        _set_shared("library/extra_roots", [str(f) for f in folders if str(f).strip()])

    @property
    def output_dir(self) -> pathlib.Path:
        v = self.q.value("paths/output_dir", "")
        return pathlib.Path(v).expanduser() if v else paths.data_dir() / "output"

    @output_dir.setter
    def output_dir(self, folder: str | pathlib.Path) -> None:
        self.q.setValue("paths/output_dir", str(folder))

    def engine_settings(self) -> Any:
        """The EngineSettings these settings describe (imported here: the engine is not Qt)."""
        from app.engine import EngineSettings

        return EngineSettings(
            device=self.choice(DEVICE), precision=self.choice(PRECISION),
            attention_slicing=self.choice(ATTENTION_SLICING), vae_tiling=self.choice(VAE_TILING),
            cpu_offload=self.cpu_offload, memory_mode=self.choice(MEMORY_MODE),
            compile_denoiser=self.compile_denoiser, cache_budget_bytes=int(self.cache_budget_gb * (1 << 30)))

    # ui -----------------------------------------------------------------------------------------
    @property
    def theme(self) -> str:
        return self.choice(THEME)

    @theme.setter
    def theme(self, name: str) -> None:
        self.set_choice(THEME, name)

    @property
    def autosave_interval_s(self) -> float:
        return max(0.05, self._float("ui/autosave_interval_s", 5.0))

    @property
    def show_welcome(self) -> bool:
        return self._bool("ui/show_welcome", True)

    @show_welcome.setter
    def show_welcome(self, on: bool) -> None:
        self.q.setValue("ui/show_welcome", bool(on))

    def recent_files(self) -> list[str]:
        v = self.q.value("ui/recent_files", [])
        items = [v] if isinstance(v, str) else list(v or [])
        return [s for s in items if s][:MAX_RECENT]

    def add_recent(self, path: str | pathlib.Path) -> list[str]:
        p = str(pathlib.Path(path).resolve())
        items = [p] + [s for s in self.recent_files() if s != p]
        self.q.setValue("ui/recent_files", items[:MAX_RECENT])
        return items[:MAX_RECENT]

    def remove_recent(self, path: str) -> None:
        self.q.setValue("ui/recent_files", [s for s in self.recent_files() if s != path])

    # remote engines ---------------------------------------------------------------------------
    def engines(self) -> list[EngineEntry]:
        """The remote engines, in the order Settings lists them (the local one is not stored)."""
        out: list[EngineEntry] = []
        for item in self._json_list("engines/remote"):
            try:
                out.append(EngineEntry(str(item.get("name") or item["url"]), normalize_url(str(item["url"]))))
            except (KeyError, ValueError, AttributeError):
                continue  # a hand-edited entry that is not an engine: skipped
        return out

    def set_engines(self, entries: list[EngineEntry]) -> None:
        self.q.setValue("engines/remote", json.dumps([{"name": e.name, "url": e.url} for e in entries
                                                      if not e.is_local]))

    def in_flight(self) -> list[dict[str, str]]:
        """Remote jobs started from this desktop and not seen finishing: url, run_id, title, output_dir."""
        return [{k: str(v) for k, v in item.items()} for item in self._json_list("engines/in_flight")
                if isinstance(item, dict) and item.get("url") and item.get("run_id")]

    def remember_in_flight(self, url: str, run_id: str, title: str, output_dir: str) -> None:
        items = [i for i in self.in_flight() if i["run_id"] != run_id]
        items.append({"url": url, "run_id": run_id, "title": title, "output_dir": output_dir})
        self.q.setValue("engines/in_flight", json.dumps(items))
        self.q.sync()  # a crash of the desktop must not lose it

    def forget_in_flight(self, run_id: str) -> None:
        items = self.in_flight()
        kept = [i for i in items if i["run_id"] != run_id]
        if len(kept) != len(items):
            self.q.setValue("engines/in_flight", json.dumps(kept))
            self.q.sync()

    # the pool ---------------------------------------------------------------------------------
    def pool_excluded(self) -> list[str]:
        """Engine keys ("local" or a URL) left out of a pooled run; every engine joins by default
        (an engine added later joins too)."""
        return [str(k) for k in self._json_list("pool/excluded") if isinstance(k, str) and k]

    def set_pool_excluded(self, keys: list[str]) -> None:
        self.q.setValue("pool/excluded", json.dumps(list(dict.fromkeys(keys))))

    def in_pool(self, key: str) -> bool:
        return key not in self.pool_excluded()

    def pool_keys(self) -> list[str]:
        """The keys of the engines that join a pooled run, in Settings' order (local first)."""
        out = set(self.pool_excluded())
        return [e.key for e in (LOCAL_ENGINE, *self.engines()) if e.key not in out]

    @property
    def pool_ray(self) -> str:
        return self.choice(POOL_RAY)

    @pool_ray.setter
    def pool_ray(self, mode: str) -> None:
        self.set_choice(POOL_RAY, mode)

    @property
    def pool_ray_address(self) -> str:
        return str(self.q.value("pool/ray_address", "") or "").strip()

    @pool_ray_address.setter
    def pool_ray_address(self, address: str) -> None:
        self.q.setValue("pool/ray_address", str(address).strip())

    def ray_target(self) -> str | None:
        """What a pooled run asks Ray for: None (no Ray), "local", or the cluster's address."""
        mode = self.pool_ray
        if mode == "local":
            return "local"
        if mode == "address":
            return self.pool_ray_address or None
        return None

    @property
    def pool_shards_per_engine(self) -> int:
        try:
            return max(1, int(self.q.value("pool/shards_per_engine", 4)))
        except (TypeError, ValueError):
            return 4

    def _json_list(self, key: str) -> list[Any]:
        try:
            data = json.loads(str(self.q.value(key, "[]") or "[]"))
        except ValueError:
            return []
        return data if isinstance(data, list) else []


SHARED_FILE = "settings.json"


def _shared() -> dict[str, Any]:
    """Settings shared with headless code (`config_dir()/settings.json`); {} when absent or broken."""
    try:
        data = json.loads((paths.config_dir() / SHARED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _set_shared(key: str, value: Any) -> None:
    data = _shared()
    data[key] = value
    target = paths.config_dir() / SHARED_FILE
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(target)
