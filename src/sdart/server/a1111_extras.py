"""A1111's Extras API under /sdapi/v1: upscaling pictures, and the upscaler and latent-mode lists.

Fields, defaults, bounds and response shapes follow A1111's modules/api/models.py (ExtrasBaseRequest,
ExtrasSingleImageResponse, ExtrasBatchImagesResponse, UpscalerItem, LatentUpscalerModeItem). The upscale itself
is sdart.upscalers.extras, the step `sdart upscale` runs too; it takes its turn on the engine's worker, as A1111
runs extras under its queue lock, so an upscale and a generation never share the device at once.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from sdart.images.infotext import png_info
from sdart.images.initimage import open_init_image
from sdart.server.a1111_payload import read_picture
from sdart.server.admission import Server
from sdart.server.errors import FieldErrors
from sdart.server.native import get_server
from sdart.upscalers.extras import ExtrasUpscale, Runner, extras_upscale, png_texts, postprocess_line
from sdart.upscalers.files import UpscalerError, list_upscaler_files
from sdart.upscalers.names import LATENT_UPSCALE_MODES, PIXEL_UPSCALERS

router = APIRouter(prefix="/sdapi/v1", tags=["A1111-compatible"])
ServerDep = Annotated[Server, Depends(get_server)]
A1111_DEFAULT_SCALE = 4  # UpscalerData's scale, which A1111 lists for None, Lanczos and Nearest
# ExtrasUpscale field → the A1111 field that sets it.
A1111_FIELDS = {"upscaler_1": "upscaler_1", "upscaler_2": "upscaler_2", "scale": "upscaling_resize",
                "width": "upscaling_resize_w"}


class ExtrasRequest(BaseModel):
    """A1111's ExtrasBaseRequest: same names, defaults and bounds."""

    model_config = ConfigDict(extra="ignore")

    resize_mode: Literal[0, 1] = 0  # 0: by upscaling_resize; 1: to upscaling_resize_w × upscaling_resize_h
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(0, ge=0, le=1, allow_inf_nan=False)
    codeformer_visibility: float = Field(0, ge=0, le=1, allow_inf_nan=False)
    codeformer_weight: float = Field(0, ge=0, le=1, allow_inf_nan=False)
    upscaling_resize: float = Field(2, gt=0, allow_inf_nan=False)
    upscaling_resize_w: int = Field(512, ge=1)
    upscaling_resize_h: int = Field(512, ge=1)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1, allow_inf_nan=False)
    upscale_first: bool = False

    def step(self) -> ExtrasUpscale:
        return ExtrasUpscale(upscaler_1=self.upscaler_1, upscaler_2=self.upscaler_2,
                             upscaler_2_visibility=self.extras_upscaler_2_visibility, resize_mode=self.resize_mode,
                             scale=self.upscaling_resize, width=self.upscaling_resize_w,
                             height=self.upscaling_resize_h, crop=self.upscaling_crop)


class SingleImageRequest(ExtrasRequest):
    image: str = ""


class FileData(BaseModel):
    data: str
    name: str = ""


class BatchImagesRequest(ExtrasRequest):
    imageList: list[FileData]  # noqa: N815 (A1111's name)


@router.post("/extra-single-image", summary="A1111 extras: upscale one picture")
async def extra_single_image(server: ServerDep, payload: Annotated[Any, Body()] = None) -> dict[str, Any]:
    request = _parse(SingleImageRequest, payload)
    picture = _open(request.image, ("body", "image"))
    images, line = await run_in_threadpool(_upscale_all, server, request, [picture])
    return {"html_info": _html(line), "image": images[0]}


@router.post("/extra-batch-images", summary="A1111 extras: upscale every picture of imageList")
async def extra_batch_images(server: ServerDep, payload: Annotated[Any, Body()] = None) -> dict[str, Any]:
    request = _parse(BatchImagesRequest, payload)
    pictures = [_open(item.data, ("body", "imageList", str(i), "data")) for i, item in enumerate(request.imageList)]
    images, line = await run_in_threadpool(_upscale_all, server, request, pictures)
    return {"html_info": _html(line), "images": images}


@router.get("/upscalers", summary="A1111 upscaler list: None, Lanczos, Nearest, then the models in upscaler_dir")
def upscalers(server: ServerDep) -> list[dict[str, Any]]:
    """`model_path` is the file's path inside the upscalers folder (the server shows clients none of its own paths);
    a model's `scale` is the factor its name states, or null (the true one is known once it loads)."""
    folder = server.settings.upscaler_dir
    items = [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": A1111_DEFAULT_SCALE}
             for name in PIXEL_UPSCALERS]
    try:
        files = list_upscaler_files(folder)
    except UpscalerError as exc:  # the folder went away after the server started
        raise FieldErrors.one(("query",), None, f"the upscaler list cannot be read: {exc}", status=503) from None
    for file in files:
        items.append({"name": file.name, "model_name": file.path.stem, "model_url": None,
                      "model_path": file.path.relative_to(folder.expanduser().absolute()).as_posix() if folder else None,
                      "scale": file.scale_in_name})
    return items


@router.get("/latent-upscale-modes", summary="A1111 latent upscale modes (hires fix)")
def latent_upscale_modes() -> list[dict[str, str]]:
    return [{"name": name} for name in LATENT_UPSCALE_MODES]


def _parse(model: type[ExtrasRequest], payload: Any) -> Any:
    if not isinstance(payload, dict):
        raise FieldErrors.one(("body",), payload, "must be a JSON object of extras fields")
    try:
        request = model.model_validate(payload)
    except ValidationError as exc:
        raise FieldErrors([(("body", *map(str, e["loc"])), e.get("input"), e["msg"]) for e in exc.errors()]) from None
    for name in ("gfpgan_visibility", "codeformer_visibility"):
        if getattr(request, name) > 0:
            raise FieldErrors.one(("body", name), getattr(request, name),
                                  "sdart has no face restoration; send 0 (the upscale runs without it)")
    return request


def _open(value: Any, location: tuple[str, ...]) -> Image.Image:
    """A base64 picture (bare or a data: URL) as img2img opens one: upright RGB (A1111's extras work on RGB), its
    PNG texts kept; FieldErrors name `location`."""
    try:
        return open_init_image(read_picture(value, location))
    except ValueError as exc:  # its header reads but its pixels don't
        raise FieldErrors.one(location, value, str(exc)) from None


def _upscale_all(server: Server, request: ExtrasRequest, pictures: list[Image.Image]) -> tuple[list[str], str]:
    """Every picture upscaled on the engine's turn: base64 PNGs with their texts, and the last `Postprocess` line."""
    settings = server.settings
    # settings.device, not the engine's: behind Ray Serve the engine's device is a model replica's
    runner = Runner.of_settings(settings)
    step = request.step()
    try:
        results = server.worker.with_engine(lambda engine: [extras_upscale(p, step, runner) for p in pictures])
    except UpscalerError as exc:
        field = A1111_FIELDS.get(exc.field or "", "body")
        raise FieldErrors.one(("body", field), getattr(request, field, None), _no_paths(str(exc), settings)) from None
    encoded = [_png_b64(image, png_texts(source.info, info)) for source, (image, info) in zip(pictures, results)]
    return encoded, postprocess_line(results[-1][1]) if results else ""


def _no_paths(message: str, settings: Any) -> str:
    """`message` with the upscalers folder's path written `upscaler_dir`: clients see no server paths."""
    if settings.upscaler_dir is None:
        return message
    return message.replace(str(settings.upscaler_dir.expanduser().absolute()), "upscaler_dir")


def _png_b64(image: Image.Image, texts: dict[str, str]) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_info(None, texts) if texts else None)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _html(line: str) -> str:
    """A1111's `plaintext_to_html`."""
    return "<p>" + "<br>\n".join(html.escape(part) for part in line.split("\n")) + "</p>"
