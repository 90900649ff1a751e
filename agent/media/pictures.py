"""Pictures made safe for the model: checked against a pixel cap before decoding (a decompression bomb is
refused from its header), decoded with Pillow, turned upright, scaled to IMAGE_MAX_EDGE on the long side
and encoded again, which drops EXIF (GPS, the camera's serial) and anything appended to the file."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from PIL import Image, ImageOps

from agent.media.problems import MediaProblem, MediaReason
from agent.media.sniff import sniff

_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}
# Pillow's own bomb check (a warning past 89 MP, an error past 179 MP, both at open) is replaced by ours:
# IMAGE_MAX_PIXELS, read from the header before any pixel is decoded, with the person told why.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class Picture:
    """One picture, ready for an OpenAI image content part."""

    data_url: str  # data:image/jpeg;base64,... (PNG for PNG screenshots and pictures with transparency)
    width: int  # as sent to the model
    height: int
    label: str  # what was sent: "PNG", "JPEG", "WebP", "GIF"
    original_width: int
    original_height: int

    @property
    def tokens(self) -> int:
        """What the picture costs in the model's context, by OpenAI's rule for detailed images (85 plus
        170 per 512-pixel tile after scaling to fit 2048 and then 768 on the short side): an estimate
        for other models too, which count pictures in tiles or patches of a similar size."""
        scale = min(1.0, 2048 / max(self.width, self.height))
        width, height = self.width * scale, self.height * scale
        scale = min(1.0, 768 / min(width, height))
        tiles = -(-int(width * scale) // 512) * -(-int(height * scale) // 512)
        return 85 + 170 * tiles

    def content_part(self) -> dict[str, object]:
        """The OpenAI (and Azure OpenAI) wire format for an image in a user message."""
        return {"type": "image_url", "image_url": {"url": self.data_url}}


def prepare_picture(data: bytes, *, max_edge: int, max_pixels: int) -> Picture:
    """Check, decode, scale and re-encode one picture. CPU-bound: run it off the event loop."""
    kind = sniff(data)
    if not kind.is_picture:
        raise MediaProblem(MediaReason.UNSUPPORTED, f"not a picture ({kind.kind})", type_label=kind.label)
    try:
        opened = Image.open(io.BytesIO(data), formats=list(_FORMATS))
        width, height = opened.size
        if width * height > max_pixels:  # from the header, before a single pixel is decoded
            raise MediaProblem(MediaReason.TOO_MANY_PIXELS, f"{width}x{height} is over {max_pixels} pixels")
        if opened.format == "JPEG":
            opened.draft("RGB", (max_edge, max_edge))  # decode at 1/2, 1/4 or 1/8 scale: much less work
        opened.load()
        image = ImageOps.exif_transpose(opened)  # upright as the sender saw it, before EXIF is dropped
        image.thumbnail((max_edge, max_edge), Image.Resampling.LANCZOS)  # never enlarges
        transparent = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        lossless = kind.kind == "png" or transparent
        image = image.convert("RGBA" if transparent else "RGB")
        image.info = {}  # no EXIF, comment, ICC profile or text chunk is written again
        out = io.BytesIO()
        if lossless:  # screenshots stay sharp (small text), transparency stays
            image.save(out, "PNG", optimize=False)
            mime = "image/png"
        else:
            image.save(out, "JPEG", quality=85)
            mime = "image/jpeg"
    except MediaProblem:
        raise
    except Exception as exc:  # whatever a damaged or hostile file makes a decoder raise
        detail = f"{kind.label} does not decode: {type(exc).__name__}"
        raise MediaProblem(MediaReason.BROKEN, detail) from None
    return Picture(
        data_url=f"data:{mime};base64,{base64.b64encode(out.getvalue()).decode('ascii')}",
        width=image.width,
        height=image.height,
        label=kind.label,
        original_width=width,
        original_height=height,
    )
