"""Previews for the results page, as JPEG: small ones (at most 160 px, the detector's box drawn) and "the full
photo" (at most 2048 px). Both are made by decoding.load_preview: reduced while decoding, under the decode budget
and its one-at-a-time rule, so a page's requests never hold more than one budget at once (docs/reliability.md,
"Threat model: bounded work")."""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

from common.domain.errors import InvalidRequest, PermanentImageError

THUMBNAIL_SIZE = 160  # 2x the grid's cell height on a phone; ~5 KB as JPEG
FULL_SIZE = 2048  # "the full photo" on a page: a screen's worth, within the decode budget

if TYPE_CHECKING:
    from PIL import Image


def make_full_photo(data: bytes) -> bytes:
    """The photo to look at, as JPEG at most FULL_SIZE px: decoded and encoded again, so a page never serves a
    file's own bytes (which could be anything a browser would run). A photo that cannot be shown this large is an
    InvalidRequest naming `size` and why (its small preview, reduced further, may still be shown)."""
    from common.inference.decoding import load_preview, release_memory

    try:
        return _jpeg(load_preview(data, FULL_SIZE), quality=85)
    except (OSError, ValueError, MemoryError) as exc:
        reason = f"cannot encode it: {exc}"
    except PermanentImageError as exc:
        reason = exc.reason
    finally:
        release_memory()  # the 2048 px picture and the encoder's buffers, freed in this request's thread
    raise InvalidRequest(f"no full-size view of this photo: {reason}", field="size")


def make_thumbnail(data: bytes, box: tuple[float, float, float, float] | None = None,
                   size: int = THUMBNAIL_SIZE, quality: int = 65) -> bytes | None:
    """JPEG bytes of a preview, with the detector's box drawn (fractions of the photo), or None when the photo
    cannot be shown (the page says "no preview")."""
    from PIL import ImageDraw

    from common.inference.decoding import load_preview

    try:
        image = load_preview(data, size)
        if box is not None:
            w, h = image.size
            ImageDraw.Draw(image).rectangle([box[0] * w, box[1] * h, box[2] * w, box[3] * h], outline=(0, 200, 80),
                                            width=max(2, w // 60))
        return _jpeg(image, quality)
    except (OSError, ValueError, MemoryError, PermanentImageError):
        return None


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()
