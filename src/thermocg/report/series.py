"""What the report's figures and tables show: series of model groups (a model trained with
several seeds is one group; the fm-each groups one series) and their points over temperature.
Used by the HTML page, its figures and the markdown alike."""

from __future__ import annotations

from thermocg.io.results import Results, SeedStatistics


def series(res: Results) -> dict[str, list[str]]:
    """What the figures and tables show: label -> model groups. A model trained with several
    seeds is one group (its mean over seeds); the fm-each groups form one series, "fm-each",
    each at its own temperature."""
    out: dict[str, list[str]] = {}
    for g in res.group_names:
        single = res.variants.get(res.members(g)[0]) == "fm-each"
        out.setdefault("fm-each" if single else g, []).append(g)
    return out


def points(res: Results, label: str, groups: list[str], measure: str) -> list[tuple[float, SeedStatistics]]:
    """(temperature, statistics over seeds) of ``measure`` for one series (fm-each: each group at
    its own temperature only)."""
    pts = []
    for t in res.by_temperature:
        for g in groups:
            own = res.training_temperatures_K.get(res.members(g)[0], ())
            if label == "fm-each" and not any(abs(t - u) < 1e-9 for u in own):
                continue
            st = res.over_seeds(g, t, measure)
            if st is not None:
                pts.append((t, st))
    return pts


def trained_at(res: Results, groups: list[str]) -> set[float]:
    """The temperatures the groups of one series were trained at."""
    return {t for g in groups for t in res.training_temperatures_K.get(res.members(g)[0], ())}
