"""Small previews for the results page: a photo decoded within the memory budget and reduced on load, oriented,
at most 160 px, as JPEG."""
from __future__ import annotations

import io

from common.domain.errors import PermanentImageError

THUMBNAIL_SIZE = 160  # 2x the grid's cell height on a phone; ~5 KB as JPEG
FULL_SIZE = 2048  # "the full photo" on a page: a screen's worth, within the decode budget


def make_full_photo(data: bytes) -> bytes | None:
    """The photo to look at, as JPEG at most FULL_SIZE px: decoded and encoded again, so a page never serves a
    file's own bytes (which could be anything a browser would run)."""
    return make_thumbnail(data, size=FULL_SIZE, quality=85)


def make_thumbnail(data: bytes, box: tuple[float, float, float, float] | None = None,
                   size: int = THUMBNAIL_SIZE, quality: int = 65) -> bytes | None:
    """JPEG bytes of a preview, with the detector's box drawn (fractions of the photo), or None when the photo
    cannot be shown (the page says "no preview")."""
    from PIL import ImageDraw

    from common.inference.decoding import load_reduced

    try:
        image = load_reduced(data, size)
        image.thumbnail((size, size))
        if box is not None:
            w, h = image.size
            ImageDraw.Draw(image).rectangle([box[0] * w, box[1] * h, box[2] * w, box[3] * h], outline=(0, 200, 80),
                                            width=max(2, w // 60))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=quality, optimize=True)
        return out.getvalue()
    except (OSError, ValueError, MemoryError, PermanentImageError):
        return None
