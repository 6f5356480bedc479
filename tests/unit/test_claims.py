"""The claims' verdicts on results made here, where each claim is known to hold or fail:
the rules of thermocg.report.claims, number by number."""

from __future__ import annotations

import numpy as np
import pytest

from thermocg.io.results import Estimate, Measures, Results, TemperatureResults
from thermocg.report.claims import NO, NOT_TESTED, YES, assess

TEMPS = (250.0, 300.0, 400.0, 500.0, 600.0, 700.0)


def _results(iae, excess, ratio, d_cg, d_fg, seeds=(1, 2), ratio_error=None, floor=None):
    """Results for trf2, em, fm (``seeds`` each) with the given per-group, per-temperature numbers;
    every seed gets the same value plus a small alternating offset (so the spread is known).
    ``ratio_error``: the within-run error of D_CG/D_FG per temperature (default 0.05); ``floor``:
    the RDF IAE's noise floor of every model (default: none measured)."""
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
                             force_mse_excess=excess[g][i] + k, rdf_iae_floor=floor,
                             D_A2_per_ps=Estimate(d_cg[i] * (1 + k), 0.01) if g == "trf2" else None,
                             D_ratio_CG_over_FG=Estimate(ratio[i] * (1 + k), 0.05 if ratio_error is None
                                                         else ratio_error[i]) if g == "trf2" else None)
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


def test_the_noise_floor_is_printed_beside_claim_1_and_changes_no_verdict():
    """Issue 29: with the IAE's noise floor measured, claim 1's evidence says how many floors fm's
    IAE is (the study's sizing rule asks 4) and trf2/fm above the floor; the verdict is the rule's."""
    claims = {c.number: c for c in assess(_results(**GOOD, floor=0.05))}
    assert [claims[k].verdict for k in (1, 2, 3)] == [YES, YES, YES]
    # 250 K: fm 0.3 = 6.0 floors; above the floor trf2/fm = (0.1 - 0.05) / (0.3 - 0.05) = 0.2
    line = next(e for e in claims[1].evidence if "noise floor" in e)
    assert "not part of the rule" in line and "fm's IAE is 6.0 floors" in line and "trf2/fm = 0.20" in line, line
    assert claims[1].data["rdf_iae_floor"]["fm"][0] == pytest.approx(0.05)
    assert claims[1].data["adf_iae_floor"]["fm"] == [None] * len(TEMPS)  # not measured: no line, no number
    assert not any("noise floor" in e for e in {c.number: c for c in assess(_results(**GOOD))}[1].evidence)


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


def _convergence(excess_by_frames, excess_by_radius, sem=0.02):
    """A bench/convergence.py summary: trf2 at frame counts (r_e 6.5) and radii (100 frames), each
    with the excess given per temperature of TEMPS (T0 = 300 K) and the same s.e. everywhere."""
    def entry(n, r, excess):
        return {"variant": "trf2", "frames": n, "r_e_A": r, "seeds": [1, 2, 3], "by_temperature": {
            str(t): {"excess_mean": e, "excess_sem": sem, "a_star_mean": 0.9, "n_seeds": 3}
            for t, e in zip(TEMPS, excess)}}
    out = {f"trf2 n={n} r_e=6.5": entry(n, 6.5, e) for n, e in excess_by_frames.items()}
    out.update({f"trf2 n=100 r_e={r:g}": entry(100, r, e) for r, e in excess_by_radius.items()})
    out["fm n=100"] = {**entry(100, None, [9.0] * 6), "variant": "fm"}  # not trf2: ignored
    return out


CONVERGED = dict(
    excess_by_frames={25: [2.0, 0, 2.0, 4.0, 8.0, 12.0], 50: [1.0, 0, 1.0, 2.0, 4.0, 6.0],
                      100: [0.5, 0, 0.5, 1.0, 2.0, 3.0], 200: [0.45, 0, 0.48, 0.95, 2.1, 3.2]},
    excess_by_radius={5.5: [0.52, 0, 0.5, 1.05, 1.9, 2.9], 7.5: [0.5, 0, 0.55, 1.0, 2.1, 3.1]})


def test_claim4_holds_when_the_last_doubling_and_the_radii_change_nothing():
    # 100 -> 200 frames moves every excess by <= 10 % (or within 2 s.e.); so do the radii
    claim = {c.number: c for c in assess(_results(**GOOD), _convergence(**CONVERGED))}[4]
    assert claim.verdict == YES, claim.evidence
    assert claim.data["frames"]["moved"] == [False] * 5


@pytest.mark.parametrize("broken", [
    # 200 frames halve the excess at 600 K: 2.0 -> 1.0, far beyond 2 s.e. (0.057) and 10 %
    {"excess_by_frames": {**CONVERGED["excess_by_frames"], 200: [0.45, 0, 0.48, 0.95, 1.0, 3.2]}},
    # r_e = 7.5 A moves the 700 K excess from 3.0 to 4.0
    {"excess_by_radius": {**CONVERGED["excess_by_radius"], 7.5: [0.5, 0, 0.55, 1.0, 2.1, 4.0]}},
])
def test_claim4_fails_when_more_data_or_another_radius_moves_the_error(broken):
    claim = {c.number: c for c in assess(_results(**GOOD), _convergence(**{**CONVERGED, **broken}))}[4]
    assert claim.verdict == NO, claim.evidence


def test_claim4_change_within_twice_its_error_is_converged():
    # at 250 K: 0.5 -> 0.62 is 24 % of the value, but its s.e. is 0.2 * sqrt(2) = 0.28: within 2 s.e.
    frames = {**CONVERGED["excess_by_frames"], 200: [0.62, 0, 0.48, 0.95, 2.1, 3.2]}
    claim = {c.number: c for c in assess(_results(**GOOD), _convergence(frames, CONVERGED["excess_by_radius"],
                                                                        sem=0.2))}[4]
    assert claim.verdict == YES, claim.evidence
    tight = {c.number: c for c in assess(_results(**GOOD), _convergence(frames, CONVERGED["excess_by_radius"],
                                                                        sem=0.02))}[4]
    assert tight.verdict == NO and tight.data["frames"]["moved"][0]


def _check(d0, d0_err, eta, eta_err):
    """A bench/reference_check.py output with a Yeh-Hummer fit of D0 and eta (1e-9 m²/s, mPa s)."""
    pub = {"D0_1e-9_m2_s": (2.97, 0.05), "eta_mPa_s_from_D(L)": (0.64, 0.02), "sources": {"D0_1e-9_m2_s": "x"}}
    z_d = (d0 - 2.97) / np.hypot(d0_err, 0.05)
    z_eta = (eta - 0.64) / np.hypot(eta_err, 0.02)
    return {"published": pub, "sizes": [{"n_molecules": 216, "D_A2_per_ps": 0.25, "D_error": 0.01}],
            "yeh_hummer_fit": {"D0_A2_per_ps": d0 / 10, "D0_error": d0_err / 10, "eta_mPa_s": eta,
                               "eta_error": eta_err, "D0_sigma_from_published": z_d,
                               "eta_sigma_from_published": z_eta}}


@pytest.mark.parametrize("check, verdict", [
    (None, NOT_TESTED),
    # D0 and eta within their errors of the published values: consistent, but D(T) and g(r) untested
    (_check(2.9, 0.1, 0.66, 0.05), NOT_TESTED),
    # D0 four combined standard errors low (2.5 vs 2.97, s.e. 0.112): the reference is off
    (_check(2.5, 0.1, 0.66, 0.05), NO),
    # the viscosity 0.9 +- 0.05 against 0.64 +- 0.02: 4.8 sigma
    (_check(2.95, 0.1, 0.90, 0.05), NO),
])
def test_claim5_fails_only_on_a_clear_disagreement(check, verdict):
    claim = {c.number: c for c in assess(_results(**GOOD), None, check)}[5]
    assert claim.verdict == verdict, claim.evidence


def test_claim5_reads_the_published_D_of_every_temperature():
    """D(T) inside the published range, or within 3 of its errors: the claim stays untested (no
    published g(r)); 3.5 errors outside at one temperature: the reference is off."""
    def row(t, d, low, high, err=0.2):
        outside = max(low - d, d - high, 0.0)
        return {"temperature_K": t, "D_1e-9_m2_s": d, "D_error": err, "published_low": low, "published_high": high,
                "sigma_outside": outside / err, "published": [{"source": "Somebody et al. (2001)"}]}

    check = _check(2.9, 0.1, 0.66, 0.05)
    check["published_D_T"] = [row(300.0, 2.1, 1.96, 2.48), row(500.0, 15.0, 14.2, 14.2, err=1.4)]
    claim = {c.number: c for c in assess(_results(**GOOD), None, check)}[5]
    assert claim.verdict == NOT_TESTED
    assert any("at 2 temperatures" in e and "500 K: 15 ± 1.4 vs 14.2-14.2 (0.6 sigma outside)" in e
               for e in claim.evidence), claim.evidence
    check["published_D_T"][1] = row(500.0, 15.0, 14.2, 14.2, err=0.2)  # 4 sigma outside
    assert {c.number: c for c in assess(_results(**GOOD), None, check)}[5].verdict == NO


def test_claim3_unknown_ratio_errors_are_relative_not_borrowed_from_the_low_T_end():
    """One seed and one NVE segment leave the ratio's error unknown (NaN). It must take the known
    errors' relative size (8 % here): the ratio falls from 15 to 1.5, and the known 1.2 at
    250 K applied as it is (the rule before) would hide a jump of 2.5 at 600 K (chi² 0.9)."""
    nan = float("nan")
    smooth = [15.0 - 0.03 * (t - 250) for t in TEMPS]  # 15 ... 4.5, 1.5: linear in T
    errors = [0.08 * smooth[0], 0.08 * smooth[1], nan, nan, nan, nan]
    claim = {c.number: c for c in assess(_results(**{**GOOD, "ratio": smooth}, seeds=(1,), ratio_error=errors))}[3]
    assert claim.verdict == YES, claim.evidence
    assert claim.data["ratio_error"][2:] == pytest.approx([0.08 * r for r in smooth[2:]], rel=1e-3)
    assert claim.data["ratio_error_known"] == [True, True, False, False, False, False]
    assert any("4 of 6 errors unknown" in e and "8%" in e for e in claim.evidence), claim.evidence
    jump = [r + (2.5 if t == 600.0 else 0.0) for r, t in zip(smooth, TEMPS)]
    claim = {c.number: c for c in assess(_results(**{**GOOD, "ratio": jump}, seeds=(1,), ratio_error=errors))}[3]
    assert claim.verdict == NO, claim.evidence


def test_claim3_prints_the_arrhenius_form_without_judging_by_it():
    """ln(ratio) = a + b/T exactly: chi² 0 in that form, printed as evidence; the verdict stays
    with the quadratic rule (fixed before the run)."""
    arrhenius = [2.0 * np.exp(1500.0 / t - 1500.0 / 700.0) for t in TEMPS]  # 16.3 at 250 K ... 2 at 700 K
    claim = {c.number: c for c in assess(_results(**{**GOOD, "ratio": arrhenius}, seeds=(1,),
                                                  ratio_error=[0.05 * r for r in arrhenius]))}[3]
    assert claim.data["chi2_per_dof_arrhenius"] == pytest.approx(0.0, abs=1e-6)
    assert claim.data["chi2_per_dof"] > 3.0 and claim.verdict == NO
    assert any("Arrhenius" in e for e in claim.evidence)


def test_the_exact_mean_force_scores_reach_the_report(tmp_path):
    """Issue 29: bench/restrained_response.py's output in the run directory becomes the report's
    "against the exact mean force" table and summary.json's exact_mean_force, numbers unchanged;
    a file of another shape is refused with its path."""
    import json

    from thermocg.config import config_from_dict
    from thermocg.errors import DataFormatError
    from thermocg.report.markdown import exact_lines
    from thermocg.report.provenance import exact_response

    config = config_from_dict({"run": {"directory": str(tmp_path)}})
    assert exact_response(config) is None and exact_lines(None) == []
    out = {"T0_K": 300.0, "frames_at_K": 300.0, "frames": [100, 101, 102], "commit": "abc",
           "models": {"w0-mapped/fm": {"mean_sem": {"T0_mse": [5.1, 0.2],
                                                    "250": {"mse_beyond_noise": [5.6, 0.3], "a_star": [None, None]},
                                                    "700": {"mse_beyond_noise": [7.0, None]}}},
                      "w0-restrained/fm": {"mean_sem": {"T0_mse": [2.5, 0.1], "250": {"mse_beyond_noise": [3.0, 0.1]},
                                                        "700": {"mse_beyond_noise": [None, None]}}}}}
    (tmp_path / "exact_response.json").write_text(json.dumps(out))
    exact = exact_response(config)
    assert exact["models"]["w0-restrained/fm"] == {"T0": [2.5, 0.1], "250": [3.0, 0.1], "700": [None, None]}
    assert exact["configurations"] == 3
    lines = exact_lines(exact)
    assert "| model | T0 | 250 K | 700 K |" in lines
    assert "| w0-mapped/fm | 5.1 ± 0.2 | 5.6 ± 0.3 | 7 |" in lines
    assert "| w0-restrained/fm | 2.5 ± 0.1 | 3 ± 0.1 | n/a |" in lines
    (tmp_path / "exact_response.json").write_text(json.dumps({"models": {"x": {}}}))
    with pytest.raises(DataFormatError, match="exact_response.json: not an output of bench/restrained_response.py"):
        exact_response(config)
