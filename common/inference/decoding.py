"""Turn untrusted image bytes into a model-sized RGB array, or a PermanentImageError saying why not.

Memory is bounded per image, for every accepted pixel format: before anything is decoded, what the decode will
hold (pixels × the bytes a pixel takes in its mode, more for formats whose library decodes into a buffer of its
own that Pillow then copies) is checked against MAX_DECODED_BYTES. After the decode the image is reduced by an
integer factor at once (Image.reduce, or a box filter for modes it does not take) and the full-size image freed:
orientation, 16-bit and float scaling, transparency and colour conversion all work on the reduced image. JPEGs
decode reduced in the first place (libjpeg scales by 1/2, 1/4 or 1/8). At most one large decode runs at a time
in a process, so several workers or served previews never hold several budgets at once.

Previews (a page's thumbnails and its "full photo", at most 2048 px) are made by `load_preview` under the same
budget and the same one-at-a-time rule, from the open file to the RGB picture at its final size: a JPEG decodes
at the smallest libjpeg scale still at least the preview's size, anything else is reduced by an integer factor
(a box filter) right after the decode and then resampled to fit; 16-bit, float, palette and alpha conversions
only ever see the preview-sized picture. Its estimate adds what the reduction holds beside the full-size image,
so an image whose full-size view would not fit is refused with the reason, never decoded.
bench/decode_memory.py measures the peak per format, for classification, thumbnails and full-size previews.
"""
from __future__ import annotations

import contextlib
import ctypes
import io
import threading
import warnings
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from common.domain.errors import PermanentImageError, TruncatedImage
from common.domain.jobs import MAX_IMAGE_BYTES

INPUT_SIZE = 224
# A 60-megapixel photo is legitimate; a header declaring gigapixels is a decompression bomb.
MAX_PIXELS = 120_000_000
# What one decode may hold, estimated before decoding (see the module's docstring).
MAX_DECODED_BYTES = 160 * 2**20
# Decodes holding more than this wait for each other: one at a time per process.
LARGE_DECODE_BYTES = 24 * 2**20
# A real photo needs far more than a byte per thousand pixels; a tiny file declaring a huge image is a bomb or junk.
MIN_BYTES_PER_KILOPIXEL = 1.0
MAX_BYTES = MAX_IMAGE_BYTES
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# What photo libraries hold. Everything else (EPS and PDF through Ghostscript, PSD, icons, …) is refused unread.
# (Multi-picture JPEGs, MPO, open through the JPEG plugin.)
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "HEIF", "PPM")
REDUCED_ON_LOAD = ("JPEG", "MPO")
# Full-size images a decode holds at once, where the library decodes into its own buffer that Pillow copies (and,
# for WebP, converts from RGBA): measured by bench/decode_memory.py.
COPIES_ON_LOAD = {"WEBP": 4, "HEIF": 2}
# The gap Image.resize keeps between a reduced image and the target (the project's preprocessing since issue 4).
REDUCING_GAP = 3.0
ALPHA_MODES = ("RGBA", "LA", "PA")
HIGH_RANGE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")

try:  # iPhone photos (HEIC/HEIF)
    from pillow_heif import register_heif_opener
except ImportError:  # pragma: no cover - pinned in constraints.txt; without it HEIC is "not a recognised format"
    pass
else:
    register_heif_opener()
Image.init()
FORMATS = tuple(name for name in ACCEPTED_FORMATS if name in Image.OPEN)

_large_decodes = threading.BoundedSemaphore(1)
try:
    _libc: ctypes.CDLL | None = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: nothing to trim
    _libc = None


def bytes_per_pixel(mode: str) -> int:
    """What Pillow stores a pixel of this mode in: 1 byte for L, P and 1, 2 for 16-bit, 4 for everything else."""
    return 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4


def _progressive_coefficients(image: Image.Image, full_size: tuple[int, int]) -> int:
    """A progressive JPEG is decoded from all of its DCT coefficients, held at full size whatever the scale:
    2 bytes per sample of each component, at its sampling."""
    layers = getattr(image, "layer", None) or []
    if not image.info.get("progressive") or not layers:
        return 0
    h_max = max(layer[1] for layer in layers)
    v_max = max(layer[2] for layer in layers)
    width, height = full_size
    return sum(2 * width * height * layer[1] * layer[2] // (h_max * v_max) for layer in layers)


def decoded_bytes(image: Image.Image, full_size: tuple[int, int] | None = None) -> int:
    """What decoding will hold at its peak, before it starts (full_size: the photo's before a JPEG draft)."""
    width, height = image.size
    copies = COPIES_ON_LOAD.get(image.format or "", 1)
    if image.mode in ALPHA_MODES:
        copies += 1  # reducing premultiplies the alpha: a full-size copy in RGBa
    return width * height * bytes_per_pixel(image.mode) * copies + _progressive_coefficients(image,
                                                                                             full_size or image.size)


def release_memory() -> None:
    """Give freed memory back to the system, not to malloc's heaps (one per thread: a large image freed in a
    request's thread would otherwise stay in its arena)."""
    if _libc is not None:
        _libc.malloc_trim(0)


@contextlib.contextmanager
def _decode_slot(estimate: int) -> Iterator[None]:
    if estimate < LARGE_DECODE_BYTES:
        yield
        return
    with _large_decodes:
        try:
            yield
        finally:
            release_memory()  # the freed full-size image


def _reduced(image: Image.Image, size: int) -> Image.Image:
    """The image divided by the integer factor Image.resize would reduce it by for this target (so the model sees
    what it always saw), the full-size image left to be freed."""
    factor_x = int(image.width / size / REDUCING_GAP) or 1
    factor_y = int(image.height / size / REDUCING_GAP) or 1
    return _reduced_by(image, factor_x, factor_y)


def _reduced_by(image: Image.Image, factor_x: int, factor_y: int) -> Image.Image:
    """Averaged over factor_x × factor_y blocks (nearest for palette and 1-bit images, whose values are indices)."""
    if factor_x == factor_y == 1:
        return image
    if image.mode in ("1", "P") or image.mode.startswith("I;16"):  # modes reduce() does not take
        box = (image.width // factor_x * factor_x, image.height // factor_y * factor_y)
        resample = Image.Resampling.NEAREST if image.mode in ("1", "P") else Image.Resampling.BOX
        return image.resize((box[0] // factor_x, box[1] // factor_y), resample, box=(0, 0, *box))
    return image.reduce((factor_x, factor_y))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in HIGH_RANGE_MODES:
        # 16-bit and float images: scale the real range to 8 bits instead of letting convert() clip to white.
        # In place, on a copy of its own (a float image's array is a read-only view): one float copy, not three.
        array = np.array(image, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        array -= low
        array *= 255.0 / (high - low) if high > low else 0.0
        image = Image.fromarray(array.astype(np.uint8), mode="L")
    if image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def _fitted(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """The size scaled down (never up) so that its longer side is at most `longest`, keeping its proportions."""
    width, height = size
    if max(width, height) <= longest:
        return width, height
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _conversion_bytes(mode: str) -> int:
    """Per preview pixel, what _to_rgb and the orientation hold beside the picture: a float copy scaled in place,
    the 8-bit result and its image (16-bit, float); the RGBA copy, white background and composite (alpha,
    palette); the RGB picture (Pillow stores it in 4 bytes)."""
    if mode in HIGH_RANGE_MODES:
        return 4 + 1 + 1 + 4
    if mode in ALPHA_MODES or mode == "P":
        return 4 * 4
    return 4


def _preview_bytes(image: Image.Image, longest: int, full_size: tuple[int, int], factor: int) -> int:
    """What a preview holds at its peak, phase by phase: the decode; the reduction, made while the decoded image is
    still held; the resampling to fit (its intermediate is as tall as its source); the conversion to RGB at the
    preview's size. Alpha images are premultiplied into a copy by both reduce() and resize()."""
    width, height = image.size
    per_pixel = bytes_per_pixel(image.mode)
    alpha = 2 if image.mode in ALPHA_MODES else 1
    held = width * height * per_pixel
    reduced_w, reduced_h = -(-width // factor), -(-height // factor)
    reduced = reduced_w * reduced_h * per_pixel if factor > 1 else 0
    if reduced and image.mode.startswith("I;16"):  # reduced by a box resize: its intermediate is full height
        reduced += reduced_w * height * per_pixel
    target_w, target_h = _fitted((reduced_w, reduced_h), longest)
    resampled = 0
    if (target_w, target_h) != (reduced_w, reduced_h):
        resampled = ((reduced or held) + (target_w * reduced_h + target_w * target_h) * per_pixel) * alpha
    converted = target_w * target_h * (per_pixel + _conversion_bytes(image.mode))
    return max(decoded_bytes(image, full_size), (held + reduced) * alpha, resampled, converted)


def preview_plan(image: Image.Image, longest: int, full_size: tuple[int, int]) -> tuple[int, int]:
    """(integer factor to reduce the decoded image by, bytes held at the peak) for a preview at most `longest` px:
    the largest factor that keeps it at least `longest`, then resampled to fit; when that does not fit the budget,
    the factor that reduces it straight to at most `longest` (no resampling buffers; a little smaller)."""
    side = max(image.size)
    plans = dict.fromkeys((max(1, side // longest), max(1, -(-side // longest))))
    held = 0
    for factor in plans:
        held = _preview_bytes(image, longest, full_size, factor)
        if held <= MAX_DECODED_BYTES:
            return factor, held
    return factor, held


def _resampled(image: Image.Image, longest: int) -> Image.Image:
    """Fitted into longest × longest (Lanczos; palette and 1-bit images nearest, as Pillow does for indices)."""
    target = _fitted(image.size, longest)
    return image if target == image.size else image.resize(target, Image.Resampling.LANCZOS)


def _opened(data: bytes, size: int, preview: bool = False) -> tuple[Image.Image, int, int]:
    """Opened and checked, not yet decoded (JPEGs set to decode reduced), what its decode will hold, and for a
    preview (at most `size` px) the factor to reduce the decoded image by."""
    if not data:
        raise PermanentImageError("empty file")
    if len(data) > MAX_BYTES:
        raise PermanentImageError(f"file larger than {MAX_BYTES} bytes")
    image = Image.open(io.BytesIO(data), formats=FORMATS)
    width, height = image.size
    pixels = width * height
    if pixels > MAX_PIXELS:
        raise PermanentImageError(f"image declares {width}x{height} pixels, above the {MAX_PIXELS} limit")
    if image.format in REDUCED_ON_LOAD:
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: most of the decode cost (and memory) for big photos. A
        # preview asks for its own proportions, so a 6000x4000 photo's 2048 px view decodes at half size.
        box = _fitted((width, height), size) if preview else (size, size)
        image.draft(image.mode if image.mode in ("L", "RGB", "CMYK") else "RGB", box)
    factor, estimate = preview_plan(image, size, (width, height)) if preview else \
        (1, decoded_bytes(image, (width, height)))
    if estimate > MAX_DECODED_BYTES:
        what = f"show at {size} px" if preview else "decode"
        raise PermanentImageError(f"{image.format} image of {width}x{height} pixels ({image.mode}) would take "
                                  f"{estimate // 2**20} MB to {what}, above the {MAX_DECODED_BYTES // 2**20} MB "
                                  "budget per image: save it smaller (or as a baseline JPEG)")
    if pixels > 1_000_000 and len(data) < pixels / 1000 * MIN_BYTES_PER_KILOPIXEL:
        raise PermanentImageError(f"image declares {width}x{height} pixels in only {len(data)} bytes: "
                                  "a corrupt header or a decompression bomb")
    return image, estimate, factor


@contextlib.contextmanager
def _decoding_errors() -> Iterator[None]:
    """Every way a decode fails, as a PermanentImageError saying why (TruncatedImage for a file that ends too
    soon); a bomb warning is an error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except PermanentImageError:
        raise
    except UnidentifiedImageError:
        raise PermanentImageError("not a recognised image format (accepted: " + ", ".join(FORMATS) + ")") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PermanentImageError(f"decompression bomb: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        if "truncated" in str(exc) or isinstance(exc, EOFError):
            raise TruncatedImage(f"cannot decode image: {exc}") from None
        raise PermanentImageError(f"cannot decode image: {exc}") from None


def load_reduced(data: bytes, size: int) -> Image.Image:
    """An oriented RGB image at least about REDUCING_GAP × size on each side (or the photo's own size), decoded
    within the memory budget. Raises PermanentImageError (TruncatedImage for a file that ends too soon)."""
    with _decoding_errors():
        image, estimate, _ = _opened(data, size)
        with _decode_slot(estimate):
            image.load()
            image = _reduced(image, size)
        return _to_rgb(ImageOps.exif_transpose(image))


def load_preview(data: bytes, longest: int) -> Image.Image:
    """An oriented RGB picture at most `longest` px on its longer side, made within the memory budget from the
    open file to the final picture: one large preview (or decode) at a time per process, the full-size image
    freed as soon as it is reduced. Raises PermanentImageError saying why it cannot be made."""
    with _decoding_errors():
        image, estimate, factor = _opened(data, longest, preview=True)
        with _decode_slot(estimate):
            image.load()
            image = _reduced_by(image, factor, factor)
            image = _resampled(image, longest)
            return _to_rgb(ImageOps.exif_transpose(image))


def decode_image(data: bytes, size: int = INPUT_SIZE) -> np.ndarray:
    """Decode, orient, convert to RGB and resize to size×size; returns uint8 (size, size, 3)."""
    image = load_reduced(data, size)
    try:
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
    except (OSError, ValueError, MemoryError) as exc:
        raise PermanentImageError(f"cannot decode image: {exc}") from None
    return np.asarray(image, dtype=np.uint8)
