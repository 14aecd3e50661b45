"""Turn untrusted image bytes into a model-sized RGB array, or a PermanentImageError saying why not."""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from common.domain.errors import PermanentImageError
from common.domain.jobs import MAX_IMAGE_BYTES

INPUT_SIZE = 224
# A 60-megapixel photo is legitimate; a header declaring gigapixels is a decompression bomb. JPEGs decode reduced
# (1/8 scale, see draft below), so their memory stays small up to the limit; other formats decode whole, at up to
# 4 bytes a pixel, so they get a smaller budget: at most 160 MB per image in flight.
MAX_PIXELS = 120_000_000
MAX_FULL_DECODE_PIXELS = 40_000_000
# A real photo needs far more than a byte per thousand pixels; a tiny file declaring a huge image is a bomb or junk.
MIN_BYTES_PER_KILOPIXEL = 1.0
MAX_BYTES = MAX_IMAGE_BYTES
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# What photo libraries hold. Everything else (EPS and PDF through Ghostscript, PSD, icons, …) is refused unread.
# (Multi-picture JPEGs, MPO, open through the JPEG plugin.)
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "HEIF", "PPM")
REDUCED_ON_LOAD = ("JPEG", "MPO")

try:  # iPhone photos (HEIC/HEIF)
    from pillow_heif import register_heif_opener
except ImportError:  # pragma: no cover - pinned in constraints.txt; without it HEIC is "not a recognised format"
    pass
else:
    register_heif_opener()
Image.init()
FORMATS = tuple(name for name in ACCEPTED_FORMATS if name in Image.OPEN)


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


def decode_image(data: bytes, size: int = INPUT_SIZE) -> np.ndarray:
    """Decode, orient, convert to RGB and resize to size×size; returns uint8 (size, size, 3)."""
    if not data:
        raise PermanentImageError("empty file")
    if len(data) > MAX_BYTES:
        raise PermanentImageError(f"file larger than {MAX_BYTES} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            pixels = width * height
            if pixels > MAX_PIXELS:
                raise PermanentImageError(f"image declares {width}x{height} pixels, above the {MAX_PIXELS} limit")
            if image.format not in REDUCED_ON_LOAD and pixels > MAX_FULL_DECODE_PIXELS:
                raise PermanentImageError(f"{image.format} image of {width}x{height} pixels: above the "
                                          f"{MAX_FULL_DECODE_PIXELS} pixels decoded whole (convert it to JPEG)")
            if pixels > 1_000_000 and len(data) < pixels / 1000 * MIN_BYTES_PER_KILOPIXEL:
                raise PermanentImageError(f"image declares {width}x{height} pixels in only {len(data)} bytes: "
                                          "a corrupt header or a decompression bomb")
            if image.format in REDUCED_ON_LOAD:
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: most of the decode cost for big photos.
                image.draft("RGB", (size, size))
            image.load()
            image = ImageOps.exif_transpose(image)
            image = _to_rgb(image)
            image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
            return np.asarray(image, dtype=np.uint8)
    except PermanentImageError:
        raise
    except UnidentifiedImageError:
        raise PermanentImageError("not a recognised image format (accepted: " + ", ".join(FORMATS) + ")") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PermanentImageError(f"decompression bomb: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise PermanentImageError(f"cannot decode image: {exc}") from None
