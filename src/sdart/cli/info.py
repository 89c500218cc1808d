"""Commands that read rather than generate: `sdart info`, `samplers`, `models`, `version`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sdart.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, fail, out


def info(
    image: Path = typer.Argument(..., help="A PNG made by sdart, A1111 or another tool that writes `parameters`."),
    as_json: bool = typer.Option(False, "--json", help="Print the parsed fields as JSON."),
) -> None:
    """Print the generation parameters stored in an image."""
    from sdart.images.infotext import parse_infotext, read_infotext

    if not image.is_file():
        raise fail(f"image = {str(image)!r}: no such file", EXIT_BAD_INPUT)
    try:
        text = read_infotext(image)
    except OSError as exc:
        raise fail(f"image = {str(image)!r}: not a readable image ({exc})", EXIT_BAD_INPUT) from None
    if not text:
        raise fail(f"image = {str(image)!r}: carries no generation parameters", EXIT_FAILED)
    if not as_json:
        print(text)
        return
    parsed = parse_infotext(text)
    print(json.dumps({"prompt": parsed.prompt, "negative_prompt": parsed.negative_prompt,
                      "parameters": parsed.params, "request": parsed.request_fields()}, indent=2, ensure_ascii=False))



def samplers() -> None:
    """List the sampler names (A1111 spelling), what "Automatic" means for each, and the schedule types."""
    from sdart.sampling.samplers import SAMPLERS, SCHEDULE_TYPES

    out.print(f"{'sampler':<19} {'Automatic':<15} aliases", highlight=False)
    for s in SAMPLERS:
        automatic = s.automatic if s.automatic != "Automatic" else "own grid" if s.takes_schedules else "own grid only"
        out.print(f"{s.name:<19} {automatic:<15} {', '.join(s.aliases)}", highlight=False)
        if s.alias_of:
            out.print(f"{'':<19} runs as {s.alias_of}: {s.note}", highlight=False)
    out.print("\nAutomatic: the schedule type a sampler takes when none is given; 'own grid': its scheduler's "
              "timesteps (other schedule types apply too); 'own grid only': no other schedule type applies.",
              highlight=False)
    labels = ", ".join(f"{t.label} ({t.name})" for t in SCHEDULE_TYPES.values())
    out.print(f"schedule types: {labels}", highlight=False)
    out.print("A schedule type may end a sampler name: 'DPM++ 2M Karras' is DPM++ 2M on Karras.", highlight=False)


def models() -> None:
    """List the built-in models and the default hub model."""
    from sdart.models.resolve import builtin_models
    from sdart.settings import DEFAULT_MODEL

    for name in builtin_models():
        out.print(f"builtin:{name}", highlight=False)
    out.print(f"{DEFAULT_MODEL}  (default)", highlight=False)



def version() -> None:
    """Print the sdart version."""
    from sdart.version import __version__

    print(__version__)
