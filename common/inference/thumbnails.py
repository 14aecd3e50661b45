"""Small previews for the results page: a photo reduced on load (JPEG draft), oriented, at most 160 px, as JPEG."""
from __future__ import annotations

import io

from common.domain.errors import PermanentImageError
from common.inference.decoding import FORMATS, MAX_FULL_DECODE_PIXELS, REDUCED_ON_LOAD

THUMBNAIL_SIZE = 160  # 2x the grid's cell height on a phone; ~5 KB as JPEG


def make_thumbnail(data: bytes, size: int = THUMBNAIL_SIZE) -> bytes | None:
    """JPEG bytes of a preview, or None when the photo cannot be shown (the page says "no preview")."""
    from PIL import Image, ImageOps

    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
        if image.format not in REDUCED_ON_LOAD and image.width * image.height > MAX_FULL_DECODE_PIXELS:
            return None
        if image.format in REDUCED_ON_LOAD:
            image.draft("RGB", (size, size))
        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((size, size))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=65, optimize=True)
        return out.getvalue()
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, PermanentImageError, Image.DecompressionBombError):
        return None
