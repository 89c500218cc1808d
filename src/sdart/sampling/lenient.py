"""A1111's leniency for its API: every (sampler, schedule type) pair resolves to one that runs, with a note for each
substitution, as A1111's `get_sampler_and_scheduler` (modules/sd_samplers.py) falls back instead of failing.

Only the /sdapi/v1 front end uses this; the native API, the CLI and batch refuse bad names with errors naming
the field (`GenerationRequest`).
"""

from __future__ import annotations

from sdart.sampling.samplers import (
    AUTOMATIC,
    DEFAULT_SAMPLER,
    Sampler,
    find_sampler,
    find_schedule_type,
    parse_sampler_name,
    split_schedule_suffix,
)


def resolve_a1111(sampler_name: str | None, scheduler: str | None) -> tuple[Sampler, str, list[str]]:
    """(sampler, schedule type label, notes) for an A1111 request's `sampler_name` and `scheduler`.

    As A1111 1.10: a schedule type at the end of the name ("DPM++ 2M Karras") is the schedule and wins over
    `scheduler`; an unknown sampler becomes A1111's default (DPM++ 2M), an unknown schedule type Automatic. sdart
    adds: a sampler with only its own timestep grid (PLMS) runs on Automatic, and an alias says what it runs as.
    Names are matched ignoring case and underscores, aliases included (A1111 matches exact names only)."""
    notes: list[str] = []
    schedule = AUTOMATIC
    if scheduler:
        try:
            schedule = find_schedule_type(scheduler)
        except ValueError:
            notes.append(f"scheduler: unknown schedule type {scheduler!r}, used Automatic (as A1111 does)")
    name = sampler_name or DEFAULT_SAMPLER
    try:
        sampler, implied = parse_sampler_name(name)
    except ValueError:
        base, implied = split_schedule_suffix(name)  # A1111 keeps the suffix's schedule even for an unknown name
        sampler = find_sampler(DEFAULT_SAMPLER)
        notes.append(f"sampler_name: unknown sampler {base!r}, used {sampler.name} (A1111's default)")
    if implied is not None:
        if schedule not in (AUTOMATIC, implied):
            notes.append(f"scheduler: {schedule} replaced by {implied}, the schedule type named in sampler_name "
                         f"{name!r} (as A1111 does)")
        schedule = implied
    if schedule != AUTOMATIC and not sampler.takes_schedules:
        notes.append(f"scheduler: {sampler.name} steps on its model's own timestep grid; schedule type {schedule} "
                     f"not applied (A1111 ignores it too)")
        schedule = AUTOMATIC
    if sampler.alias_of:
        notes.append(f"sampler_name: {sampler.name} ran as {sampler.alias_of}: {sampler.note}")
    return sampler, schedule, notes
