"""The claims' verdicts on results made here, where each claim is known to hold or fail:
the rules of thermocg.report.claims, number by number."""

from __future__ import annotations

import numpy as np
import pytest

from thermocg.io.records import Estimate, Measures, Results, TemperatureResults
from thermocg.report.claims import NO, NOT_TESTED, YES, assess

TEMPS = (250.0, 300.0, 400.0, 500.0, 600.0, 700.0)


def _results(iae, excess, ratio, d_cg, d_fg, seeds=(1, 2)):
    """Results for trf2, em, fm (``seeds`` each) with the given per-group, per-temperature numbers;
    every seed gets the same value plus a small alternating offset (so the spread is known)."""
    models, groups, seed_of, variants = [], {}, {}, {}
    for g in ("trf2", "em", "fm"):
        for s in seeds:
            m = f"{g}-seed{s}"
            models.append(m)
            groups[m], seed_of[m], variants[m] = g, s, g
    by_t = {}
    for i, t in enumerate(TEMPS):
        ms = {}
        for m in models:
            g, k = groups[m], (-1) ** seed_of[m] * 0.001
            ms[m] = Measures(rdf_iae=Estimate(iae[g][i] + k, 0.01), adf_iae=Estimate(iae[g][i] / 2 + k, 0.01),
                             force_mse_excess=excess[g][i] + k,
                             D_A2_per_ps=Estimate(d_cg[i] * (1 + k), 0.01) if g == "trf2" else None,
                             D_ratio_CG_over_FG=Estimate(ratio[i] * (1 + k), 0.05) if g == "trf2" else None)
        by_t[t] = TemperatureResults(t, Measures(D_A2_per_ps=Estimate(d_fg[i], 0.005)), ms)
    return Results(TEMPS, tuple(models), 300.0, {m: (300.0,) for m in models}, by_t, variants, (), groups, seed_of)


GOOD = dict(iae={"trf2": [0.1, 0.05, 0.1, 0.12, 0.15, 0.2], "em": [0.15, 0.05, 0.15, 0.2, 0.25, 0.3],
                 "fm": [0.3, 0.05, 0.3, 0.4, 0.5, 0.6]},
            excess={"trf2": [0.1, 0.0, 0.1, 0.2, 0.4, 0.6], "em": [0.2] * 6, "fm": [0.2, 0.0, 0.3, 0.8, 1.5, 2.5]},
            ratio=[8.0 - 0.01 * (t - 250) for t in TEMPS],  # linear in T: smooth
            d_cg=[1.0 + 0.01 * (t - 250) for t in TEMPS], d_fg=[0.1 + 0.002 * (t - 250) for t in TEMPS])


def test_every_claim_holds_where_the_numbers_say_so():
    claims = {c.number: c for c in assess(_results(**GOOD))}
    assert [claims[k].verdict for k in (1, 2, 3)] == [YES, YES, YES]
    assert claims[4].verdict == NOT_TESTED and claims[5].verdict == NOT_TESTED
    # the evidence carries the numbers: RDF IAE at 250 K of trf2 (mean of 0.099 and 0.101) and fm
    assert any("RDF IAE at 250 K: trf2 0.1 ± 0.001 (2 seeds), fm 0.3 ± 0.001 (2 seeds)" in e
               for e in claims[1].evidence), claims[1].evidence
    assert claims[3].data["chi2_per_dof"] == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("broken, claim", [
    # claim 1: at 600 K trf2's RDF IAE is 0.26 > half of fm's 0.5
    ({"iae": {**GOOD["iae"], "trf2": [0.1, 0.05, 0.1, 0.12, 0.26, 0.2]}}, 1),
    # claim 1: trf2 worse than em on average
    ({"iae": {**GOOD["iae"], "em": [0.05, 0.05, 0.05, 0.05, 0.05, 0.05]}}, 1),
    # claim 2: trf2's excess above fm's at 250 K
    ({"excess": {**GOOD["excess"], "trf2": [0.3, 0.0, 0.1, 0.2, 0.4, 0.6]}}, 2),
    # claim 3: a jump of the ratio at 500 K far beyond its error: not smooth
    ({"ratio": [8.0, 7.5, 6.5, 12.0, 4.5, 3.5]}, 3),
    # claim 3: CG D drops at 600 K by far more than twice its error
    ({"d_cg": [1.0, 1.5, 2.5, 3.5, 2.0, 5.5]}, 3),
])
def test_a_claim_fails_when_one_number_breaks_it(broken, claim):
    claims = {c.number: c for c in assess(_results(**{**GOOD, **broken}))}
    assert claims[claim].verdict == NO
    assert all(claims[k].verdict == YES for k in (1, 2, 3) if k != claim)


def test_a_claim_without_its_numbers_is_not_tested():
    res = _results(**GOOD)
    no_em = Results(res.temperatures_K, tuple(m for m in res.models if not m.startswith("em")), res.T0_K,
                    res.training_temperatures_K,
                    {t: TemperatureResults(t, e.reference, {m: v for m, v in e.models.items() if not m.startswith("em")})
                     for t, e in res.by_temperature.items()},
                    {m: v for m, v in res.variants.items() if v != "em"}, (), res.groups, res.seeds)
    claims = {c.number: c for c in assess(no_em)}
    assert claims[1].verdict == NOT_TESTED and "em" in claims[1].evidence[0]
    assert claims[2].verdict == YES
    assert np.isfinite(claims[3].data["chi2_per_dof"])


def test_the_reference_D_is_evidence_not_part_of_claim_3():
    """An all-atom D(T) that does not rise is printed with claim 3 but tests the reference
    (claim 5), not the CG model."""
    claims = {c.number: c for c in assess(_results(**{**GOOD, "d_fg": [0.1, 0.3, 0.2, 0.5, 0.1, 0.7]}))}
    assert claims[3].verdict == YES
    assert any("D_FG all-atom" in e and "does not rise" in e for e in claims[3].evidence)
