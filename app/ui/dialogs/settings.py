"""The settings dialog: device, precision, memory policy, folders, cache, the accounts' tokens
(Replicate, Hugging Face for gated models, Civitai), the engines a tab may run on and those that
join a pooled run (`app.ui.dialogs.engines`), theme.

Everything but the tokens goes to the `Settings` store (QSettings); tokens go to the OS keyring
through `app.secrets` and are never shown back, only whether one is stored.
"""

from __future__ import annotations

import os

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app import secrets
from app.ui import settings as S
from app.ui.dialogs.engines import EnginesEditor, PoolEditor

TOKEN_NAME = "replicate"
#: (keyring name, label, placeholder, the environment variable that overrides it, what it is for)
ACCOUNTS = (
    (TOKEN_NAME, "Replicate", "paste an API token (r8_…)", "REPLICATE_API_TOKEN",
     "No token: Replicate nodes will ask for one."),
    ("huggingface", "Hugging Face", "paste an access token (hf_…)", "IMAGEBASH_HUGGINGFACE_TOKEN",
     "No token: gated models (SD 3.5, Flux dev) cannot be downloaded."),
    ("civitai", "Civitai", "paste an API key", "IMAGEBASH_CIVITAI_TOKEN",
     "No key: Civitai models that need a login cannot be downloaded."),
)


class TokenRow:
    """One account's token: typed here once, kept in the OS keyring (never in a file), never shown
    back; the row says whether one is stored or comes from the environment."""

    def __init__(self, form: QFormLayout, name: str, label: str, placeholder: str, env: str, missing: str) -> None:
        self.name, self.env, self.missing = name, env, missing
        self.edit = QLineEdit()
        self.edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.edit.setPlaceholderText(placeholder)
        self.state = QLabel()
        self.state.setWordWrap(True)
        self.forget = QPushButton("Remove stored token")
        row = QHBoxLayout()
        row.addWidget(self.edit, 1)
        row.addWidget(self.forget)
        form.addRow(label, row)
        form.addRow("", self.state)
        self.show_state()

    def show_state(self) -> None:
        source = secrets.token_source(self.name)
        self.forget.setEnabled(source == "keyring")
        self.state.setText({
            "keyring": "A token is stored in the OS keyring. Type a new one to replace it.",
            "environment": f"Using the token from the {self.env} environment variable.",
        }.get(source or "", f"{self.missing} It is kept in the OS keyring, never in files."))

    def forget_token(self) -> str | None:
        """Delete the stored token; the error line, if the keyring refused."""
        try:
            secrets.delete_token(self.name)
        except secrets.SecretStoreError as exc:
            return str(exc)
        finally:
            self.show_state()
        return None

    def apply(self) -> str | None:
        """Store a newly typed token; the error line, if the keyring refused."""
        token = self.edit.text().strip()
        if token:
            try:
                secrets.set_token(self.name, token)
            except secrets.SecretStoreError as exc:
                return str(exc)
            self.edit.clear()
        self.show_state()
        return None


class SettingsDialog(QDialog):
    """Edit the settings; `accept()` writes them (and stores a newly typed token)."""

    def __init__(self, settings: S.Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.settings = settings
        self.combos: dict[str, QComboBox] = {}

        engine = QGroupBox("Local engine")
        ef = QFormLayout(engine)
        for label, choice, tip in (
            ("Device", S.DEVICE, "auto picks CUDA, then Apple MPS, then the CPU"),
            ("Precision", S.PRECISION, "auto uses fp16 on GPUs that support it, fp32 on the CPU"),
            ("Attention slicing", S.ATTENTION_SLICING, "saves memory at some speed cost"),
            ("VAE tiling", S.VAE_TILING, "decode large images in tiles to save memory"),
            ("Memory mode", S.MEMORY_MODE, "auto plans from the model's size and the free VRAM (the log says why); "
             "fp8 stores big layers in 8 bits, the offload modes trade speed for VRAM, nf4 needs bitsandbytes"),
        ):
            combo = QComboBox()
            combo.addItems(choice.values)
            combo.setCurrentText(settings.choice(choice))
            combo.setToolTip(tip)
            self.combos[choice.key] = combo
            ef.addRow(label, combo)
        self.cpu_offload = QCheckBox("Offload model parts to the CPU when idle (less VRAM, slower)")
        self.cpu_offload.setChecked(settings.cpu_offload)
        ef.addRow("", self.cpu_offload)
        self.compile_denoiser = QCheckBox("Compile the denoiser with torch.compile (CUDA; slow first run)")
        self.compile_denoiser.setChecked(settings.compile_denoiser)
        ef.addRow("", self.compile_denoiser)
        self.cache_budget = QDoubleSpinBox()
        self.cache_budget.setRange(0.1, 1024)
        self.cache_budget.setDecimals(1)
        self.cache_budget.setSuffix(" GB")
        self.cache_budget.setValue(settings.cache_budget_gb)
        self.cache_budget.setToolTip("Memory for cached node outputs (re-runs reuse them)")
        ef.addRow("Cache budget", self.cache_budget)

        folders = QGroupBox("Folders")
        ff = QFormLayout(folders)
        self.models_dir = _folder_row(ff, "Models", str(settings.models_dir), self)
        self.extra_models = _folder_row(ff, "Other tool's models", os.pathsep.join(str(f) for f in
                                                                     settings.extra_model_roots), self)
        self.extra_models.setPlaceholderText("an existing ComfyUI or A1111 models folder (optional)")
        self.extra_models.setToolTip("Its models are listed and used where they are, nothing is copied; "
                                     f"several folders are separated by '{os.pathsep}'")
        self.output_dir = _folder_row(ff, "Output", str(settings.output_dir), self)

        online = QGroupBox("Accounts")
        of = QFormLayout(online)
        self.accounts = {a[0]: TokenRow(of, *a) for a in ACCOUNTS}
        for row in self.accounts.values():
            row.forget.clicked.connect(lambda _=False, r=row: self._forget(r))
        self.token, self.token_state = self.accounts[TOKEN_NAME].edit, self.accounts[TOKEN_NAME].state

        self.engines = EnginesEditor(settings)
        self.pool = PoolEditor(settings, self.engines)

        look = QGroupBox("Appearance")
        lf = QFormLayout(look)
        theme = QComboBox()
        theme.addItems(S.THEME.values)
        theme.setCurrentText(settings.theme)
        self.combos[S.THEME.key] = theme
        lf.addRow("Theme", theme)

        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #e0605a")
        self.error.hide()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        for box in (engine, self.engines, self.pool, folders, online, look):
            lay.addWidget(box)
        lay.addWidget(self.error)
        lay.addWidget(buttons)

    def _forget(self, row: TokenRow) -> None:
        error = row.forget_token()
        if error:
            self._fail(error)

    def _forget_token(self) -> None:
        self._forget(self.accounts[TOKEN_NAME])

    def _fail(self, message: str) -> None:
        self.error.setText(message)
        self.error.show()

    def apply(self) -> bool:
        """Write everything; False (with the reason shown) when a token could not be stored or an
        engine's entry is wrong."""
        try:
            self.pool.validate()
        except ValueError as exc:
            self._fail(str(exc))
            return False
        if not self.engines.apply():
            self._fail(self.engines.error)
            return False
        if not self.pool.apply():
            self._fail(self.pool.error)
            return False
        for row in self.accounts.values():
            error = row.apply()
            if error:
                self._fail(error)
                return False
        s = self.settings
        for choice in (S.DEVICE, S.PRECISION, S.ATTENTION_SLICING, S.VAE_TILING, S.MEMORY_MODE, S.THEME):
            s.set_choice(choice, self.combos[choice.key].currentText())
        s.cpu_offload = self.cpu_offload.isChecked()
        s.compile_denoiser = self.compile_denoiser.isChecked()
        s.cache_budget_gb = self.cache_budget.value()
        s.models_dir = self.models_dir.text().strip() or str(s.models_dir)
        s.output_dir = self.output_dir.text().strip() or str(s.output_dir)
        s.extra_model_roots = [f.strip() for f in self.extra_models.text().split(os.pathsep) if f.strip()]
        s.sync()
        return True

    def accept(self) -> None:
        if self.apply():
            super().accept()


def _folder_row(form: QFormLayout, label: str, value: str, parent: QWidget) -> QLineEdit:
    edit = QLineEdit(value)
    browse = QPushButton("Browse…")

    def pick() -> None:
        folder = QFileDialog.getExistingDirectory(parent, f"{label} folder", edit.text())
        if folder:
            edit.setText(folder)

    browse.clicked.connect(pick)
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(browse)
    form.addRow(label, row)
    return edit
