"""Image inputs (files, folders, PaddleClas's list files) and the one image-size policy."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# What a folder is searched for: PaddleClas deploy's get_image_list, plus what PIL reads.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm")
# Longer side / shorter side: more makes the resize to the short side unbounded.
MAX_ASPECT_RATIO = 100


class ImageInputError(ValueError):
    """An image input that is missing, unreadable or too large; names it and the fix."""


@dataclass(frozen=True)
class ImageItem:
    path: Path
    label: int | None = None  # a list file's label


def check_image_size(width: int, height: int, source: str):
    """ImageInputError naming ``source`` for no pixels, too elongated, or over PIL's limit."""
    from PIL import Image
    limit = Image.MAX_IMAGE_PIXELS
    if min(width, height) < 1:
        problem = "it has no pixels"
    elif max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        problem = (f"one side is more than {MAX_ASPECT_RATIO} times the other (resizing its "
                   f"short side to the model's input would need unbounded memory); crop it "
                   f"to a less elongated shape")
    elif limit and width * height > limit:
        problem = f"{width * height} pixels, more than the {limit} allowed; shrink it first"
    else:
        return
    raise ImageInputError(f"{source} is {width}x{height} pixels: {problem}")


def read_image_list(list_path: Path) -> list[ImageItem]:
    """``<path relative to the list> [<label>]`` lines; every listed file must exist."""
    try:
        text = list_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ImageInputError(f"cannot read the list file {list_path} ({err}); it must be "
                              f"UTF-8 text with '<relative path> <label>' lines") from None
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) > 2 or (len(fields) == 2 and not fields[1].lstrip("-").isdigit()):
            raise ImageInputError(f"{list_path}, line {number}: {line.strip()!r} is not "
                                  f"'<relative path> <label>' (an integer label, paths without "
                                  f"spaces)")
        path = list_path.parent / fields[0]
        if not path.is_file():
            raise ImageInputError(f"{list_path}, line {number}: {path} does not exist; paths "
                                  f"are relative to the list's folder {list_path.parent}: fix "
                                  f"the paths or move the list")
        items.append(ImageItem(path, int(fields[1]) if len(fields) == 2 else None))
    if not items:
        raise ImageInputError(f"list file {list_path} lists no images; expected "
                              f"'<relative path> <label>' lines")
    return items


def images_in_folder(folder: str | os.PathLike) -> list[ImageItem]:
    """The regular image files under ``folder``, recursively and sorted; hidden ones skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root, f) for f in files if not f.startswith(".")
                  and f.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(root, f))]
    if not found:
        raise ImageInputError(f"folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                              f"pass a folder of images, image files or a list file")
    return [ImageItem(p) for p in sorted(found)]


def collect_images(inputs) -> list[ImageItem]:
    """Image files, folders and list files (``*.txt``) -> the images, in order."""
    items = []
    for given in [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs:
        path = Path(given)
        if path.is_dir():
            items += images_in_folder(path)
        elif path.is_file():
            items += read_image_list(path) if path.suffix.lower() == ".txt" else [ImageItem(path)]
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
    """``check_image_size`` from the header alone: bad files fail before any work."""
    open_rgb(path, decode=False)


def open_rgb(path: str | os.PathLike, decode: bool = True):
    """``path`` as RGB once ``check_image_size`` passed; ImageInputError names a bad file."""
    from PIL import Image
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO would block
        raise ImageInputError(f"{path} is not a regular file; pass image files")
    try:
        with Image.open(path) as image:
            check_image_size(*image.size, str(path))
            return image.convert("RGB") if decode else None
    except ImageInputError:
        raise
    except FileNotFoundError:
        raise ImageInputError(f"image {path} not found; check the path") from None
    except Image.DecompressionBombError as err:
        raise ImageInputError(f"{path} is too large to decode safely ({err}); shrink it "
                              f"first") from None
    except (OSError, ValueError) as err:  # not an image, truncated data
        raise ImageInputError(f"{path} is not an image PIL can read ({err}); remove it from "
                              f"the inputs or convert it to PNG/JPEG") from None
