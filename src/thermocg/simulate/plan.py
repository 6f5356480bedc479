"""Which systems the simulate stage runs: every model at its temperatures (fm-each at its own,
further seeds where asked), a seed per system, and the all-atom frame each starts from."""

from __future__ import annotations

import hashlib

from thermocg.config import Config
from thermocg.errors import ConfigError
from thermocg.io.records import ReferenceRun, TrainedModels



def simulation_jobs(config: Config, models: TrainedModels) -> dict[str, tuple[float, ...]]:
    """Model name -> temperatures to simulate it at (``models``: the train stage's record)."""
    s = config.simulate
    temps = tuple(s.temperatures_K or config.reference.temperatures_K)
    if s.models:
        unknown = [m for m in s.models if m not in models.names]
        if unknown:
            raise ConfigError(f"simulate.models: {unknown} are not models of this config's train stage "
                              f"(available: {sorted(models.names)})")
        return {m: temps for m in s.models}
    first_seed = {}
    for m in models.models:
        first_seed.setdefault(m.group, m.seed)
    jobs = {}
    for m in models.models:
        mine = temps
        if m.single_temperature:  # fm-each: at its own temperature only
            mine = tuple(t for t in mine if t in m.training_temperatures_K)
        if s.seed_temperatures_K and m.seed != first_seed[m.group]:  # further seeds: only where asked
            mine = tuple(t for t in mine if any(abs(t - u) < 1e-9 for u in s.seed_temperatures_K))
        if mine:
            jobs[m.name] = mine
    return jobs


def system_seed(seed: int, model: str, temperature_K: float, replica: int) -> int:
    """A seed per (model, temperature, replica), stable across runs and batch layouts."""
    text = f"{seed}:{model}:{temperature_K!r}:{replica}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def start_frame(reference: ReferenceRun, temperature_K: float):
    """The last reference frame at the reference temperature nearest ``temperature_K``, mapped to
    beads (:class:`thermocg.mapping.CGFrames`: its positions, box, bead masses and types)."""
    nearest = min(reference.temperatures_K, key=lambda t: abs(t - temperature_K))
    return reference.cg_frames(nearest)
