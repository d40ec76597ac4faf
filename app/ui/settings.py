"""The user's settings: one typed store over QSettings (an .ini in `app.paths.config_dir()`).

Everything the settings dialog edits lives here and nowhere else; the engine gets its part as an
`EngineSettings`. The models folder is the exception: the headless side (the model catalog, the
CLI) reads it from `config_dir()/settings.json`, so it is kept there, and only there. Secrets
(the Replicate token) never pass through this store: they go to the OS keyring via `app.secrets`.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QSettings

from app import paths

MAX_RECENT = 10


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
THEME = Choice("ui/theme", "dark", ("dark", "light"))


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
            cpu_offload=self.cpu_offload, cache_budget_bytes=int(self.cache_budget_gb * (1 << 30)))

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
