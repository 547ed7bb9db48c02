"""Image inputs: files, folders and ImageNet-format list files, as paths.

Shared by ``rexnet-plugin predict`` (INPUT...) and ``rexnet-plugin quantize``
(``--calib``). A list file is PaddleClas's ``cls_label_path`` format: one
``<relative path> <label>`` line per image (the label is optional here),
paths relative to the list's own folder.

Nothing here imports paddle; decoding is PIL's (``open_rgb``), what
``InferConfig.preprocess`` uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# What a folder is searched for (case-insensitive), PaddleClas's deploy
# get_image_list plus the formats PIL commonly reads.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm")
LIST_SUFFIXES = (".txt",)


class ImageInputError(ValueError):
    """An image input that is missing, unreadable or not an image; the message
    names the path and the fix."""


@dataclass(frozen=True)
class ImageItem:
    """One image to run: its path, and its label when a list file gave one."""

    path: Path
    label: int | None = None


def read_image_list(list_path: str | os.PathLike) -> list[ImageItem]:
    """The images of an ImageNet-format list file, paths resolved against its
    folder; every listed file must exist."""
    list_path = Path(list_path)
    if not list_path.is_file():
        raise ImageInputError(f"list file {list_path} not found; pass an existing "
                              f"ImageNet-format list ('<relative path> <label>' lines)")
    try:
        text = list_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ImageInputError(f"cannot read the list file {list_path} ({err}); it must be "
                              f"UTF-8 text with '<relative path> <label>' lines") from None
    items, missing = [], []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or line.lstrip().startswith("#"):
            continue
        if len(fields) > 2 or (len(fields) == 2 and not fields[1].lstrip("-").isdigit()):
            raise ImageInputError(
                f"{list_path}, line {number}: {line.strip()!r} is not '<relative path> "
                f"<label>' (an integer label, paths without spaces)")
        path = list_path.parent / fields[0]
        if not path.is_file():
            missing.append(f"line {number}: {path}")
        items.append(ImageItem(path, int(fields[1]) if len(fields) == 2 else None))
    if missing:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise ImageInputError(f"{list_path} lists {len(missing)} file(s) that do not exist "
                              f"({shown}); paths are relative to the list's folder "
                              f"{list_path.parent}: fix the paths or move the list")
    if not items:
        raise ImageInputError(f"list file {list_path} lists no images; expected "
                              f"'<relative path> <label>' lines")
    return items


def images_in_folder(folder: str | os.PathLike) -> list[ImageItem]:
    """The image files under ``folder`` (recursively, by suffix), sorted; hidden
    files and folders, and what is not a regular file (a FIFO would block), skipped."""
    folder = Path(folder)
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in files
                  if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)
                  and os.path.isfile(os.path.join(root, f))]
    if not found:
        raise ImageInputError(f"folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                              f"pass a folder of images, image files or a list file")
    return [ImageItem(p) for p in sorted(found)]


def collect_images(inputs) -> list[ImageItem]:
    """Image files, folders and list files (``*.txt``) -> the images, in order.

    Raises ImageInputError naming the first input that does not exist or
    holds no images. Files are not decoded here (see ``check_image``).
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    items: list[ImageItem] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            items += images_in_folder(path)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            items += read_image_list(path)
        elif path.is_file():
            items.append(ImageItem(path))
        elif path.exists():
            raise ImageInputError(f"{path} is neither a file nor a folder; pass image files, "
                                  f"folders of images or list files")
        else:
            raise ImageInputError(f"image {path} not found; check the path (inputs are image "
                                  f"files, folders of images, or ImageNet-format list files "
                                  f"*.txt)")
    if not items:
        raise ImageInputError("no images given; pass image files, folders or list files")
    return items


def check_image(path: str | os.PathLike) -> None:
    """Raise ImageInputError unless PIL can read ``path``'s header (cheap: no
    decoding) and the image is not larger than PIL's ``MAX_IMAGE_PIXELS``, so
    that a bad file is reported before any work."""
    from PIL import Image
    with _open(path) as image:
        w, h = image.size
    if w * h > Image.MAX_IMAGE_PIXELS:
        raise ImageInputError(f"{path} is {w}x{h} pixels, more than the "
                              f"{Image.MAX_IMAGE_PIXELS} that PIL decodes safely "
                              f"(PIL.Image.MAX_IMAGE_PIXELS); shrink it first")


def open_rgb(path: str | os.PathLike):
    """``path`` decoded by PIL as an RGB image; ImageInputError naming the file
    when it cannot be decoded."""
    with _open(path) as image:
        try:
            return image.convert("RGB")
        except (OSError, ValueError) as err:  # truncated data
            raise ImageInputError(f"{path} is not an image PIL can read ({err}); remove it "
                                  f"from the inputs or convert it to PNG/JPEG") from None


def _open(path: str | os.PathLike):
    """PIL's lazy image of ``path``, a regular file (a FIFO would block)."""
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ImageInputError(f"{path} is not a regular file; pass image files")
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise ImageInputError(f"image {path} not found; check the path") from None
    except Image.DecompressionBombError as err:
        raise ImageInputError(f"{path} is too large to decode safely ({err}); shrink it "
                              f"first") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageInputError(f"{path} is not an image PIL can read ({err}); remove it from "
                              f"the inputs or convert it to PNG/JPEG") from None
