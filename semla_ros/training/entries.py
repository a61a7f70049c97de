"""Library entries made from a labelled domain folder (train) or from an existing PEFT adapter (add): what
`semla-library train` and `add` do, with the checks that keep a library valid (an existing entry is kept
unless overwriting; an added adapter is validated against the model under its final name before it enters
the library, so a bad one leaves nothing behind).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core.library import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    AdapterEntry,
    InvalidEntryError,
    load_entry,
    read_adapter,
    write_entry,
)
from ..core.output_paths import check_output_folder
from ..core.progress import progress_bar
from ..evaluation.dataset import no_readable, open_domain
from .lora import TrainedAdapter, TrainSettings, base_model_id, domain_centroid, save_entry, train_adapter


class UnusableAdapter(ValueError):
    """An adapter that cannot become an entry (unreadable, or not fitting the model)."""


@dataclass(frozen=True)
class NewEntry:
    """An entry written into a library, and how it was made."""

    path: Path
    entry: AdapterEntry
    trained: TrainedAdapter | None = None   # None: added from an existing adapter
    images: int = 0                          # images its centroid is the mean embedding of
    skipped: tuple[tuple[str, str], ...] = ()   # unreadable files left out (path, reason)

    def summary(self) -> str:
        e, t = self.entry, self.trained
        skipped = (f"; skipped {len(self.skipped)} unreadable file(s), e.g. {self.skipped[0][0]}: "
                   f"{self.skipped[0][1]}" if self.skipped else "")
        if t is None:
            return (f"added {self.path}: {len(e.modules)} target modules, r={e.rank}, centroid of {self.images} "
                    f"images{skipped}")
        return (f"wrote {self.path}: {len(e.modules)} target modules, r={e.rank}, scaling {e.scaling:g}, "
                f"{t.trainable_parameters} trainable parameters, {self.images} images, "
                f"loss {t.losses[0]:.4f} -> {t.losses[-1]:.4f} in {t.seconds:.0f} s{skipped}")


def _free(library: Path, name: str, overwrite: bool) -> Path:
    """The entry's folder, checked before any work: the library must be writable, the name free."""
    check_output_folder(library, "--library")
    target = Path(library) / name
    if target.exists() and not overwrite:
        raise ValueError(f"entry {target} exists (use --overwrite)")
    return target


def train_entry(domain_dir, library: Path, settings: TrainSettings, engine: Callable[[], tuple], *,
                name: str | None = None, max_images: int | None = None, overwrite: bool = False,
                device: str = "cpu", show_progress: bool = True) -> NewEntry:
    """Train one LoRA adapter on the first `max_images` (all: None) images of a domain folder and write it into
    `library` with its domain centroid; an unreadable file is skipped and counted. `engine` gives (model,
    navigator); it is called once the inputs are known to be usable."""
    folder = open_domain(domain_dir)
    name = name or folder.name
    _free(library, name, overwrite)
    skipped: list[tuple[str, str]] = []
    pairs = list(folder.pairs(max_images, skipped))
    if not pairs:
        raise no_readable(folder.path, skipped)
    images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    model, navigator = engine()
    bar = progress_bar(total=settings.loop.steps, desc=f"train {name} ({settings.init}, {settings.profile})",
                       unit="step", quiet=not show_progress)

    def progress(step, loss):
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    trained = train_adapter(model, folder.classes, images, labels, name, settings, progress=progress, device=device)
    bar.close()
    path = save_entry(trained, library, domain_centroid(navigator, images), {
        "navigator": navigator.id, "domain": folder.name, "classes": list(folder.classes),
        "data": str(folder.path), "base_model": base_model_id(model)}, overwrite=overwrite)
    entry = load_entry(path, navigator_dim=navigator.dim, navigator_id=navigator.id, model=model)
    return NewEntry(path, entry, trained, len(images), tuple(skipped))


def add_entry(adapter_dir: Path, image_dir, library: Path, engine: Callable[[], tuple], *, name: str | None = None,
              overwrite: bool = False) -> NewEntry:
    """An existing PEFT LoRA adapter (config + safetensors) as a new entry, its centroid the mean embedding
    of `image_dir`'s images. FileNotFoundError / ValueError for missing files or an existing entry,
    UnusableAdapter when the adapter cannot be read or does not fit the model."""
    src = Path(adapter_dir)
    for f in (CONFIG_FILE, WEIGHTS_FILE):
        if not (src / f).is_file():
            hint = " (convert adapter_model.bin with safetensors first)" if f == WEIGHTS_FILE and \
                (src / "adapter_model.bin").is_file() else ""
            raise FileNotFoundError(f"{src / f} not found{hint}")
    name = name or src.name
    target = _free(library, name, overwrite)
    try:
        factors, alpha, rslora = read_adapter(src)
    except InvalidEntryError as exc:
        raise UnusableAdapter(f"{src} is not a usable LoRA adapter: {exc}") from exc
    folder = open_domain(image_dir, require_labels=False)
    model, navigator = engine()
    skipped: list[tuple[str, str]] = []
    images = list(folder.images(skipped=skipped))
    if not images:
        raise no_readable(folder.path, skipped)
    centroid = domain_centroid(navigator, images)
    with tempfile.TemporaryDirectory(dir=library.parent if library.parent.exists() else None) as tmp:
        # Validated where it is written, under its final name, before it enters the library.
        staged = write_entry(tmp, name, factors, centroid, lora_alpha=alpha, use_rslora=rslora, metadata={
            "name": name, "navigator": navigator.id, "embedding_dim": int(centroid.size),
            "source_adapter": str(src), "centroid_images": len(images), "data": str(folder.path),
            "base_model": base_model_id(model)})
        try:
            entry = load_entry(staged, navigator_dim=navigator.dim, navigator_id=navigator.id, model=model)
        except InvalidEntryError as exc:
            raise UnusableAdapter(f"{src} is not a usable adapter for this model: {exc}") from exc
    write_entry(library, name, factors, centroid, lora_alpha=alpha, use_rslora=rslora,
                metadata=dict(entry.metadata), overwrite=overwrite)
    return NewEntry(target, entry, None, len(images), tuple(skipped))
