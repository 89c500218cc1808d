"""PNG info for a form (native API): a picture's A1111 parameters, the job fields they set on this server, and
the keys this server would not apply (A1111's "Send to txt2img", without dropping anything unsaid)."""

from __future__ import annotations

import io
from typing import Any

from fastapi import APIRouter
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from sdart.images.infotext import PNG_KEY, parse_infotext
from sdart.images.initimage import decode_base64_image
from sdart.server.errors import FieldErrors
from sdart.server.native import ServerDep

router = APIRouter(prefix="/api/v1")


class PngInfoRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="the PNG as a base64 data: URL (or bare base64)")


@router.post("/png-info", summary="A picture's generation parameters, as job fields for this server")
def png_info(body: PngInfoRequest, server: ServerDep) -> dict[str, Any]:
    """{"infotext", "parameters" (every key as written), "request" (job fields they set), "not_applied"
    (key: value this server would not use), "other_text" (other PNG text chunks)}. A model is applied when this
    server has it (by name)."""
    try:
        raw = decode_base64_image(body.image)
    except ValueError as exc:
        raise FieldErrors.one(("body", "image"), body.image, str(exc)) from None
    with Image.open(io.BytesIO(raw)) as image:
        chunks = {key: value for key, value in image.info.items() if isinstance(value, str)}
    text = chunks.pop(PNG_KEY, None)
    if not text:
        return {"infotext": None, "parameters": {}, "request": {}, "not_applied": {}, "other_text": chunks}
    parsed = parse_infotext(text)
    request = parsed.request_fields()
    not_applied = parsed.unapplied()
    if "Model" in not_applied and (entry := server.catalog.find(not_applied["Model"])) is not None:
        request["model"] = entry.name
        del not_applied["Model"]
    return {"infotext": text,
            "parameters": {"Prompt": parsed.prompt, "Negative prompt": parsed.negative_prompt, **parsed.params},
            "request": request, "not_applied": not_applied, "other_text": chunks}
