"""The user's own data: an ImageFolder tree or an ``.npz`` file, named wherever a dataset is.

Write ``imagefolder:PATH`` or ``npz:FILE`` where a dataset name is expected (a config's
``data.target``, ``cetl data check NAME``). ``PATH`` is used as written: relative paths are
relative to the working directory, ``~`` is expanded; the data root plays no part.

**ImageFolder** (the layout of ``torchvision.datasets.ImageFolder``)::

    PATH/train/<class>/*.png      required; one sub-folder per class
    PATH/val/<class>/...          optional; the same class folders as train
    PATH/test/<class>/...         optional; the same class folders as train
    PATH/unlabelled/*.png         optional; loose images (sub-folders are searched too)

Labels are the indices of the sorted class-folder names, as in torchvision. Every labelled
split must have the same class folders (otherwise a label would mean different classes in
different splits) and every class folder at least one image. Files are read with Pillow
(extensions in :data:`IMAGE_EXTENSIONS`, any case; other files are ignored).

**npz**: arrays ``x_train``, ``y_train``, ``x_test``, ``y_test`` (required), ``x_val`` with
``y_val`` and ``x_unlabelled`` (optional), and ``classes`` (optional class names; without it
the classes are ``0 .. max(y_train)``, so a test label unseen in training is an error). Other
arrays are ignored. Images may be

- ``(N, H, W)`` grey, ``(N, H, W, C)`` or ``(N, C, H, W)`` with C = 1 or 3 (a last axis of
  size 1 or 3 is read as channels, otherwise the second);
- uint8 (or any integer type with values 0..255), or float in [0, 1], stored as
  ``round(255 x)``: every split becomes a :class:`RawSplit` of uint8 ``(N, C, H, W)``, the
  contract the protocols read, so float data is quantised to 1/255 steps;

and labels any integer type.

**Reconciling images** (both formats): grey and colour images together become RGB (grey
replicated; alpha and palettes are dropped by Pillow's conversion). Different sizes of one
aspect ratio (within 2 %) are rescaled full frame to the most common size (antialiased,
bilinear), since every protocol rescales full frame anyway. Different aspect ratios are an
error: cropping, padding or stretching them is a decision about the data that cetl leaves to
its owner. Unlabelled images carry label -1 (torchvision's STL-10 convention).

Why one file: both formats end in the same reconciliation (:func:`common_geometry`, the uint8 NCHW
contract, label checks); the two readers are short and share those helpers.
"""

from __future__ import annotations

import functools
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cetl.data.datasets import DatasetSpec, Located, RawSplit
from cetl.errors import DataError
from cetl.registry import did_you_mean

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp")
LABELLED_SPLITS = ("train", "val", "test")
UNLABELLED = "unlabelled"
UNLABELLED_LABEL = -1
ASPECT_TOLERANCE = 0.02
"""Largest relative difference of width/height ratios still rescaled to one size."""

GREY_MODES = frozenset({"1", "L", "LA", "La"})
COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"})
"""Pillow modes converted losslessly enough to 8-bit grey or RGB; others (16-bit, float) are refused."""

NPZ_REQUIRED = ("x_train", "y_train", "x_test", "y_test")
NPZ_OPTIONAL = ("x_val", "y_val", "x_unlabelled", "classes")

FOLDER_LAYOUT = (
    "PATH/train/<class>/<image> (required), PATH/val/<class>/... and PATH/test/<class>/... "
    "(optional, the same class folders), PATH/unlabelled/<image> (optional)"
)
NPZ_LAYOUT = (
    "arrays x_train, y_train, x_test, y_test (optional x_val with y_val, x_unlabelled, classes); "
    "x as (N,H,W), (N,H,W,C) or (N,C,H,W), uint8 or float in [0,1]; y integer class indices"
)

Shape = tuple[int, int, int]
"""(channels, height, width) of one image."""


@dataclass(frozen=True)
class Geometry:
    """The channels and size every image of a dataset is brought to."""

    channels: int
    height: int
    width: int


@functools.lru_cache(maxsize=8)
def custom_spec(scheme: str, location: str) -> DatasetSpec:
    """A :class:`DatasetSpec` for ``SCHEME:LOCATION`` after checking the layout and labels.

    Raises:
        DataError: the folder or file is absent, or breaks a rule of the module docstring;
            the message names the offending folder, file, array or label and how to fix it.
    """
    path = Path(location).expanduser()
    name = f"{scheme}:{location}"
    if scheme == "imagefolder":
        found = _scan_folder(path)
        title, layout_doc, reader, files = f"image folder {path}", FOLDER_LAYOUT, _read_folder, found.files
    else:
        found = _read_npz(path)
        title, layout_doc, reader, files = f"npz file {path}", NPZ_LAYOUT, _read_npz_split, found.splits
    return DatasetSpec(
        name=name,
        title=title,
        num_classes=len(found.classes),
        channels=found.geometry.channels,
        files=(),
        how_to_get=layout_doc,
        reader=reader,
        layout="NCHW",
        classes=found.classes,
        splits=_splits_of(files),
        locator=lambda _root: Located("full", path),
        path=path,
    )


def draw_name(name: str) -> str:
    """The name seeded draws (subsets, few labels, validation) use for dataset ``name``.

    The user's own data is named by its path, which differs between machines and copies; its
    draws use only the folder or file name (``imagefolder:my_images``), so the same data gives
    the same subsets wherever it lies. Registered names are returned unchanged.
    """
    scheme, colon, location = name.partition(":")
    if not colon or scheme not in ("imagefolder", "npz"):
        return name
    return f"{scheme}:{Path(location).expanduser().name}"


# --- shared: one geometry for all images ---------------------------------------------------


def common_geometry(shapes: Counter[Shape], examples: dict[tuple[int, int], str], where: str) -> Geometry:
    """The channels and size every image is brought to, by the rules of the module docstring.

    Args:
        shapes: how many images have each (channels, height, width).
        examples: for each (height, width), one image to name in an error.
        where: the dataset, for the error message.

    Raises:
        DataError: the images have different aspect ratios.
    """
    channels = 3 if any(c == 3 for c, _, _ in shapes) else 1
    sizes: Counter[tuple[int, int]] = Counter()
    for (_, height, width), count in shapes.items():
        sizes[(height, width)] += count
    ratios = [width / height for height, width in sizes]
    if max(ratios) > min(ratios) * (1 + ASPECT_TOLERANCE):
        listed = ", ".join(
            f"{w}x{h} ({n} image{'s' if n > 1 else ''}, e.g. {examples[(h, w)]})"
            for (h, w), n in sizes.most_common(6)
        )
        more = f" and {len(sizes) - 6} more sizes" if len(sizes) > 6 else ""
        raise DataError(
            f"{where} has images of different aspect ratios (width x height): {listed}{more}. cetl "
            f"rescales images of one aspect ratio to a common size, but whether to crop, pad or stretch "
            f"the others is your decision: bring them to one size first, e.g. with Pillow "
            f"Image.open(f).resize((32, 32)).save(f)"
        )
    height, width = max(sizes, key=lambda size: (sizes[size], size[0] * size[1]))
    return Geometry(channels, height, width)


def _conform(images: Tensor, geometry: Geometry) -> Tensor:
    """uint8 ``(N, C, H, W)`` at any size and C in {1, 3} → uint8 at ``geometry``."""
    if images.shape[1] == 1 and geometry.channels == 3:
        images = images.expand(-1, 3, -1, -1)
    if tuple(images.shape[-2:]) != (geometry.height, geometry.width):
        shrinking = images.shape[-1] > geometry.width
        images = F.interpolate(
            images.float(),
            size=(geometry.height, geometry.width),
            mode="bilinear",
            align_corners=False,
            antialias=shrinking,
        )
        images = images.round_().clamp_(0, 255).to(torch.uint8)
    return images.contiguous()


def _warn_rescaled(shapes: Counter[Shape], geometry: Geometry, where: str) -> None:
    others = sorted({(w, h) for _, h, w in shapes} - {(geometry.width, geometry.height)})
    if others:
        count = sum(n for (_, h, w), n in shapes.items() if (h, w) != (geometry.height, geometry.width))
        sizes = ", ".join(f"{w}x{h}" for w, h in others)
        warnings.warn(
            f"{where}: {count} images of size {sizes} rescaled to the most common size "
            f"{geometry.width}x{geometry.height}",
            stacklevel=2,
        )


def _check_labels(labels: np.ndarray, num_classes: int, where: str, why: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        index = int(bad[0])
        raise DataError(
            f"{where} holds label {int(labels[index])} (at index {index}; {bad.size} labels in all) "
            f"outside the valid range 0..{num_classes - 1} ({why})"
        )


# --- ImageFolder ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _FolderScan:
    classes: tuple[str, ...]
    files: dict[str, tuple[tuple[Path, int], ...]]
    """Per split present: (image file, label) in sorted order."""
    geometry: Geometry


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def _class_folders(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


@functools.lru_cache(maxsize=8)
def _scan_folder(root: Path) -> _FolderScan:
    """Check the layout and read every image's header (not its pixels)."""
    if not (root / "train").is_dir():
        what = "does not exist" if not root.exists() else "has no train/ folder"
        raise DataError(f"image folder {root} {what}; expected {FOLDER_LAYOUT}")
    classes: dict[str, tuple[str, ...]] = {}
    files: dict[str, tuple[tuple[Path, int], ...]] = {}
    for split in LABELLED_SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        folders = _class_folders(split_dir)
        if not folders:
            raise DataError(
                f"{split_dir} has no class sub-folders; put each class's images in "
                f"{split_dir}/<class name>/ (expected {FOLDER_LAYOUT})"
            )
        classes[split] = tuple(f.name for f in folders)
        _same_classes(classes, root)
        listed = []
        for label, folder in enumerate(folders):
            images = _image_files(folder)
            if not images:
                others = [p.name for p in folder.rglob("*") if p.is_file()][:3]
                found = f" (it holds only {', '.join(others)}...)" if others else ""
                raise DataError(
                    f"class folder {folder} has no images{found}; add images with one of the extensions "
                    f"{', '.join(IMAGE_EXTENSIONS)} or remove the folder from every split"
                )
            listed += [(image, label) for image in images]
        files[split] = tuple(listed)
    if (root / UNLABELLED).is_dir():
        loose = _image_files(root / UNLABELLED)
        if not loose:
            raise DataError(f"{root / UNLABELLED} has no images; add some or remove the folder")
        files[UNLABELLED] = tuple((image, UNLABELLED_LABEL) for image in loose)
    shapes: Counter[Shape] = Counter()
    examples: dict[tuple[int, int], str] = {}
    for image, _ in (entry for split_files in files.values() for entry in split_files):
        shape = _header(image)
        shapes[shape] += 1
        examples.setdefault(shape[1:], str(image.relative_to(root)))
    geometry = common_geometry(shapes, examples, f"image folder {root}")
    _warn_rescaled(shapes, geometry, f"image folder {root}")
    return _FolderScan(classes["train"], files, geometry)


def _same_classes(classes: dict[str, tuple[str, ...]], root: Path) -> None:
    """Every labelled split has the class folders of train (labels are indices into them)."""
    train = set(classes["train"])
    for split, names in classes.items():
        if set(names) != train:
            only_train = sorted(train - set(names))
            only_split = sorted(set(names) - train)
            raise DataError(
                f"the class folders of {root / split} differ from those of {root / 'train'}: "
                f"only in train: {only_train or 'none'}; only in {split}: {only_split or 'none'}. "
                f"Labels are indices of the sorted class names, so every split needs the same class "
                f"folders; add or remove folders to match"
            )


def _header(image: Path) -> Shape:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image) as opened:
            mode, (width, height) = opened.mode, opened.size
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise DataError(f"cannot read image {image} ({error}); re-save or remove it") from None
    if mode in GREY_MODES:
        return (1, height, width)
    if mode in COLOUR_MODES:
        return (3, height, width)
    raise DataError(
        f"image {image} has Pillow mode '{mode}' (e.g. 16-bit or float pixels); cetl reads 8-bit grey "
        f"or colour images: convert it, e.g. to an 8-bit PNG"
    )


def _read_folder(root: Path, split: str, download: bool) -> tuple[Tensor, Tensor]:
    """The ``DatasetSpec.reader`` of an image folder: decode one split's images with Pillow."""
    scan = _scan_folder(root)
    images = [_decode(path, scan.geometry) for path, _ in scan.files[split]]
    labels = torch.tensor([label for _, label in scan.files[split]], dtype=torch.long)
    return torch.cat(images), labels


def read_loose_images(folder: Path) -> RawSplit:
    """Every image under ``folder`` (flat or in sub-folders, sorted) as unlabelled uint8 images.

    For extra unlabelled target images named apart from the dataset (``data.unlabelled``,
    ``cetl adapt --unlabelled-data``); sub-folder names are *not* labels, and images are
    brought to one geometry by the same rules as a dataset's (module docstring).

    Raises:
        DataError: the folder is absent, holds no images, or breaks the geometry rules.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(
            f"unlabelled image folder {folder} does not exist; expected a folder of image files "
            f"(flat or in sub-folders, extensions {', '.join(IMAGE_EXTENSIONS)})"
        )
    files = _image_files(folder)
    if not files:
        raise DataError(
            f"unlabelled image folder {folder} holds no images with one of the extensions "
            f"{', '.join(IMAGE_EXTENSIONS)}; point it at a folder of image files"
        )
    shapes: Counter[Shape] = Counter()
    examples: dict[tuple[int, int], str] = {}
    for image in files:
        shape = _header(image)
        shapes[shape] += 1
        examples.setdefault(shape[1:], str(image.relative_to(folder)))
    where = f"unlabelled image folder {folder}"
    geometry = common_geometry(shapes, examples, where)
    _warn_rescaled(shapes, geometry, where)
    images = torch.cat([_decode(path, geometry) for path in files])
    return RawSplit(images, torch.full((len(files),), UNLABELLED_LABEL, dtype=torch.long))


def _decode(path: Path, geometry: Geometry) -> Tensor:
    """One image file → uint8 ``(1, C, H, W)`` at ``geometry``."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            pixels = np.asarray(opened.convert("RGB" if geometry.channels == 3 else "L"))
    except OSError as error:
        raise DataError(f"cannot decode image {path} ({error}); re-save or remove it") from None
    tensor = torch.from_numpy(pixels.copy())
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)  # (C, H, W)
    return _conform(tensor.unsqueeze(0), geometry)


# --- npz -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NpzData:
    splits: dict[str, RawSplit]
    classes: tuple[str, ...]
    geometry: Geometry


@functools.lru_cache(maxsize=4)
def _read_npz(path: Path) -> _NpzData:
    """Load, check and convert every array once; the splits are then served from memory."""
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist; expected a file with {NPZ_LAYOUT}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"cannot read {path} as an npz file ({error}); expected {NPZ_LAYOUT}") from None
    where = f"npz file {path}"
    _require_arrays(arrays, where)
    pairs = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
    if "x_val" in arrays or "y_val" in arrays:
        if "x_val" not in arrays or "y_val" not in arrays:
            raise DataError(f"{where} holds only one of x_val and y_val; add the other or remove it")
        pairs["val"] = ("x_val", "y_val")
    images = {split: _images_nchw(arrays[x], f"{where}, array {x}") for split, (x, _) in pairs.items()}
    labels = {split: _labels(arrays[y], len(images[split]), x, y, where) for split, (x, y) in pairs.items()}
    if "x_unlabelled" in arrays:
        images[UNLABELLED] = _images_nchw(arrays["x_unlabelled"], f"{where}, array x_unlabelled")
        labels[UNLABELLED] = torch.full((len(images[UNLABELLED]),), UNLABELLED_LABEL, dtype=torch.long)
    classes = _npz_classes(arrays, labels, where)
    shapes: Counter[Shape] = Counter()
    examples: dict[tuple[int, int], str] = {}
    for split, batch in images.items():
        c, h, w = batch.shape[1:]
        shapes[(c, h, w)] += len(batch)
        examples.setdefault((h, w), f"x_{split}")
    geometry = common_geometry(shapes, examples, where)
    _warn_rescaled(shapes, geometry, where)
    splits = {split: RawSplit(_conform(images[split], geometry), labels[split]) for split in images}
    return _NpzData(splits, classes, geometry)


def _read_npz_split(path: Path, split: str, download: bool) -> tuple[Tensor, Tensor]:
    """The ``DatasetSpec.reader`` of an npz file."""
    raw = _read_npz(path).splits[split]
    return raw.images, raw.labels


def _require_arrays(arrays: dict[str, np.ndarray], where: str) -> None:
    missing = [name for name in NPZ_REQUIRED if name not in arrays]
    if missing:
        hints = "".join(did_you_mean(name, sorted(arrays)) for name in missing)
        raise DataError(
            f"{where} lacks the arrays {', '.join(missing)}; expected {', '.join(NPZ_REQUIRED)} "
            f"(optional {', '.join(NPZ_OPTIONAL)}), found {', '.join(sorted(arrays)) or 'none'}.{hints} "
            f"Save it with np.savez(FILE, x_train=..., y_train=..., x_test=..., y_test=...)"
        )


def _images_nchw(array: np.ndarray, where: str) -> Tensor:
    """Images in any accepted layout and dtype → uint8 ``(N, C, H, W)``."""
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    elif array.ndim != 4 or array.shape[1] not in (1, 3):
        raise DataError(
            f"{where} has shape {array.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) with "
            f"C = 1 (grey) or 3 (RGB)"
        )
    if len(array) == 0:
        raise DataError(f"{where} holds no images")
    if array.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(array))
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise DataError(
                f"{where} holds integer pixels in {low}..{high}; expected 0..255 (or floats in [0, 1])"
            )
        return torch.from_numpy(np.ascontiguousarray(array.astype(np.uint8)))
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise DataError(f"{where} holds NaN or infinite pixels; expected floats in [0, 1]")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            hint = "; divide by 255 if they are 0..255 values" if high <= 255.0 and low >= 0.0 else ""
            raise DataError(f"{where} holds float pixels in [{low:g}, {high:g}]; expected [0, 1]{hint}")
        return torch.from_numpy(np.ascontiguousarray(np.rint(array * 255.0).astype(np.uint8)))
    raise DataError(f"{where} has dtype {array.dtype}; expected uint8 or float in [0, 1]")


def _labels(array: np.ndarray, count: int, x_name: str, y_name: str, where: str) -> Tensor:
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise DataError(
            f"{where}: {y_name} has shape {array.shape} and dtype {array.dtype}; expected one integer "
            f"class index per image, e.g. y.astype(np.int64) or y.argmax(1) for one-hot labels"
        )
    if len(array) != count:
        raise DataError(
            f"{where}: {x_name} holds {count} images but {y_name} holds {len(array)} labels; "
            f"they must have one label per image, in the same order"
        )
    return torch.from_numpy(array.astype(np.int64))


def _npz_classes(arrays: dict[str, np.ndarray], labels: dict[str, Tensor], where: str) -> tuple[str, ...]:
    """Class names: the ``classes`` array, else ``0 .. max(y_train)``; every label checked against them."""
    if "classes" in arrays:
        classes = tuple(str(c) for c in np.asarray(arrays["classes"]).reshape(-1))
        why = f"the {len(classes)} names in the classes array"
    else:
        classes = tuple(str(c) for c in range(max(int(labels["train"].max()) + 1, 1)))
        why = "the classes seen in y_train; add a classes array to declare more"
    for split in (s for s in LABELLED_SPLITS if s in labels):
        _check_labels(labels[split].numpy(), len(classes), f"{where}, array y_{split},", why)
    return classes


def _splits_of(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(s for s in (*LABELLED_SPLITS, UNLABELLED) if s in names)
