"""Turn untrusted image bytes into a model-sized RGB array, or a PermanentImageError saying why not."""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from common.domain.errors import PermanentImageError

INPUT_SIZE = 224
# A 60-megapixel photo is legitimate; a header declaring gigapixels is a decompression bomb.
MAX_PIXELS = 120_000_000
MAX_BYTES = 64 * 1024 * 1024
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


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
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise PermanentImageError(f"image declares {width}x{height} pixels, above the {MAX_PIXELS} limit")
            if image.format == "JPEG":
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
        raise PermanentImageError("not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PermanentImageError(f"decompression bomb: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise PermanentImageError(f"cannot decode image: {exc}") from None
