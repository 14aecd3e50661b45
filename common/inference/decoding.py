"""Turn untrusted image bytes into a model-sized RGB array, or a PermanentImageError saying why not.

Memory is bounded per image, for every accepted pixel format: before anything is decoded, what the decode will
hold (pixels × the bytes a pixel takes in its mode, more for formats whose library decodes into a buffer of its
own that Pillow then copies) is checked against MAX_DECODED_BYTES. After the decode the image is reduced by an
integer factor at once (Image.reduce, or a box filter for modes it does not take) and the full-size image freed:
orientation, 16-bit and float scaling, transparency and colour conversion all work on the reduced image. JPEGs
decode reduced in the first place (libjpeg scales by 1/2, 1/4 or 1/8). At most one large decode runs at a time
in a process, so several workers or served previews never hold several budgets at once.
bench/decode_memory.py measures the peak per format.
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
    if image.mode in ("RGBA", "LA", "PA"):
        copies += 1  # reducing premultiplies the alpha: a full-size copy in RGBa
    return width * height * bytes_per_pixel(image.mode) * copies + _progressive_coefficients(image,
                                                                                             full_size or image.size)


@contextlib.contextmanager
def _decode_slot(estimate: int) -> Iterator[None]:
    if estimate < LARGE_DECODE_BYTES:
        yield
        return
    with _large_decodes:
        try:
            yield
        finally:
            if _libc is not None:  # give the freed full-size image back to the system, not to malloc's heap
                _libc.malloc_trim(0)


def _reduced(image: Image.Image, size: int) -> Image.Image:
    """The image divided by the integer factor Image.resize would reduce it by for this target (so the model sees
    what it always saw), the full-size image left to be freed."""
    factor_x = int(image.width / size / REDUCING_GAP) or 1
    factor_y = int(image.height / size / REDUCING_GAP) or 1
    if factor_x == factor_y == 1:
        return image
    if image.mode in ("1", "P") or image.mode.startswith("I;16"):  # modes reduce() does not take
        box = (image.width // factor_x * factor_x, image.height // factor_y * factor_y)
        resample = Image.Resampling.NEAREST if image.mode in ("1", "P") else Image.Resampling.BOX
        return image.resize((box[0] // factor_x, box[1] // factor_y), resample, box=(0, 0, *box))
    return image.reduce((factor_x, factor_y))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float images: scale the real range to 8 bits instead of letting convert() clip to white.
        array = np.asarray(image, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def _opened(data: bytes, size: int) -> tuple[Image.Image, int]:
    """Opened and checked, not yet decoded (JPEGs set to decode reduced), and what its decode will hold."""
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
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: most of the decode cost (and memory) for big photos.
        image.draft(image.mode if image.mode in ("L", "RGB", "CMYK") else "RGB", (size, size))
    estimate = decoded_bytes(image, (width, height))
    if estimate > MAX_DECODED_BYTES:
        raise PermanentImageError(f"{image.format} image of {width}x{height} pixels ({image.mode}) would take "
                                  f"{estimate // 2**20} MB to decode, above the {MAX_DECODED_BYTES // 2**20} MB "
                                  "budget per image: save it smaller (or as a baseline JPEG)")
    if pixels > 1_000_000 and len(data) < pixels / 1000 * MIN_BYTES_PER_KILOPIXEL:
        raise PermanentImageError(f"image declares {width}x{height} pixels in only {len(data)} bytes: "
                                  "a corrupt header or a decompression bomb")
    return image, estimate


def load_reduced(data: bytes, size: int) -> Image.Image:
    """An oriented RGB image at least about REDUCING_GAP × size on each side (or the photo's own size), decoded
    within the memory budget. Raises PermanentImageError (TruncatedImage for a file that ends too soon)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image, estimate = _opened(data, size)
            with _decode_slot(estimate):
                image.load()
                image = _reduced(image, size)
            return _to_rgb(ImageOps.exif_transpose(image))
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


def decode_image(data: bytes, size: int = INPUT_SIZE) -> np.ndarray:
    """Decode, orient, convert to RGB and resize to size×size; returns uint8 (size, size, 3)."""
    image = load_reduced(data, size)
    try:
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
    except (OSError, ValueError, MemoryError) as exc:
        raise PermanentImageError(f"cannot decode image: {exc}") from None
    return np.asarray(image, dtype=np.uint8)
